"""Training exports of 10,000 frames: COCO and Hugging Face against copying the same image
files out of the job archives (the least any export must do), measured in the same run.

    uv run python benchmarks/export.py [--frames 10000] [--formats coco,hf]

A few real jobs are rendered (256 px, 20 frames each) and their archives and label rows
repeated under new job ids until the batch holds ``--frames`` frames. Each step runs in a
fresh process, which reports its wall time and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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
    """One measured step, in this (fresh) process; prints its seconds and peak memory."""
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
        from vario.export.run import export_batch

        export_batch(store, "bench", name, out)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak}))


def _measure(root: Path, name: str) -> dict:
    out = root / f"out-{name}"
    done = subprocess.run(
        [sys.executable, __file__, "--step", name, "--root", str(root), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--formats", default="coco,hf")
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
            f"(built in {time.perf_counter() - started:.0f} s)"
        )
        baseline = _measure(Path(tmp), "copy")
        print(
            f"  copy the RGB images (baseline)  {baseline['seconds']:6.2f} s  "
            f"peak {baseline['peak_mib']:5.0f} MiB"
        )
        for fmt in args.formats.split(","):
            measured = _measure(Path(tmp), fmt)
            ratio = measured["seconds"] / baseline["seconds"]
            verdict = "met" if ratio <= TARGET else "MISSED"
            print(
                f"  export {fmt:<4}                    {measured['seconds']:6.2f} s  "
                f"peak {measured['peak_mib']:5.0f} MiB  ratio {ratio:.2f} "
                f"(target <= {TARGET}: {verdict})"
            )


if __name__ == "__main__":
    main()
