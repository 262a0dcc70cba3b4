"""Per-job overhead of a batch of tiny Cycles jobs: warm render workers versus a fresh
worker for every job (the baseline), in the same run.

Both halves run the shard runner (``vario.run.shard.run_shard``, one pool worker, as a shard
step does) over the same kind of jobs: ``tabletop`` at 64x64, 2 frames, 8 samples. Overhead
is the batch's wall time less the render time its jobs report (``render_seconds``), per job:
Python and Blender start-up, the Kubric scene, physics, labels and archives. The baseline
sets ``VARIO_RENDER_WORKER_JOBS=1``, so each job starts, imports and ends a Blender worker,
as every Cycles job did before workers were kept warm. Peak memory is the largest resident
set of the process tree (this process, its pool and render workers), sampled every 0.1 s.

    uv run python benchmarks/cycles_batch_overhead.py [--jobs 20] [--baseline-jobs 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
from memory import PeakTreeMemory

from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.run import shard as sh

TARGET_SECONDS = 3.0
JOB = {"resolution": 64, "n_frames": 2, "samples": 8, "n_objects": 4}


def run_batch(jobs: int, jobs_per_worker: int, seed: int) -> tuple[float, float, int, list[str]]:
    """Wall seconds, summed render seconds, peak tree RSS and statuses of a fresh batch."""
    os.environ["VARIO_RENDER_WORKER_JOBS"] = str(jobs_per_worker)
    spec = {
        "name": f"overhead-{jobs_per_worker}",
        "generator": "tabletop",
        "renderer": "cycles",
        "seed": seed,
        "fixed": JOB,
        "sampler": {"kind": "random", "count": jobs, "ranges": {"light_azimuth": [0, 360]}},
    }
    manifest = plan(BatchSpec.model_validate(spec)).manifest
    with PeakTreeMemory() as peak, tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        outcomes = sh.run_shard("tabletop", manifest, Path(out), workers=1)
        wall = time.perf_counter() - started
        tables = sh.shard_tables("tabletop", manifest, Path(out), outcomes)
    render = pc.sum(tables["jobs"].column("render_seconds")).as_py() or 0.0
    return wall, render, peak.bytes, [o.status for o in outcomes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--baseline-jobs", type=int, default=5)
    args = parser.parse_args()
    rows = {}
    for name, jobs, per_worker in (
        ("fresh worker per job (baseline)", args.baseline_jobs, 1),
        ("warm workers", args.jobs, 50),
    ):
        wall, render, peak, statuses = run_batch(jobs, per_worker, seed=len(rows))
        assert statuses == ["ok"] * jobs, statuses
        overhead = (wall - render) / jobs
        rows[name] = overhead
        print(
            f"{name:<32} {jobs:>3} jobs  wall {wall:6.1f} s  render {render:5.1f} s  "
            f"overhead {overhead:5.2f} s/job  peak memory {peak / 2**20:,.0f} MiB"
        )
    baseline, warm = rows.values()
    print(f"overhead ratio warm / baseline: {warm / baseline:.3f}")
    verdict = "meets" if warm < TARGET_SECONDS else "MISSES"
    print(f"warm overhead {warm:.2f} s/job {verdict} the target of < {TARGET_SECONDS:.0f} s")


if __name__ == "__main__":
    main()
