"""A 512-job tiny-renderer batch through Dagster versus the same jobs in a bare loop with the
same worker parallelism, in the same run.

Through Dagster: the spec goes through the inbox sensor (validation, planning, partitions),
then each shard's run executes in process on a real (temporary, SQLite) instance: the shard's
jobs in a pool of worker processes, its archives checked, its label tables assembled and
written. The bare loop: a pool of the same size calling ``Generator.run`` for every job.

    uv run python benchmarks/batch_vs_bare_loop.py [--jobs 512] [--shard-size 256] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

from generators.contract import registry
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.run.shard import worker_pool

TARGET = 1.15


def _bare_job(params_json: str, seed: int, out: str) -> None:
    gen = registry.get("tabletop")
    gen.run(gen.Params.model_validate_json(params_json), seed, Path(out))


def bare_loop(spec: dict, workers: int, out: Path) -> float:
    manifest = plan(BatchSpec.model_validate(spec)).manifest.to_pylist()
    started = time.perf_counter()
    with worker_pool(workers) as pool:  # the shard runner's own pool: same workers, same start
        list(
            pool.map(
                _bare_job,
                [r["params_json"] for r in manifest],
                [r["seed"] for r in manifest],
                [str(out)] * len(manifest),
            )
        )
    return time.perf_counter() - started


def through_dagster(spec: dict, root: Path) -> float:
    os.environ["VARIO_DATA_DIR"] = str(root)
    from dagster_project.definitions import defs
    from dagster_project.resources import storage
    from dagster_project.sensors import inbox_sensor
    from vario.store.layout import DataStore

    started = time.perf_counter()
    store = DataStore(root)
    store.inbox.mkdir(parents=True, exist_ok=True)
    (store.inbox / "bench.yaml").write_text(yaml.safe_dump(spec))
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources={"storage": storage()}) as ctx:
            result = inbox_sensor(ctx)
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        for request in result.run_requests:
            outcome = defs.get_job_def(request.job_name).execute_in_process(
                instance=instance, partition_key=request.partition_key
            )
            assert outcome.success
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    os.environ["VARIO_WORKERS"] = str(args.workers)
    spec = {
        "name": "bench",
        "generator": "tabletop",
        "seed": 1,
        "shard_size": args.shard_size,
        "sampler": {
            "kind": "random",
            "count": args.jobs,
            "ranges": {"n_objects": [1, 8], "light_azimuth": [0, 360]},
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bare_loop(
            {**spec, "sampler": {**spec["sampler"], "count": args.workers * 2}},
            args.workers,
            tmp / "warm",
        )  # warm-up: forkserver, imports, caches
        bare_s = bare_loop(spec, args.workers, tmp / "bare")
        dagster_s = through_dagster(spec, tmp / "dagster")
    print(
        f"{args.jobs} tabletop jobs (tiny, 256x256, defaults), {args.workers} workers, "
        f"shards of {args.shard_size}"
    )
    print(f"  bare loop:       {bare_s:7.1f} s  ({args.jobs / bare_s:.1f} jobs/s)")
    print(f"  through Dagster: {dagster_s:7.1f} s  ({args.jobs / dagster_s:.1f} jobs/s)")
    print(f"  ratio Dagster / bare: {dagster_s / bare_s:.3f}  (target <= {TARGET})")
    print(json.dumps({"bare_s": bare_s, "dagster_s": dagster_s}))


if __name__ == "__main__":
    main()
