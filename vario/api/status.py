"""A batch's progress and a job's record, read from the data folder: what the API answers
about batches and jobs, with no Dagster call.

A job is done when its archive is in the batch's archives folder (archives appear whole, by
rename), failed when its failure record is there and its archive is not, pending otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow.parquet as pq

from vario.quality import checks as quality
from vario.run import shard as sh
from vario.store.layout import DataStore

JOB_STATES = ("done", "failed", "pending")
T = TypeVar("T")


@dataclass(frozen=True)
class Finished:
    """The jobs of a batch that ended, by state, and when the first and last ended."""

    done: set[str]
    failed: set[str]
    first: float | None
    last: float | None


def finished(store: DataStore, batch: str) -> Finished:
    done, failed, times = set(), set(), []
    folder = store.archive_dir(batch)
    if folder.exists():
        with os.scandir(folder) as listing:
            for entry in listing:
                if entry.name.endswith(".zip"):
                    done.add(entry.name[: -len(".zip")])
                elif entry.name.endswith(".failed.json"):
                    failed.add(entry.name[: -len(".failed.json")])
                else:
                    continue
                times.append(entry.stat().st_mtime)
    return Finished(done, failed - done, min(times, default=None), max(times, default=None))


def job_count(store: DataStore, batch: str) -> int:
    return _recorded_batch(str(store.root), batch)[1]


def generator_of(store: DataStore, batch: str) -> str:
    return _recorded_batch(str(store.root), batch)[0]


@functools.lru_cache(maxsize=1024)
def _recorded_batch(root: str, batch: str) -> tuple[str, int]:
    """A recorded batch's generator and job count, read once: a recorded batch never changes."""
    store = DataStore(Path(root))
    return store.spec(batch).generator, pq.read_metadata(store.manifest_path(batch)).num_rows


FRESH_SECONDS = 1.0
_recent: dict[tuple[str, ...], tuple[float, Any]] = {}
_recent_lock = threading.Lock()


def fresh(key: tuple[str, ...], compute: Callable[[], T]) -> T:
    """``compute()``, computed at most once per ``FRESH_SECONDS`` for ``key``: a batch polled
    hundreds of times a second lists its archives folder and reads its results once."""
    now = time.monotonic()
    with _recent_lock:
        kept = _recent.get(key)
        if kept is not None and now - kept[0] < FRESH_SECONDS:
            return kept[1]
    found = compute()
    with _recent_lock:
        _recent[key] = (now, found)
    return found


def forget(store: DataStore, batch: str) -> None:
    """Drop what ``fresh`` keeps about ``batch`` (it changed now: cancelled, say)."""
    with _recent_lock:
        for key in [k for k in _recent if k[1:] == (str(store.root), batch)]:
            del _recent[key]


def progress(store: DataStore, batch: str) -> dict[str, Any]:
    """Counts by state, the share ended, and the seconds left at the rate so far."""
    total, ended = job_count(store, batch), finished(store, batch)
    counts = {"done": len(ended.done), "failed": len(ended.failed)}
    counts["pending"] = max(total - counts["done"] - counts["failed"], 0)
    over = counts["done"] + counts["failed"]
    eta = None
    if counts["pending"] == 0:
        eta = 0.0
    elif over and ended.first is not None:
        elapsed = max(time.time() - ended.first, 1e-3)
        eta = round(counts["pending"] * elapsed / over, 1)
    return {
        "jobs": total,
        "counts": counts,
        "progress": round(over / total, 4) if total else 1.0,
        "eta_seconds": eta,
        "state": "rendered" if counts["pending"] == 0 else "running" if over else "pending",
    }


def test_results(store: DataStore, batch: str) -> list[dict[str, Any]] | None:
    results = quality.recorded_results(store, batch)
    if results is None:
        return None
    return [
        {"name": r.name, "passed": r.passed, "severity": r.severity, "message": r.message}
        for r in results
    ]


def jobs_page(
    store: DataStore, batch: str, after: int, limit: int, state: str | None
) -> tuple[list[dict[str, Any]], int | None]:
    """Jobs after job index ``after`` (in job order), at most ``limit``, of ``state`` if
    given; and the cursor of the next page (None on the last)."""
    ended = finished(store, batch)
    rows: list[dict[str, Any]] = []
    table = pq.read_table(
        store.manifest_path(batch),
        columns=["job_index", "job_id", "shard", "seed"],
        filters=[("job_index", ">", after)],
    )
    table = table.sort_by("job_index")
    for start in range(0, table.num_rows, 8192):
        for row in table.slice(start, 8192).to_pylist():
            job_state = _state(ended, row["job_id"])
            if state is None or job_state == state:
                rows.append({**row, "status": job_state})
                if len(rows) > limit:
                    return rows[:limit], rows[limit - 1]["job_index"]
    return rows, None


def _state(ended: Finished, job_id: str) -> str:
    return "done" if job_id in ended.done else "failed" if job_id in ended.failed else "pending"


def find_archive(store: DataStore, job_id: str) -> Path | None:
    """A rendered job's archive, whichever batch it is in: one look per batch folder, no
    manifest read (what a download needs, hundreds of times a second)."""
    for batch in store.batches():
        path = sh.archive_path(store.archive_dir(batch), job_id)
        if path.exists():
            return path
    return None


def find_job(store: DataStore, job_id: str) -> dict[str, Any] | None:
    """A job's manifest row (batch, index, shard, seed, parameters), whichever batch it is in."""
    manifests = store.root / "batches" / "*" / "manifest.parquet"
    if not any((store.root / "batches").glob("*/manifest.parquet")):
        return None
    con = duckdb.connect()
    relation = con.sql(
        "SELECT job_id, job_index, shard, seed, params_json, filename "
        "FROM read_parquet($glob, filename = true) WHERE job_id = $job",
        params={"glob": str(manifests), "job": job_id},
    )
    found = relation.to_arrow_table().to_pylist()
    if not found:
        return None
    row = found[0]
    batch = Path(row.pop("filename")).parent.name
    return {"batch": batch, **row, "params": json.loads(row.pop("params_json"))}


def job_record(store: DataStore, batch: str, shard: str, job_id: str) -> dict[str, Any]:
    """A job's state, and once rendered its timing; once failed, its error."""
    archive = sh.archive_path(store.archive_dir(batch), job_id)
    if archive.exists():
        timing = _timing(store, batch, shard, job_id)
        return {"status": "done", "timing": timing, "error": None}
    error = sh.recorded_error(store.archive_dir(batch), job_id)
    if error is not None:
        return {"status": "failed", "timing": None, "error": error}
    return {"status": "pending", "timing": None, "error": None}


_TIMING = ("simulate_seconds", "render_seconds", "label_seconds", "write_seconds", "total_seconds")


def _timing(store: DataStore, batch: str, shard: str, job_id: str) -> dict[str, float] | None:
    """The job's seconds per stage, from its shard's jobs table (once the shard is done)."""
    path = store.table_path("jobs", batch, shard)
    if not path.exists():
        return None
    table = pq.read_table(path, columns=["job_id", *_TIMING], filters=[("job_id", "==", job_id)])
    if not table.num_rows:
        return None
    return {k: float(v) for k, v in table.to_pylist()[0].items() if k != "job_id"}


@functools.lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def archive_sha256(path: Path) -> str:
    """An archive's SHA-256, computed once per file version (path, size and time)."""
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)
