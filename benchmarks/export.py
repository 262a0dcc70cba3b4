"""Training exports of 10,000 frames: COCO and Hugging Face against copying the same image
files out of the job archives (the least any export must do), measured in the same run.

    uv run python benchmarks/export.py [--frames 10000] [--formats coco,hf]

A few real jobs are rendered (256 px, 20 frames each) and their archives and label rows
repeated under new job ids until the batch holds ``--frames`` frames. Each step runs in a
fresh process, which reports its wall time (from its modules imported to its end) and peak
resident memory (its own plus its largest child's, sampled: an export copies images on a
second process). Every step starts from the same state: the step before's output deleted,
the page cache written back (``sync``) and, when run as root, emptied, so the archives are
read from disk; the steps take turns ``--repeat`` times, and the medians are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from page_cache import drop_caches

from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.run import shard as sh
from vario.store.layout import DataStore

FRAMES_PER_JOB = 20
RESOLUTION = 256  # pixels: a training image, not a thumbnail
RENDERED_JOBS = 10
TARGET = 1.5  # issue 12: an export takes at most 1.5 x the copy of its images


def _spec() -> dict:
    return {
        "name": "bench",
        "generator": "tabletop",
        "seed": 1,
        "shard_size": RENDERED_JOBS,
        "fixed": {"resolution": RESOLUTION, "n_frames": FRAMES_PER_JOB, "n_objects": 5},
        "sampler": {"kind": "random", "count": RENDERED_JOBS, "ranges": {"fov": [35, 60]}},
    }


def build(store: DataStore, frames: int) -> None:
    """Render ``RENDERED_JOBS`` jobs, then repeat them under new ids up to ``frames``."""
    planned = plan(BatchSpec.model_validate(_spec()))
    store.save_plan(planned)
    manifest = planned.manifest
    out = store.archive_dir("bench")
    outcomes = sh.run_shard("tabletop", manifest, out)
    tables = sh.shard_tables("tabletop", manifest, out, outcomes)
    copies = -(-frames // (FRAMES_PER_JOB * RENDERED_JOBS))
    job_ids = manifest.column("job_id").to_pylist()
    rows = {"job_id": [], "shard": []}
    for copy in range(copies):
        shard = f"bench~{copy:05d}"
        renamed = {j: f"{j[:12]}{copy:04x}" for j in job_ids}
        for job, new in renamed.items():
            shutil.copyfile(sh.archive_path(out, job), sh.archive_path(out, new))
            rows["job_id"].append(new)
            rows["shard"].append(shard)
        for name, table in tables.items():
            ids = pa.array([renamed[j] for j in table.column("job_id").to_pylist()], pa.string())
            moved = table.set_column(table.schema.get_field_index("job_id"), "job_id", ids)
            path = store.table_path(name, "bench", shard)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(moved, path)
    for job in job_ids:  # only the copies are the batch
        sh.archive_path(out, job).unlink()
    pq.write_table(pa.table(rows), store.manifest_path("bench"))  # what the export reads of it


def step(store: DataStore, name: str, out: Path) -> None:
    """One measured step, in this (fresh) process; prints its seconds and peak memory (its
    own and its largest child's)."""
    from vario.export.run import export_batch  # imported before the clock starts, as the
    # copy's modules are: both measure the work, not Python's start-up

    children: list[int] = []
    watch = threading.Event()
    threading.Thread(target=_watch_children, args=(children, watch), daemon=True).start()
    started = time.perf_counter()
    if name == "copy":
        out.mkdir(parents=True)
        for archive in sorted(store.archive_dir("bench").glob("*.zip")):
            with zipfile.ZipFile(archive) as z:
                for member in z.namelist():
                    if member.startswith("rgb/"):
                        target = out / f"{archive.stem}_{Path(member).name}"
                        target.write_bytes(z.read(member))
    else:
        export_batch(store, "bench", name, out)
    seconds = time.perf_counter() - started
    watch.set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + max(children, default=0)
    print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024}))


def _watch_children(peaks: list[int], stop: threading.Event) -> None:
    """The largest peak (VmHWM, KiB) of this process's children seen while they run: an
    export's copier process. (``RUSAGE_CHILDREN`` would count this process's own size at
    the fork.)"""
    me = os.getpid()
    while not stop.wait(0.05):
        for child in Path(f"/proc/{me}/task/{me}/children").read_text().split():
            try:
                status = Path(f"/proc/{child}/status").read_text().splitlines()
            except OSError:  # ended meanwhile
                continue
            peak = next((ln.split()[1] for ln in status if ln.startswith("VmHWM:")), "0")
            peaks.append(int(peak))


def _measure(root: Path, name: str) -> dict:
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)  # the step before's files
    cold = drop_caches()  # every step from the same state: its archives read from disk
    time.sleep(1)
    done = subprocess.run(
        [sys.executable, __file__, "--step", name, "--root", str(root), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "cold": cold}


def _line(label: str, runs: list[dict]) -> str:
    seconds = [r["seconds"] for r in runs]
    return (
        f"  {label:<31} {statistics.median(seconds):6.2f} s  "
        f"(runs {', '.join(f'{s:.2f}' for s in seconds)})  "
        f"peak {max(r['peak_mib'] for r in runs):5.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--formats", default="coco,hf")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        step(DataStore(args.root), args.step, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = DataStore(Path(tmp))
        started = time.perf_counter()
        build(store, args.frames)
        frames = sum(
            pq.read_metadata(p).num_rows
            for p in store.table_dir("frames", "bench").glob("*.parquet")
        )
        archives = len(list(store.archive_dir("bench").glob("*.zip")))
        print(
            f"{frames:,} frames of {RESOLUTION} px in {archives:,} job archives "
            f"(built in {time.perf_counter() - started:.0f} s); medians of {args.repeat} turns"
        )
        steps = ["copy", *args.formats.split(",")]
        runs: dict[str, list[dict]] = {name: [] for name in steps}
        for _ in range(args.repeat):
            for name in steps:
                runs[name].append(_measure(Path(tmp), name))
        cold = all(r["cold"] for rs in runs.values() for r in rs)
        print(f"  each step from {'a cold page cache' if cold else 'the page cache as it was'}")
        baseline = statistics.median(r["seconds"] for r in runs["copy"])
        print(_line("copy the RGB images (baseline)", runs["copy"]))
        for fmt in steps[1:]:
            ratio = statistics.median(r["seconds"] for r in runs[fmt]) / baseline
            verdict = "met" if ratio <= TARGET else "MISSED"
            verdict = f"ratio {ratio:.2f} (target <= {TARGET}: {verdict})"
            print(f"{_line(f'export {fmt}', runs[fmt])}  {verdict}")


if __name__ == "__main__":
    main()
