"""Running a shard of a batch: its jobs in parallel worker processes, resumable.

A job whose archive is already complete is not rendered again, so a shard killed partway
and run again does only the missing work. A job that fails leaves a ``<job_id>.failed.json``
record beside the archives instead of an archive. The shard's label tables are assembled
from archives and records in manifest order, so they come out the same however the shard
got there.
"""

from __future__ import annotations

import functools
import json
import os
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from generators.contract import registry
from generators.labels import archive as arc
from generators.labels import tables
from generators.settings import settings
from vario.run.pool import worker_pool

if TYPE_CHECKING:
    from generators.contract.generator import Generator


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: str  # "ok", "failed" or "skipped" (already complete)
    error: str | None = None
    tables: dict[str, pa.Table] | None = None  # a fresh job's label tables
    worker_pid: int | None = None  # the worker process that ran it (None when skipped)


Finish = Callable[[dict, JobOutcome], None]  # records a manifest row's outcome


def archive_path(out_dir: Path, job_id: str) -> Path:
    return Path(out_dir) / f"{job_id}.zip"


def failure_path(out_dir: Path, job_id: str) -> Path:
    return Path(out_dir) / f"{job_id}.failed.json"


@functools.cache
def _generator(name: str) -> Generator:
    """One generator instance per worker: a registry lookup reads every installed package's
    entry points, which is a few milliseconds a job for nothing."""
    return registry.get(name)


def run_one(
    generator: str, params_json: str, seed: int, out_dir: str, batch_id: str, job_id: str
) -> dict:
    """One job inside a pool worker; failures come back as values, never as exceptions.
    The worker's pid comes back too, so a caller can see which worker ran the job.
    ``job_id`` is the manifest's: a worker whose catalog gives the job another id fails it
    ("catalog changed since the batch was planned") rather than write an archive the shard
    never finds."""
    gen = _generator(generator)
    params = gen.Params.model_validate_json(params_json)
    try:
        result = gen.run(params, seed, Path(out_dir), batch_id=batch_id, planned_id=job_id)
    except Exception as exc:  # a bug or a broken asset: recorded, the shard goes on
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
        return {"status": "failed", "error": error, "worker_pid": os.getpid()}
    if result.status != "ok":
        return {"status": "failed", "error": result.error, "worker_pid": os.getpid()}
    tables = {name: getattr(result, name) for name in arc.LABEL_TABLES}
    return {"status": "ok", "tables": tables, "worker_pid": os.getpid()}


def default_workers() -> int:
    return settings().workers


def run_shard(
    generator: str,
    manifest: pa.Table,
    out_dir: Path,
    *,
    workers: int | None = None,
    on_job: Callable[[JobOutcome, int, int], None] | None = None,
    retry_failed: bool = False,
) -> list[JobOutcome]:
    """Render the manifest's jobs not yet complete; outcomes in manifest order. A job that
    failed before keeps its recorded failure (a retry of the shard would only fail it
    again, and a Cycles job costs minutes) unless ``retry_failed``.

    A worker that dies (killed, or a crash in native code) breaks its pool. The jobs that
    were in flight then each run again alone in a fresh worker: the one that dies again is a
    ``failed`` job, the others finish, and the shard goes on with a new pool."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = manifest.to_pylist()
    outcomes: dict[str, JobOutcome] = {}
    todo: deque[dict] = deque()
    for row in rows:
        job_id = row["job_id"]
        if arc.is_complete(archive_path(out_dir, job_id)):
            outcomes[job_id] = JobOutcome(job_id, "skipped")
        elif not retry_failed and (error := recorded_error(out_dir, job_id)) is not None:
            outcomes[job_id] = JobOutcome(job_id, "failed", error=error)
        else:
            todo.append(row)
    total, done = len(todo), 0

    def finish(row: dict, outcome: JobOutcome) -> None:
        nonlocal done
        _record(out_dir, outcome)
        outcomes[row["job_id"]] = outcome
        done += 1
        if on_job:
            on_job(outcome, done, total)

    size = min(workers or default_workers(), len(todo))
    while todo:
        for row in _run_pooled(generator, out_dir, todo, size, finish):
            _run_alone(generator, out_dir, row, finish)
    return [outcomes[r["job_id"]] for r in rows]


def _submit(pool: ProcessPoolExecutor, generator: str, out_dir: Path, row: dict) -> Future:
    return pool.submit(
        run_one,
        generator,
        row["params_json"],
        row["seed"],
        str(out_dir),
        row["batch_id"],
        row["job_id"],
    )


def _run_pooled(
    generator: str, out_dir: Path, todo: deque[dict], size: int, finish: Finish
) -> list[dict]:
    """Run jobs from ``todo`` with at most one per worker in flight, so that when a worker
    dies the jobs it may have been running are known. Returns those (none if no worker died,
    or if the one that died was idle); jobs not yet started stay in ``todo``."""
    suspects: list[dict] = []
    broken = False
    with worker_pool(size) as pool:
        running: dict[Future, dict] = {}
        while (todo and not broken) or running:
            while todo and not broken and len(running) < size:
                row = todo.popleft()
                try:
                    running[_submit(pool, generator, out_dir, row)] = row
                except BrokenProcessPool:
                    todo.appendleft(row)
                    broken = True
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                row = running.pop(future)
                try:
                    finish(row, JobOutcome(row["job_id"], **future.result()))
                except BrokenProcessPool:
                    suspects.append(row)
                    broken = True
    for row in suspects:  # their workers are gone: what they were writing is garbage
        for partial in out_dir.glob(f".{archive_path(out_dir, row['job_id']).name}.*.partial"):
            partial.unlink(missing_ok=True)
    return suspects


def _run_alone(generator: str, out_dir: Path, row: dict, finish: Finish) -> None:
    """A job that was in flight when a worker died, run again in a worker of its own: if
    that worker dies too, this job is what kills it, and it fails without harming others.
    One whose archive was complete before its worker died is done, not run again."""
    if arc.is_complete(archive_path(out_dir, row["job_id"])):
        finish(row, JobOutcome(row["job_id"], "skipped"))
        return
    with worker_pool(1) as pool:
        try:
            result = _submit(pool, generator, out_dir, row).result()
        except BrokenProcessPool:
            result = {
                "status": "failed",
                "error": "WorkerDied: the worker process running this job died (killed "
                "or crashed), and again when the job ran alone",
            }
    finish(row, JobOutcome(row["job_id"], **result))


def recorded_error(out_dir: Path, job_id: str) -> str | None:
    """The error a failed job left in its record, or None when it has none."""
    try:
        return json.loads(failure_path(out_dir, job_id).read_text())["error"]
    except FileNotFoundError:
        return None


def _record(out_dir: Path, outcome: JobOutcome) -> None:
    """Keep a failed job's error beside the archives; a success clears an old one."""
    record = failure_path(out_dir, outcome.job_id)
    if outcome.status == "failed":
        payload = {"job_id": outcome.job_id, "error": outcome.error}
        arc.write_atomic(record, json.dumps(payload).encode())
    else:
        record.unlink(missing_ok=True)


def shard_tables(
    generator: str, manifest: pa.Table, out_dir: Path, outcomes: Iterable[JobOutcome] = ()
) -> dict[str, pa.Table]:
    """The shard's label tables, in manifest order: fresh jobs' tables from ``outcomes``,
    others from their archives, and a ``failed`` jobs row (with the error) for each job
    without one. Jobs neither done nor failed are left out."""
    fresh = {o.job_id: o.tables for o in outcomes if o.tables}
    gen = registry.get(generator)
    schemas = {
        "jobs": tables.jobs_schema(gen.Params),
        "frames": tables.FRAMES,
        "objects": tables.OBJECTS,
        "events": tables.EVENTS,
    }
    parts: dict[str, list[pa.Table]] = {name: [] for name in schemas}
    for row in manifest.to_pylist():
        path = archive_path(out_dir, row["job_id"])
        if row["job_id"] in fresh or arc.is_complete(path):
            job_tables = fresh.get(row["job_id"]) or arc.read_tables(path)
            for name, table in job_tables.items():
                parts[name].append(table.cast(schemas[name]))
            continue
        error = recorded_error(out_dir, row["job_id"])
        if error is not None:
            failed = tables.failed_jobs_table(
                gen.Params.model_validate_json(row["params_json"]),
                batch_id=row["batch_id"],
                job_id=row["job_id"],
                generator=gen.name,
                generator_version=gen.version,
                seed=row["seed"],
                error=error,
            )
            parts["jobs"].append(failed.cast(schemas["jobs"]))
    return {
        name: pa.concat_tables(chunks) if chunks else schemas[name].empty_table()
        for name, chunks in parts.items()
    }


def failed_share(outcomes: Iterable[JobOutcome]) -> float:
    outcomes = list(outcomes)
    return sum(o.status == "failed" for o in outcomes) / len(outcomes) if outcomes else 0.0
