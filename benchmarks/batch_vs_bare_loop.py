"""A 512-job tiny-renderer batch through Dagster versus the same jobs in a bare loop with the
same worker parallelism, in the same run.

Through Dagster: the spec goes through the inbox sensor (validation, planning, partitions),
then each shard's run executes in process on a real (temporary, SQLite) instance: the shard's
jobs in a pool of worker processes, its archives checked, its label tables assembled and
written, a preview drawn, everything published. The bare loop: a plain process pool of the
same size, started the same way (forked from the same warm forkserver), calling
``Generator.run`` for every job, with the generator looked up once per worker as the shard
runner does.

The Dagster side is timed from the sensor's evaluation, on an instance already created, and
runs between the two halves of the bare loop, so that a drift of the machine's speed during
the run weighs on both sides alike.
Shard start is from the shard step's ``STEP_START`` event to the start of its first job in a
worker (an archive's mtime less the job's ``total_seconds``), read back from what the run
left behind, so nothing is instrumented.

    uv run python benchmarks/batch_vs_bare_loop.py [--jobs 512] [--shard-size 256] [--workers 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import yaml

from generators.contract import registry
from generators.contract.generator import Generator
from generators.labels import archive as arc
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.run.pool import worker_pool
from vario.store.layout import DataStore

TARGET = 1.10
START_TARGET_S = 3.0


@functools.cache
def _tabletop() -> Generator:
    return registry.get("tabletop")


def _bare_job(params_json: str, seed: int, out: str) -> None:
    gen = _tabletop()
    gen.run(gen.Params.model_validate_json(params_json), seed, Path(out))


def bare_loop(spec: dict, workers: int, out: Path, part: slice = slice(None)) -> float:
    """Seconds to render the planned jobs in ``part`` in a plain pool."""
    manifest = plan(BatchSpec.model_validate(spec)).manifest.to_pylist()[part]
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


def shard_starts(instance: dg.DagsterInstance, run_ids: list[str], root: Path) -> list[float]:
    """Seconds from each shard step's start to its first job starting in a worker."""
    store, starts = DataStore(root), []
    for run_id in run_ids:
        (step,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
        shard = instance.get_run_by_id(run_id).tags["dagster/partition"]
        jobs = pq.read_table(store.table_path("jobs", "bench", shard)).to_pylist()
        first = min(
            (store.archive_dir("bench") / j["archive"]).stat().st_mtime - j["total_seconds"]
            for j in jobs
        )
        starts.append(first - step.timestamp)
    return starts


def through_dagster(spec: dict, root: Path) -> tuple[float, list[float]]:
    os.environ["VARIO_DATA_DIR"] = str(root)
    from dagster_project.definitions import defs
    from dagster_project.local_run import console_run_config, evaluate_sensor
    from dagster_project.sensors import inbox_sensor

    store = DataStore(root)
    store.inbox.mkdir(parents=True, exist_ok=True)
    (store.inbox / "bench.yaml").write_text(yaml.safe_dump(spec))
    with dg.instance_for_test() as instance:
        # from here on: a deployment's instance exists already, creating its schema is not
        # part of a batch
        started = time.perf_counter()
        result = evaluate_sensor(inbox_sensor, instance)
        run_ids = []
        for request in result.run_requests:  # as `vario batch run` executes them
            outcome = defs.resolve_job_def(request.job_name).execute_in_process(
                run_config=console_run_config("ERROR"),
                instance=instance,
                partition_key=request.partition_key,
            )
            assert outcome.success
            if request.job_name == "render_shard_job":
                run_ids.append(outcome.run_id)
        seconds = time.perf_counter() - started
        return seconds, shard_starts(instance, run_ids, root)


def mean_job_seconds(out: Path) -> float:
    """The jobs' own mean ``total_seconds`` in a folder of archives: when it differs between
    the two sides, the machine's load changed between them, not the overhead."""
    seconds = []
    for path in out.glob("*.zip"):
        jobs = arc.read_tables(path)["jobs"]
        seconds.append(jobs.column("total_seconds")[0].as_py())
    return sum(seconds) / len(seconds)


def peak_mib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs", type=int, default=512, help="jobs in the batch (fewer: quick runs)"
    )
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
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
        # bare, Dagster, bare (each bare half of the jobs): a machine that speeds up or slows
        # down during the run weighs on both sides alike
        half = slice(0, args.jobs // 2), slice(args.jobs // 2, None)
        bare_s = bare_loop(spec, args.workers, tmp / "bare", half[0])
        bare_mib = peak_mib()
        dagster_s, starts = through_dagster(spec, tmp / "dagster")
        bare_s += bare_loop(spec, args.workers, tmp / "bare", half[1])
        job_s = {
            "bare": mean_job_seconds(tmp / "bare"),
            "dagster": mean_job_seconds(tmp / "dagster" / "archives" / "bench"),
        }
    ratio = dagster_s / bare_s
    print(
        f"{args.jobs} tabletop jobs (tiny, 256x256, defaults), {args.workers} workers, "
        f"shards of {args.shard_size}"
    )
    print(f"  bare loop:       {bare_s:7.1f} s  ({args.jobs / bare_s:.1f} jobs/s)")
    print(f"  through Dagster: {dagster_s:7.1f} s  ({args.jobs / dagster_s:.1f} jobs/s)")
    print(f"  ratio Dagster / bare: {ratio:.3f}  (target <= {TARGET}: {_verdict(ratio <= TARGET)})")
    print(
        f"  shard start (step start to first job in a worker): "
        f"{', '.join(f'{s:.2f} s' for s in starts)}  "
        f"(target < {START_TARGET_S:.0f} s: {_verdict(max(starts) < START_TARGET_S)})"
    )
    print(
        f"  mean seconds per job, inside the job: bare {job_s['bare']:.3f} s, "
        f"Dagster {job_s['dagster']:.3f} s"
    )
    print(f"  peak memory of this process: {bare_mib:.0f} MiB after bare, {peak_mib():.0f} at end")
    print(
        json.dumps(
            {
                "bare_s": bare_s,
                "dagster_s": dagster_s,
                "ratio": ratio,
                "shard_start_s": starts,
                "mean_job_s": job_s,
            }
        )
    )


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    main()
