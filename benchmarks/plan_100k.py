"""Planning and registering a 100,000-job Sobol batch: the inbox sensor's steps, timed one by
one (load and validate the spec, sample and validate every job, write the manifest, add the
batch and shard partitions to a real, temporary, SQLite Dagster instance).

    uv run python benchmarks/plan_100k.py [--jobs 100000] [--shard-size 64]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

from assets_defs.batches import batches, shards
from vario.batch.plan import plan
from vario.batch.spec import load_spec
from vario.store.layout import DataStore

TARGET_S = 5.0  # issue 10: a 100,000-job batch plans and registers in under 5 s


def _spec(jobs: int, shard_size: int) -> dict:
    return {
        "name": "big",
        "generator": "tabletop",
        "seed": 1,
        "shard_size": shard_size,
        "sampler": {
            "kind": "sobol",
            "count": jobs,
            "ranges": {
                "n_objects": [1, 12],
                "light_azimuth": [0, 360],
                "fov": [30, 70],
                "table_texture": {"choices": ["wood", "grid", "checker", "plain"]},
            },
        },
    }


def _peak_mib() -> float:
    """The process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--shard-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        store = DataStore(Path(tmp))
        path = Path(tmp) / "big.yaml"
        path.write_text(yaml.safe_dump(_spec(args.jobs, args.shard_size)))
        started = time.perf_counter()
        batch = plan(load_spec(path))
        planned = time.perf_counter()
        store.save_plan(batch)
        written = time.perf_counter()
        instance.add_dynamic_partitions(batches.name, [batch.spec.name])
        instance.add_dynamic_partitions(shards.name, batch.shards)
        registered = time.perf_counter()
        shard_count = len(instance.get_dynamic_partitions(shards.name))
        manifest_mib = store.manifest_path(batch.spec.name).stat().st_size / 2**20
    total = registered - started
    print(f"{batch.job_count} jobs, {shard_count} shards of {args.shard_size}")
    print(f"  validate + plan:        {planned - started:5.2f} s")
    print(f"  manifest write:         {written - planned:5.2f} s  ({manifest_mib:.1f} MiB)")
    print(f"  partition registration: {registered - written:5.2f} s")
    print(f"  total:                  {total:5.2f} s  ({args.jobs / total:,.0f} jobs/s)")
    verdict = "meets the target" if total < TARGET_S else "MISSES the target"
    print(f"  ratio: {total / TARGET_S:.2f} x the {TARGET_S:.0f} s target: {verdict}")
    print(f"  peak memory: {_peak_mib():.0f} MiB (max RSS)")


if __name__ == "__main__":
    main()
