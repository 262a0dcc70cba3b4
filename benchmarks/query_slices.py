"""Latency of typical slice queries over 10 million ``objects`` rows, with DuckDB in memory
over Parquet laid out exactly as Vario writes it.

The rows are synthetic (rendering 10M objects takes hours here) but have the real schema and
layout: ``tables/<table>/batch=<batch>/<shard>.parquet``, one file per shard in job order,
zstd, through the same ``generators.dataset.connect`` views as ``vario query``.

Why it is fast:
- hive partitioning by ``batch``: a filter on ``batch`` opens only that batch's files;
- columnar Parquet: a query reads only the columns it names (masks and 3D boxes, most of
  the bytes, are never read by these slices);
- row groups carry min/max statistics, and files are in job order, so a lookup by job id
  skips row groups; categories are dictionary-encoded;
- DuckDB scans row groups in parallel on every core, with no server and no shared file.

    uv run python benchmarks/query_slices.py [--rows 10000000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from generators.labels import archive as arc
from generators.labels import tables
from generators.library.tabletop import TabletopParams
from generators.scene.catalog import OBJECT_CATEGORIES
from vario.store.layout import DataStore
from vario.store.views import connect

TARGET_MS = 100.0
BATCHES, SHARDS_PER_BATCH, FRAMES, OBJECTS_PER_FRAME = 40, 4, 5, 5
CATEGORIES = np.array([*OBJECT_CATEGORIES, "distractor"])


def _objects(rng, job_ids: np.ndarray, batch: str) -> pa.Table:
    per_job = FRAMES * OBJECTS_PER_FRAME
    n = len(job_ids) * per_job
    xyz = rng.uniform(-0.3, 0.3, (n, 3))
    half = rng.uniform(0.01, 0.06, (n, 1, 3))
    signs = np.array([[sx, sy, sz] for sz in (-1, 1) for sy in (-1, 1) for sx in (-1, 1)])
    corners = (xyz[:, None, :] + signs * half).reshape(-1)
    box3d = pa.FixedSizeListArray.from_arrays(
        pa.FixedSizeListArray.from_arrays(pa.array(corners), 3), 8
    )
    x0 = rng.integers(0, 240, n)
    y0 = rng.integers(0, 240, n)
    pool = np.array([f"{rng.integers(1e9):x}PQ{rng.integers(1e9):x}" * 3 for _ in range(500)])
    columns = {
        "batch_id": pa.array([batch] * n),
        "job_id": pa.array(np.repeat(job_ids, per_job)),
        "frame": np.tile(np.repeat(np.arange(FRAMES), OBJECTS_PER_FRAME), len(job_ids)),
        "instance_id": np.tile(np.arange(1, OBJECTS_PER_FRAME + 1), n // OBJECTS_PER_FRAME),
        "category": pa.array(CATEGORIES[rng.integers(0, len(CATEGORIES), n)]),
        "asset_id": pa.array(CATEGORIES[rng.integers(0, len(CATEGORIES), n)]),
        "box_x_min": x0,
        "box_y_min": y0,
        "box_x_max": x0 + rng.integers(2, 60, n),
        "box_y_max": y0 + rng.integers(2, 60, n),
        "box3d": box3d,
        "x": xyz[:, 0],
        "y": xyz[:, 1],
        "z": xyz[:, 2],
        **{
            c: rng.normal(size=n)
            for c in ("qw", "qx", "qy", "qz", "vx", "vy", "vz", "wx", "wy", "wz")
        },
        "visible_pixels": rng.integers(1, 4000, n),
        "occlusion": rng.beta(0.5, 3, n).astype(np.float32),
        "truncation": np.where(rng.random(n) < 0.1, rng.random(n), 0).astype(np.float32),
        "mask_rle": pa.array(pool[rng.integers(0, len(pool), n)]),
    }
    return pa.table(
        {
            f.name: pa.array(columns[f.name], f.type)
            if not isinstance(columns[f.name], pa.Array)
            else columns[f.name].cast(f.type)
            for f in tables.OBJECTS
        },
        schema=tables.OBJECTS,
    )


def _jobs(rng, job_ids: np.ndarray, batch: str) -> pa.Table:
    schema = tables.jobs_schema(TabletopParams)
    n = len(job_ids)
    data = {f.name: pa.nulls(n, f.type) for f in schema}
    data.update(
        {
            "batch_id": pa.array([batch] * n),
            "job_id": pa.array(job_ids),
            "generator": pa.array(["tabletop"] * n),
            "status": pa.array(["ok"] * n),
            "render_seconds": pa.array(rng.uniform(0.05, 0.2, n)),
            "param_light_azimuth": pa.array(rng.uniform(0, 360, n)),
            "param_n_objects": pa.array(rng.integers(1, 9, n)),
        }
    )
    return pa.table(data, schema=schema)


def build(store: DataStore, rows: int) -> list[str]:
    rng = np.random.default_rng(0)
    per_shard = rows // (BATCHES * SHARDS_PER_BATCH) // (FRAMES * OBJECTS_PER_FRAME)
    sample_jobs = []
    for b in range(BATCHES):
        batch = f"b{b:03d}"
        for s in range(SHARDS_PER_BATCH):
            shard = f"{batch}~{s:05d}"
            ids = np.array([f"{b:03d}{s:02d}{i:011x}" for i in range(per_shard)])
            arc.write_atomic(
                store.table_path("objects", batch, shard),
                arc.parquet_bytes(_objects(rng, ids, batch)),
            )
            arc.write_atomic(
                store.table_path("jobs", batch, shard), arc.parquet_bytes(_jobs(rng, ids, batch))
            )
            sample_jobs.append(ids[per_shard // 2])
    return sample_jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = DataStore(Path(tmp))
        started = time.perf_counter()
        sample_jobs = build(store, args.rows)
        built = time.perf_counter() - started
        con = connect(store)
        total = con.execute("SELECT count(*) FROM objects").fetchall()[0][0]
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*.parquet")) / 2**20
        lookup = sample_jobs[121]
        queries = [
            (
                "category counts in one batch",
                "SELECT category, count(*), avg(occlusion) FROM objects "
                "WHERE batch = 'b017' GROUP BY category",
            ),
            (
                "occluded small ducks, whole dataset",
                "SELECT count(*) FROM objects "
                "WHERE category = 'duck' AND occlusion > 0.5 AND visible_pixels < 200",
            ),
            (
                "one job's labels (lookup)",
                f"SELECT * FROM objects WHERE batch = 'b030' AND job_id = '{lookup}'",
            ),
            (
                "pixels by light azimuth bin (join jobs)",
                "SELECT floor(j.param_light_azimuth / 45) AS bin, avg(o.visible_pixels) "
                "FROM objects o JOIN jobs j USING (job_id) "
                "WHERE o.batch = 'b005' AND j.batch = 'b005' GROUP BY bin ORDER BY bin",
            ),
            (
                "most truncated objects, top 100",
                "SELECT job_id, frame, instance_id, truncation FROM objects "
                "WHERE batch IN ('b001', 'b002') ORDER BY truncation DESC LIMIT 100",
            ),
        ]
        print(
            f"{total:,} objects rows in {BATCHES} batches x {SHARDS_PER_BATCH} shards, "
            f"{size:,.0f} MiB of Parquet (built in {built:.0f} s); DuckDB in memory, "
            f"p50 of {args.repeat} runs after one warm-up"
        )
        for name, sql in queries:
            con.execute(sql).fetchall()
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                con.execute(sql).fetchall()
                times.append((time.perf_counter() - t0) * 1000)
            p50 = statistics.median(times)
            print(f"  {p50:7.1f} ms  {'ok ' if p50 < TARGET_MS else 'SLOW'} {name}")
        print(f"  (target: each under {TARGET_MS:.0f} ms)")


if __name__ == "__main__":
    main()
