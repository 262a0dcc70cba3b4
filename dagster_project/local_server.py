"""``vario serve`` started from Python, for a notebook or a script that wants the HTTP API on
this machine without a second terminal: on a free loopback port, in a process group of its
own, waited for until it answers, and stopped with everything it started (the Dagster daemon
and its runs) by ``stop()``, or when the interpreter that started it exits."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


class LocalServer:
    """A running ``vario serve``; ``url`` is where it answers, ``log`` holds its output."""

    def __init__(self, log: Path, settings: dict[str, str], timeout: float) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url, self.log = f"http://127.0.0.1:{port}", log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as sink:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "dagster_project.cli", "serve", "--port", str(port)],
                env={**os.environ, **settings},
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: SIGTERM to it stops it, and it its daemon
            )
        atexit.register(self.stop)
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"vario serve ended:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/openapi.json", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"vario serve did not answer in {timeout:.0f} s (log: {self.log})")

    def stop(self) -> None:
        """Stop the server, its daemon and their runs (SIGTERM to the group, then SIGKILL)."""
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        atexit.unregister(self.stop)


def start_local_server(log: Path, *, timeout: float = 120, **settings: str) -> LocalServer:
    """Start ``vario serve`` with these settings (``VARIO_*`` names) over the environment's,
    its output in ``log``; return once it answers."""
    return LocalServer(log, settings, timeout)
