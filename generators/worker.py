"""Render workers: a job whose renderer must be isolated (Blender holds memory across scenes
and can crash) runs in a Python process of its own.

The parent starts ``python -m generators.worker SPEC``, relays its progress lines, kills it at
the time limit, and turns a crash or a timeout into a ``failed`` job row carrying the worker's
error text. The worker writes the archive atomically, so a failed job leaves none behind.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from generators import archive as arc
from generators import tables

if TYPE_CHECKING:
    from generators.contract import Generator
    from generators.job import JobResult
    from generators.params import GeneratorParams

WORKER_ENV = "VARIO_RENDER_WORKER"
TIME_LIMIT_ENV = "VARIO_JOB_TIME_LIMIT"
DEFAULT_TIME_LIMIT = 3600.0
_PROGRESS = "VARIO-PROGRESS"
_ERROR = "VARIO-ERROR"
_LOG_LINES = 40


def in_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def default_time_limit() -> float:
    return float(os.environ.get(TIME_LIMIT_ENV, DEFAULT_TIME_LIMIT))


def _error_text(returncode: int, log: collections.deque, timed_out: float | None) -> str:
    if timed_out is not None:
        return f"render worker exceeded the time limit of {timed_out:g} s"
    reported = [ln[len(_ERROR) :].strip() for ln in log if ln.startswith(_ERROR)]
    if reported:
        return reported[-1]
    lines = [ln for ln in log if ln.strip() and not ln.startswith(_PROGRESS)]
    if returncode < 0:
        tail = "; ".join(lines[-3:])
        return f"render worker killed by {signal.Signals(-returncode).name}" + (
            f": {tail}" if tail else ""
        )
    return lines[-1] if lines else f"render worker exited with code {returncode}"


def run_isolated(
    generator: Generator,
    params: GeneratorParams,
    seed: int,
    out_dir: Path,
    *,
    batch_id: str,
    on_frame: Callable[[int, int], None] | None,
    time_limit: float | None,
) -> JobResult:
    from generators.job import JobResult, job_id

    limit = default_time_limit() if time_limit is None else time_limit
    jid = job_id(generator, params, seed)
    spec = {
        "generator": generator.name,
        "params": params.model_dump(mode="json"),
        "seed": seed,
        "out_dir": str(out_dir),
        "batch_id": batch_id,
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "generators.worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, WORKER_ENV: "1", "PYTHONUNBUFFERED": "1"},
    )
    timed_out: list[float] = []

    def kill_at_limit() -> None:
        timed_out.append(limit)
        proc.kill()

    watchdog = threading.Timer(limit, kill_at_limit)
    watchdog.start()
    log: collections.deque[str] = collections.deque(maxlen=_LOG_LINES)
    try:
        for line in proc.stdout:
            if line.startswith(_PROGRESS) and on_frame:
                done, total = line.split()[1:3]
                on_frame(int(done), int(total))
            log.append(line.rstrip())
        returncode = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    path = Path(out_dir) / f"{jid}.zip"
    if returncode == 0 and not timed_out and path.exists():
        labels = arc.read_tables(path)
        return JobResult(
            jid, path, labels["jobs"], labels["frames"], labels["objects"], labels["events"]
        )
    arc.AtomicArchive(path, pid=proc.pid).partial.unlink(missing_ok=True)
    error = _error_text(returncode, log, timed_out[0] if timed_out else None)
    row = tables.jobs_row(
        params,
        batch_id=batch_id,
        job_id=jid,
        generator=generator.name,
        generator_version=generator.version,
        seed=seed,
        status="failed",
        error=error,
        total_seconds=time.perf_counter() - started,
    )
    jobs = pa.Table.from_pylist([row], tables.jobs_schema(type(params)))
    empty = [schema.empty_table() for schema in (tables.FRAMES, tables.OBJECTS, tables.EVENTS)]
    return JobResult(jid, None, jobs, *empty, log="\n".join(log))


def main() -> None:
    from generators import registry

    spec = json.loads(sys.argv[1])
    gen = registry.get(spec["generator"])
    params = gen.Params.model_validate(spec["params"])
    try:
        gen.run(
            params,
            spec["seed"],
            Path(spec["out_dir"]),
            batch_id=spec["batch_id"],
            on_frame=lambda done, total: print(f"{_PROGRESS} {done} {total}", flush=True),
        )
    except Exception as exc:  # reported to the parent, which records the failed job
        traceback.print_exc()
        print(f"{_ERROR} {type(exc).__name__}: {exc}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
