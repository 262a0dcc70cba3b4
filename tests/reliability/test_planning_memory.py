"""A million-job batch through the inbox sensor in bounded memory: planned a chunk at a time
into its manifest, its 15,625 shards registered, peak resident memory under 1 GB (the whole
process, Dagster included). Before, planning alone took 3.5 GB."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
import yaml

SENSOR = """
import sys
from pathlib import Path
import dagster as dg
from assets_defs.storage import StorageResource
from dagster_project.local_run import evaluate_sensor
from dagster_project.sensors import inbox_sensor

storage = StorageResource(root=sys.argv[1])
with dg.instance_for_test() as instance:
    result = evaluate_sensor(inbox_sensor, instance, storage)
    shards = len(instance.get_dynamic_partitions("shards"))
# this process's own peak (VmHWM starts again at exec; ru_maxrss can carry the forking
# test worker's size over)
status = Path("/proc/self/status").read_text().splitlines()
peak = int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) // 1024
print(len(result.run_requests), shards, peak)
"""


def test_a_million_job_batch_plans_and_registers_under_1_gb(tmp_path):
    spec = {
        "name": "million",
        "generator": "tabletop",
        "seed": 1,
        "shard_size": 64,
        "sampler": {
            "kind": "sobol",
            "count": 1_000_000,
            "ranges": {"n_objects": [3, 12], "fov": [30, 70], "light_azimuth": [0, 360]},
        },
    }
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "million.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        [sys.executable, "-c", SENSOR, str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    requests, shards, peak_mib = map(int, done.stdout.split())
    assert (requests, shards) == (1 + 15_625, 15_625)
    assert peak_mib < 1024, f"peak {peak_mib} MiB"
    manifest = tmp_path / "batches" / "million" / "manifest.parquet"
    assert pq.ParquetFile(manifest).metadata.num_rows == 1_000_000
