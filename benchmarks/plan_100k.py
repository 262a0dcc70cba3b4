"""Planning and registering a 100,000-job batch: the inbox sensor's own work (validate the
spec, sample, validate every job, write the manifest) plus adding its batch and shard
partitions to a real (temporary, SQLite) Dagster instance.

    uv run python benchmarks/plan_100k.py [--jobs 100000] [--shard-size 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

TARGET_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--shard-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VARIO_DATA_DIR"] = tmp
        from dagster_project.resources import storage
        from dagster_project.sensors import inbox_sensor
        from vario.store.layout import DataStore

        spec = {
            "name": "big",
            "generator": "tabletop",
            "seed": 1,
            "shard_size": args.shard_size,
            "sampler": {
                "kind": "sobol",
                "count": args.jobs,
                "ranges": {
                    "n_objects": [1, 12],
                    "light_azimuth": [0, 360],
                    "fov": [30, 70],
                    "table_texture": {"choices": ["wood", "grid", "checker", "plain"]},
                },
            },
        }
        store = DataStore(Path(tmp))
        store.inbox.mkdir(parents=True)
        (store.inbox / "big.yaml").write_text(yaml.safe_dump(spec))
        with dg.instance_for_test() as instance:
            started = time.perf_counter()
            with dg.build_sensor_context(
                instance=instance, resources={"storage": storage()}
            ) as ctx:
                result = inbox_sensor(ctx)
            planned = time.perf_counter()
            for request in result.dynamic_partitions_requests:
                instance.add_dynamic_partitions(
                    request.partitions_def_name, list(request.partition_keys)
                )
            registered = time.perf_counter()
            shards = len(instance.get_dynamic_partitions("shards"))
    print(
        f"{args.jobs} jobs, {shards} shards of {args.shard_size}, "
        f"{len(result.run_requests)} run requests"
    )
    print(f"  validate + plan + manifest: {planned - started:5.2f} s")
    print(f"  register partitions:        {registered - planned:5.2f} s")
    print(f"  total: {registered - started:.2f} s  (target < {TARGET_S} s)")


if __name__ == "__main__":
    main()
