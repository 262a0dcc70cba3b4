"""Render workers: a job whose renderer must be isolated (Blender holds memory across scenes
and can crash) runs in a Python process of its own.

The parent starts ``python -m generators.worker SPEC``, relays its progress lines, kills it at
the time limit, and turns a crash or a timeout into an error text (``generators.job`` makes
it a ``failed`` job row). The worker writes the archive atomically, so a failed job leaves
none behind. This module knows nothing of jobs: it runs a worker and reports how it ended.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from generators.settings import settings

WORKER_ENV = "VARIO_RENDER_WORKER"
PROGRESS = "VARIO-PROGRESS"  # worker stdout: "VARIO-PROGRESS <done> <total>"
ERROR = "VARIO-ERROR"  # worker stdout: "VARIO-ERROR <type>: <message>"
_PARENT_ENV = "VARIO_RENDER_PARENT"  # the pid the worker must outlive no longer than
_PR_SET_PDEATHSIG = 1
_LOG_LINES = 40


def in_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def die_with_parent() -> None:
    """In a worker: be killed when the process that started it dies (Linux), so a parent
    killed mid-job leaves no render worker behind. If the parent is already gone, exit.
    The signal follows the thread that started the worker; that thread waits for it."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(os.environ.get(_PARENT_ENV, os.getppid())):
        os._exit(1)


def default_time_limit() -> float:
    return settings().job_time_limit


def _error_text(returncode: int, log: collections.deque, timed_out: float | None) -> str:
    if timed_out is not None:
        return f"render worker exceeded the time limit of {timed_out:g} s"
    reported = [ln[len(ERROR) :].strip() for ln in log if ln.startswith(ERROR)]
    if reported:
        return reported[-1]
    lines = [ln for ln in log if ln.strip() and not ln.startswith(PROGRESS)]
    if returncode < 0:
        tail = "; ".join(lines[-3:])
        return f"render worker killed by {signal.Signals(-returncode).name}" + (
            f": {tail}" if tail else ""
        )
    return lines[-1] if lines else f"render worker exited with code {returncode}"


@dataclass(frozen=True)
class WorkerExit:
    """How an isolated worker ended: ``error`` is None when it exited cleanly."""

    error: str | None
    log: str
    pid: int  # names the worker's partial archive, which a failed job removes


def run_isolated(
    spec: dict, *, on_frame: Callable[[int, int], None] | None, time_limit: float | None
) -> WorkerExit:
    """Run ``python -m generators.worker SPEC`` to its end, the time limit or a crash."""
    limit = default_time_limit() if time_limit is None else time_limit
    proc = subprocess.Popen(
        [sys.executable, "-m", "generators.worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, WORKER_ENV: "1", _PARENT_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"},
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
            if line.startswith(PROGRESS) and on_frame:
                done, total = line.split()[1:3]
                on_frame(int(done), int(total))
            log.append(line.rstrip())
        returncode = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "\n".join(log)
    if returncode == 0 and not timed_out:
        return WorkerExit(None, text, proc.pid)
    error = _error_text(returncode, log, timed_out[0] if timed_out else None)
    return WorkerExit(error, text, proc.pid)
