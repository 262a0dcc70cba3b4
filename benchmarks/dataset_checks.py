"""Time to run every dataset test over a batch of 1 million ``objects`` rows, then to record
the results and write the HTML report from them.

The batch is planned for real (40,000 tabletop jobs, Sobol over three nuisance factors) and
its tables are written in Vario's layout with synthetic label rows whose masks are real COCO
RLEs consistent with their boxes, so every check does its full work. Archives are placeholders
(``integrity.sample_jobs = 0``): opening archives scales with the sample size, not the data.

    uv run python benchmarks/dataset_checks.py [--objects 1000000]

Targets: every check within ``CHECKS_TARGET_S``, the report within ``REPORT_TARGET_S`` more.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from pycocotools import mask as mask_utils

from generators.labels import archive as arc
from generators.labels import tables
from generators.library.tabletop import TabletopParams
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.quality import checks as quality
from vario.quality.report import write_report
from vario.store.layout import DataStore

CHECKS_TARGET_S, REPORT_TARGET_S = 3.0, 1.0
FRAMES, PER_FRAME, SIZE = 5, 5, 256


def _mask_pool(rng, n=300):
    pool = []
    for _ in range(n):
        mask = np.zeros((SIZE, SIZE), np.uint8, order="F")
        x, y = rng.integers(0, SIZE - 40, 2)
        w, h = rng.integers(3, 40, 2)
        mask[y : y + h, x : x + w] = 1
        rle = mask_utils.encode(mask)
        pool.append((rle["counts"].decode(), (x, y, x + w, y + h), int(w * h)))
    return pool


def build(store: DataStore, jobs: int) -> None:
    spec = BatchSpec.model_validate(
        {
            "name": "bench",
            "generator": "tabletop",
            "seed": 1,
            "shard_size": 2500,
            "fixed": {"categories": ["duck", "cube", "mug"], "n_objects": 5},
            "sampler": {
                "kind": "sobol",
                "count": jobs,
                "ranges": {
                    "light_azimuth": [0, 360],
                    "camera_azimuth": [0, 360],
                    "table_texture": {"choices": ["wood", "checker", "grid", "uv", "plain"]},
                },
            },
        }
    )
    batch = plan(spec)
    store.save_plan(batch)
    rng = np.random.default_rng(0)
    pool = _mask_pool(rng)
    params = [
        TabletopParams.model_validate_json(p)
        for p in batch.manifest.column("params_json").to_pylist()
    ]
    out = store.archive_dir("bench")
    out.mkdir(parents=True)
    for shard in batch.shards:
        rows = batch.manifest.filter(pa.compute.equal(batch.manifest.column("shard"), shard))
        ids = rows.column("job_id").to_pylist()
        first = rows.column("job_index")[0].as_py()
        job_rows = [
            tables.jobs_row(
                params[first + i],
                batch_id="bench",
                job_id=j,
                generator="tabletop",
                generator_version="1.0.0",
                seed=0,
                status="ok",
                render_seconds=0.1,
            )
            for i, j in enumerate(ids)
        ]
        n_frames, n_objects = len(ids) * FRAMES, len(ids) * FRAMES * PER_FRAME
        frames = {
            "batch_id": ["bench"] * n_frames,
            "job_id": np.repeat(ids, FRAMES),
            "frame": np.tile(np.arange(FRAMES), len(ids)),
            "width": [SIZE] * n_frames,
            "height": [SIZE] * n_frames,
            "near": [0.01] * n_frames,
            "far": [10.0] * n_frames,
            "n_objects": [PER_FRAME] * n_frames,
        }
        picks = rng.integers(0, len(pool), n_objects)
        objects = {
            "batch_id": ["bench"] * n_objects,
            "job_id": np.repeat(ids, FRAMES * PER_FRAME),
            "frame": np.tile(np.repeat(np.arange(FRAMES), PER_FRAME), len(ids)),
            "instance_id": np.tile(np.arange(1, PER_FRAME + 1), len(ids) * FRAMES),
            "category": np.array(["duck", "cube", "mug"])[rng.integers(0, 3, n_objects)],
            "mask_rle": [pool[p][0] for p in picks],
            "box_x_min": [pool[p][1][0] for p in picks],
            "box_y_min": [pool[p][1][1] for p in picks],
            "box_x_max": [pool[p][1][2] for p in picks],
            "box_y_max": [pool[p][1][3] for p in picks],
            "visible_pixels": [pool[p][2] for p in picks],
            "occlusion": rng.beta(0.6, 2, n_objects),
            "truncation": rng.beta(0.2, 5, n_objects),
            "z": rng.uniform(0, 0.1, n_objects),
        }
        for name, data, schema in (
            ("jobs", None, tables.jobs_schema(TabletopParams)),
            ("frames", frames, tables.FRAMES),
            ("objects", objects, tables.OBJECTS),
        ):
            table = (
                pa.Table.from_pylist(job_rows, schema)
                if data is None
                else pa.table(
                    {
                        f.name: pa.array(data[f.name], f.type)
                        if f.name in data
                        else pa.nulls(len(data["job_id"]), f.type)
                        for f in schema
                    },
                    schema=schema,
                )
            )
            arc.write_atomic(store.table_path(name, "bench", shard), arc.parquet_bytes(table))
        for job_id in ids:
            (out / f"{job_id}.zip").touch()


def _meets(seconds: float, target: float) -> str:
    return f"{seconds:.2f} s (target < {target} s: {'met' if seconds < target else 'MISSED'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000, help="objects rows")
    args = parser.parse_args()
    jobs = max(1, args.objects // (FRAMES * PER_FRAME))
    with tempfile.TemporaryDirectory() as tmp:
        store = DataStore(Path(tmp))
        built = time.perf_counter()
        build(store, jobs)
        built = time.perf_counter() - built
        tests = quality.DatasetTests(integrity={"sample_jobs": 0})
        started = time.perf_counter()
        results = quality.run_checks(store, "bench", tests)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        quality.record_results(store, "bench", results)
        report = write_report(store, "bench", results)
        report_seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{jobs * FRAMES * PER_FRAME:,} objects rows, {jobs:,} jobs (built in {built:.0f} s)")
    for r in results:
        print(f"  {r.name:<11} {'pass' if r.passed else 'FAIL'}  {r.message[:90]}")
    ratio = next(r for r in results if r.name == "coverage").metadata.get("discrepancy", {})
    if ratio:
        print(f"  discrepancy ratio against iid uniform: {ratio['ratio']:.3f}")
    print(f"  all dataset checks: {_meets(seconds, CHECKS_TARGET_S)}")
    print(
        f"  record results + HTML report ({len(report.plots)} plots): "
        f"{_meets(report_seconds, REPORT_TARGET_S)}"
    )
    print(f"  peak memory (RSS): {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
