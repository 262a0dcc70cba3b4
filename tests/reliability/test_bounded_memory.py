"""Bounded memory: exporting a batch and checking its integrity hold a chunk of rows at a
time, not the batch; and an export that fails leaves no partial file.

A batch's label tables are written straight into the data folder's layout (what its shards'
runs would leave: ``tables/<table>/batch=<batch>/<shard>.parquet``, with its spec, manifest
and placeholder archives), with masks that are real COCO RLEs consistent with their boxes,
so the integrity check decodes every row. Each step (the integrity check, the export) runs
in a fresh process that reports how far it raised its peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils

from generators.labels import tables
from generators.library.tabletop import TabletopParams
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.quality import checks as quality
from vario.store import export
from vario.store.layout import DataStore

SIZE = 256  # frame width and height
FRAMES, PER_FRAME = 20, 30  # per job: 600 objects rows
MASKS = 64  # distinct masks the rows draw from
JOBS, SHARD_JOBS = 1000, 25  # 600,000 objects rows, 15,000 a shard
# Peak RSS a step may add over 600,000 objects rows. Streamed: about 70 MiB (integrity) and
# 170 MiB (export: DuckDB's scan and a 65,536-row group); the code that read the batch
# whole added about 575 MiB and 420 MiB.
BOUND_MIB = {"integrity": 150, "export": 250}

# One step in a fresh process: how far it raises the peak RSS above the RSS it starts from.
MEASURE = """
import json, sys
from pathlib import Path

from vario.quality import checks as quality
from vario.store.export import export_batch
from vario.store.layout import DataStore

store, batch, step = DataStore(Path(sys.argv[1])), sys.argv[2], sys.argv[3]
tests = quality.DatasetTests(integrity={"sample_jobs": 0})
loaded = quality._load(store, batch, tests)


def kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # the peak so far (imports, loading) is not the step's: reset it
start = kib("VmRSS:")
if step == "integrity":
    result = quality.check_integrity(loaded, tests.integrity)
    found = {"passed": result.passed, "message": result.message}
else:
    found = {"rows": {name: e.rows for name, e in export_batch(store, batch).items()}}
print(json.dumps({"added": round((kib("VmHWM:") - start) / 1024), **found}))
"""


def _mask_pool(rng: np.random.Generator) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """``MASKS`` striped rectangles (a few runs a column, so an RLE is a few hundred
    characters, as an object's outline gives): their RLEs, boxes and pixel counts."""
    rles, boxes, areas = [], [], []
    for _ in range(MASKS):
        x, y = rng.integers(0, SIZE - 48, 2)
        w, h = rng.integers(8, 48, 2)
        mask = np.zeros((SIZE, SIZE), np.uint8, order="F")
        mask[y : y + h, x : x + w] = 1
        mask[y + 4 : y + h - 1 : 8, x : x + w] = 0  # stripes that leave the box as it is
        rles.append(mask_utils.encode(mask)["counts"].decode())
        boxes.append((x, y, x + w, y + h))
        areas.append(int(mask.sum()))
    return pa.array(rles, pa.string()), np.array(boxes, np.int32), np.array(areas, np.int64)


def _table(schema: pa.Schema, n: int, columns: dict) -> pa.Table:
    """``n`` rows of ``schema``: the given columns, nulls in the others."""
    arrays = {
        f.name: pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
        for f in schema
    }
    return pa.table(arrays, schema=schema)


def build(store: DataStore, name: str, jobs: int) -> None:
    """A planned batch of ``jobs`` tabletop jobs, written shard by shard."""
    spec = BatchSpec.model_validate(
        {
            "name": name,
            "generator": "tabletop",
            "seed": 1,
            "shard_size": SHARD_JOBS,
            "sampler": {"kind": "sobol", "count": jobs, "ranges": {"light_azimuth": [0, 360]}},
        }
    )
    planned = plan(spec)
    store.save_plan(planned)
    manifest = planned.manifest
    rng = np.random.default_rng(0)
    pool = _mask_pool(rng)
    archives = store.archive_dir(name)
    archives.mkdir(parents=True)
    for shard in planned.shards:
        rows = manifest.filter(pc.equal(manifest.column("shard"), shard))
        ids = rows.column("job_id").to_pylist()
        params = rows.column("params_json").to_pylist()
        for table, data in _shard_tables(name, ids, params, pool, rng).items():
            path = store.table_path(table, name, shard)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(data, path, compression="zstd")
        for job_id in ids:
            (archives / f"{job_id}.zip").touch()


def _shard_tables(name, ids, params, pool, rng) -> dict[str, pa.Table]:
    """A shard's jobs, frames and objects tables: columns whole arrays, not rows."""
    rles, boxes, areas = pool
    n_frames, n_objects = len(ids) * FRAMES, len(ids) * FRAMES * PER_FRAME
    jobs = [
        tables.jobs_row(
            TabletopParams.model_validate_json(p),
            batch_id=name,
            job_id=j,
            generator="tabletop",
            generator_version="1.0.0",
            seed=0,
            status="ok",
        )
        for j, p in zip(ids, params, strict=True)
    ]
    frames = {
        "batch_id": [name] * n_frames,
        "job_id": np.repeat(ids, FRAMES),
        "frame": np.tile(np.arange(FRAMES), len(ids)),
        "width": np.full(n_frames, SIZE),
        "height": np.full(n_frames, SIZE),
        "near": np.full(n_frames, 0.01),
        "far": np.full(n_frames, 10.0),
        "n_objects": np.full(n_frames, PER_FRAME),
    }
    picks = rng.integers(0, MASKS, n_objects)
    box_columns = ("box_x_min", "box_y_min", "box_x_max", "box_y_max")
    objects = {
        "batch_id": [name] * n_objects,
        "job_id": np.repeat(ids, FRAMES * PER_FRAME),
        "frame": np.tile(np.repeat(np.arange(FRAMES), PER_FRAME), len(ids)),
        "instance_id": np.tile(np.arange(1, PER_FRAME + 1), n_frames),
        "category": np.array(["duck", "cube", "mug"])[rng.integers(0, 3, n_objects)],
        "mask_rle": rles.take(picks),
        **{c: boxes[picks, i] for i, c in enumerate(box_columns)},
        "visible_pixels": areas[picks],
        **{c: rng.random(n_objects) for c in ("x", "y", "z", "occlusion", "truncation")},
    }
    return {
        "jobs": pa.Table.from_pylist(jobs, tables.jobs_schema(TabletopParams)),
        "frames": _table(tables.FRAMES, n_frames, frames),
        "objects": _table(tables.OBJECTS, n_objects, objects),
    }


def _measure(store: DataStore, batch: str, step: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(store.root), batch, step],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_integrity_and_export_hold_a_chunk_not_the_batch(tmp_path):
    store = DataStore(tmp_path / "data")
    build(store, "large", JOBS)
    objects = JOBS * FRAMES * PER_FRAME
    integrity = _measure(store, "large", "integrity")
    assert integrity["passed"], integrity["message"]  # every mask was decoded and matched
    assert integrity["message"] == f"{JOBS} jobs, {objects} objects consistent"
    assert integrity["added"] < BOUND_MIB["integrity"], integrity
    exported = _measure(store, "large", "export")
    assert exported["rows"] == {
        "jobs": JOBS,
        "frames": JOBS * FRAMES,
        "objects": objects,
        "events": 0,
    }
    assert exported["added"] < BOUND_MIB["export"], exported


@pytest.fixture
def small(tmp_path) -> DataStore:
    """A batch of 40 jobs: 24,000 objects rows."""
    store = DataStore(tmp_path / "data")
    build(store, "small", 40)
    return store


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_an_export_failing_midway_leaves_no_partial_file(small, monkeypatch):
    """The objects file fails at its second row group, its partial file half written: the
    tables before it are complete, it is not there, nor is its partial file; and a complete
    earlier export of it is kept as it was."""
    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 4096)
    folder = export.export_dir(small, "small")
    write, groups, partials = pq.ParquetWriter.write_table, [], []

    def failing(writer, table, *args, **kwargs):
        groups.append(len(table))
        if groups.count(4096) == 2:  # only the objects table has two such groups
            partials.extend(folder.glob(".objects.parquet.*.partial"))
            raise OSError(28, "No space left on device")
        return write(writer, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    with pytest.raises(OSError, match="No space left"):
        export.export_batch(small, "small")
    assert len(partials) == 1  # it was there, being written
    assert _files(folder) == ["frames.parquet", "jobs.parquet"]
    monkeypatch.setattr(pq.ParquetWriter, "write_table", write)
    complete = export.export_batch(small, "small")
    assert complete["objects"].rows == 40 * FRAMES * PER_FRAME
    before = complete["objects"].path.read_bytes()
    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    groups.clear()
    with pytest.raises(OSError, match="No space left"):
        export.export_batch(small, "small")
    assert _files(folder) == sorted(f"{t}.parquet" for t in export.TABLES)
    assert complete["objects"].path.read_bytes() == before


def test_an_export_to_a_folder_it_cannot_make_writes_nothing(small):
    blocker = small.root / "exports"
    blocker.write_text("a file where the exports folder goes")
    with pytest.raises((FileExistsError, NotADirectoryError)):
        export.export_batch(small, "small")
    assert blocker.read_text() == "a file where the exports folder goes"


def test_an_export_onto_a_full_disk_leaves_no_partial_file(small):
    """A real full disk (a 256 KiB tmpfs, smaller than the objects file): the writer's own
    error, and nothing of the objects file, whole or partial."""
    folder = export.export_dir(small, "small")
    folder.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        with pytest.raises(OSError, match="No space left"):
            export.export_batch(small, "small")
        assert "objects.parquet" not in _files(folder)
        assert not [name for name in _files(folder) if name.endswith(".partial")]
    finally:
        subprocess.run(["umount", str(folder)])


def test_integrity_counts_every_job_without_its_archive_and_lists_the_first(tmp_path):
    """Archives not fetched (60 jobs, none archived): every job is counted, the first 50 in
    manifest order are listed."""
    store = DataStore(tmp_path / "data")
    build(store, "bare", 60)
    for archive in store.archive_dir("bare").iterdir():
        archive.unlink()
    tests = quality.DatasetTests(integrity={"sample_jobs": 5})
    result = quality.check_integrity(quality._load(store, "bare", tests), tests.integrity)
    ids = pq.read_table(store.manifest_path("bare")).column("job_id").to_pylist()
    assert result.message == f"60 problems; first: job {ids[0]}: no complete archive"
    assert result.metadata["problems"] == [f"job {j}: no complete archive" for j in ids[:50]]
    assert result.metadata["archives sampled"] == 0 and result.metadata["jobs"] == 60
