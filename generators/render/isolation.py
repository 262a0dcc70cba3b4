"""Render workers: a job whose renderer must be isolated (Blender holds memory across scenes
and can crash) runs in a Python process of its own, kept warm from job to job.

Importing Blender and Kubric takes seconds, far longer than a small render, so a worker
(``python -m generators.worker``) imports them once and then runs job after job, one JSON
line on its stdin each; Kubric resets Blender's scene for every job. The parent relays the
worker's progress lines, kills it at a job's time limit, and turns a crash or a timeout into
an error text (``generators.job`` makes it a ``failed`` job row). A worker that failed a job,
or ran ``VARIO_RENDER_WORKER_JOBS`` of them (a fresh Blender returns the memory the old one
kept across scenes), or was started with other settings, is replaced by a fresh one for the
next job. The worker writes each archive atomically, so a failed job leaves
none behind. This module knows nothing of jobs: it runs a worker and reports how each ended.
"""

from __future__ import annotations

import atexit
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
END = "VARIO-END"  # worker stdout after each job: "VARIO-END ok" or "VARIO-END failed"
_PARENT_ENV = "VARIO_RENDER_PARENT"  # the pid the worker must outlive no longer than
_PR_SET_PDEATHSIG = 1
_LOG_LINES = 40


def in_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def die_with_parent(parent: int | None = None) -> None:
    """In a worker: be killed when the process that started it dies (Linux), so a parent
    killed mid-job leaves no worker behind. If ``parent`` (default: the pid the render
    worker was given) is already gone, exit. The signal follows the thread that started the
    worker: for a render worker the thread that waits for it, for a pool worker the
    forkserver's."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    expected = int(os.environ.get(_PARENT_ENV, os.getppid())) if parent is None else parent
    if os.getppid() != expected:
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


class _Worker:
    """One warm render worker process and the environment it was started with."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.jobs = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "generators.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, WORKER_ENV: "1", _PARENT_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"},
        )

    def usable(self, env: dict[str, str]) -> bool:
        fresh = self.jobs < settings().render_worker_jobs
        return self.proc.poll() is None and self.env == env and fresh

    def stop(self) -> None:
        """End the worker: let an idle one exit on end of input, kill it if it does not."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


_worker: _Worker | None = None
_worker_lock = threading.Lock()  # one job at a time per warm worker


def _ready_worker() -> _Worker:
    global _worker
    env = dict(os.environ)
    if _worker is None or not _worker.usable(env):
        if _worker is not None:
            _worker.stop()
        _worker = _Worker(env)
    return _worker


def _retire_worker() -> None:
    global _worker
    if _worker is not None:
        _worker.stop()
        _worker = None


atexit.register(_retire_worker)


def run_isolated(
    spec: dict, *, on_frame: Callable[[int, int], None] | None, time_limit: float | None
) -> WorkerExit:
    """Run one job in the warm render worker to its end, the time limit or a crash."""
    limit = default_time_limit() if time_limit is None else time_limit
    with _worker_lock:
        worker = _ready_worker()
        worker.jobs += 1
        proc = worker.proc
        timed_out: list[float] = []

        def kill_at_limit() -> None:
            timed_out.append(limit)
            proc.kill()

        watchdog = threading.Timer(limit, kill_at_limit)
        watchdog.start()
        log: collections.deque[str] = collections.deque(maxlen=_LOG_LINES)
        status = None
        try:
            proc.stdin.write(json.dumps(spec) + "\n")
            proc.stdin.flush()
            for line in proc.stdout:
                if line.startswith(END):
                    status = line.split()[1]
                    break
                if line.startswith(PROGRESS) and on_frame:
                    done, total = line.split()[1:3]
                    on_frame(int(done), int(total))
                log.append(line.rstrip())
        except OSError:  # the worker died before it could read the job
            pass
        finally:
            watchdog.cancel()
            if status != "ok" or timed_out:
                proc.kill()
                returncode = proc.wait()
                _retire_worker()
    text = "\n".join(log)
    if status == "ok" and not timed_out:
        return WorkerExit(None, text, proc.pid)
    returncode = 1 if status == "failed" else returncode
    error = _error_text(returncode, log, timed_out[0] if timed_out else None)
    return WorkerExit(error, text, proc.pid)
