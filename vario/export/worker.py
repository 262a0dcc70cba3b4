"""The helper processes an export starts beside its own: what both ends of one agree on.

An export's Python work (turning label rows into a format) holds one core; the work on
image bytes (copying them out of the archives, writing them into Parquet shards) runs on a
second process, truly beside it, fed through its standard input. Both helpers,
``vario.export.copier`` and ``vario.export.hf_shards``, are run the same way:

- ``python -m MODULE PARENT_PID ARGS...``; the export writes its requests on the
  process's stdin, ending with an end mark of the helper's own format;
- the helper answers one line of JSON on its stdout: its result once the end mark came, or
  ``{"error": ...}`` with the first error it met (then it stops reading);
- its input ending without the end mark, or its parent gone (killed outright, leaving its
  temporary folder to be taken over), stops it at once with status 3, doing nothing more;
- an export leaving on an error kills its helper: nothing more is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import IO, Any

STOPPED = 3  # the helper's status when its input ended early or its parent is gone


class WorkerError(RuntimeError):
    """A helper process failed; its message is what the helper was doing and its first error."""


class Worker:
    """One helper process (``python -m module PARENT_PID *args``), used as a context
    manager: leaving it on an error kills the process. ``doing`` names its work in errors."""

    def __init__(self, module: str, doing: str, *args: str):
        self.doing = doing
        command = [sys.executable, "-m", module, str(os.getpid()), *args]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.stdin: IO[bytes] = self._process.stdin

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        if self._process.poll() is None:  # left on an error: nothing more is done
            self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None and not stream.closed:
                stream.close()

    def send(self, write: Callable[[], Any]) -> None:
        """Run ``write`` (which writes on ``stdin``), then flush: the helper works on what was
        sent while this process goes on. A helper that stopped on an error (a broken pipe)
        raises ``WorkerError`` with its answer."""
        try:
            write()
            self.stdin.flush()
        except OSError:  # BrokenPipeError, or pyarrow's wrapping of it: the helper stopped
            raise self._failed(self._answer()) from None

    def result(self) -> dict[str, Any]:
        """The helper's answer, once its input is closed (the end mark written already)."""
        self.send(self.stdin.flush)  # flushed: closing cannot meet a broken pipe
        self.stdin.close()
        reply = self._answer()
        if "error" in reply:
            raise self._failed(reply)
        return reply

    def _failed(self, reply: dict[str, Any]) -> WorkerError:
        return WorkerError(f"{self.doing}: {reply.get('error', 'stopped')}")

    def _answer(self) -> dict[str, Any]:
        """The process's one line of answer, once it has ended."""
        line = self._process.stdout.readline()
        self._process.wait()
        reply = json.loads(line) if line.strip() else {}
        if self._process.returncode != 0 and "error" not in reply:
            reply["error"] = f"the helper process ended with status {self._process.returncode}"
        return reply


def serve(work: Callable[[], dict[str, Any] | None], answer: IO[str]) -> int:
    """A helper's side: runs ``work`` and answers its result (status 0), or its first
    error, with the notes added to it (where it happened: ``add_note``; status 1); ``work``
    returning None (its input ended without the end mark) answers nothing (status 3)."""
    try:
        result = work()
    except Exception as exc:  # noqa: BLE001 (any failure is answered, then the process ends)
        where = "; ".join(getattr(exc, "__notes__", ()))
        error = f"{type(exc).__name__}: {exc}" + (f" ({where})" if where else "")
        answer.write(json.dumps({"error": error}) + "\n")
        return 1
    if result is None:
        return STOPPED
    answer.write(json.dumps(result) + "\n")
    return 0


def check_parent(parent: int) -> None:
    """Stops the helper at once (status 3) when the export that started it is gone."""
    if os.getppid() != parent:
        os._exit(STOPPED)
