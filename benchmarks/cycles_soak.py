"""Cycles jobs from the command line, one after another: every ``vario run`` must exit 0
with a complete archive (issue 11: a finished job once exited 134 in about 1 of 4 runs).

    uv run python benchmarks/cycles_soak.py [--runs 50]

Prints each failure as it happens, then the count of clean runs, their wall times and the
peak memory of the largest ``vario run`` process.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from generators.labels.archive import is_complete

TINY = ["renderer=cycles", "resolution=64", "samples=8", "n_frames=2", "n_objects=3"]


def _run(out: Path, seed: int) -> tuple[subprocess.CompletedProcess, float]:
    args = [arg for setting in TINY for arg in ("--set", setting)]
    command = [sys.executable, "-m", "dagster_project.cli", "run", "falling_objects", *args]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--seed", str(seed), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    clean, seconds = 0, []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.runs):
            done, wall = _run(Path(tmp), seed)
            seconds.append(wall)
            archive = Path(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
            if done.returncode == 0 and archive is not None and is_complete(archive):
                clean += 1
            else:
                tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                print(f"run {seed}: exit {done.returncode}, archive {archive}: {tail}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{clean} of {args.runs} Cycles runs exited 0 with a complete archive")
    print(
        f"wall per run: median {statistics.median(seconds):.1f} s, max {max(seconds):.1f} s; "
        f"peak memory of the largest vario run process {peak:,.0f} MiB"
    )
    sys.exit(0 if clean == args.runs else 1)


if __name__ == "__main__":
    main()
