"""A real browser for the UI tests: Debian's Chromium, driven by Playwright (its Python
package, from the lock file). Playwright's own browser download needs a network this machine
does not have; Debian's package is installed with apt-get when missing (as root), like the
PostgreSQL server of ``pg_server``."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Headless as root, with no GPU, and no calls home: on a closed network Chromium's background
# connections are refused many at a time and slow every page.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> Path:
    """Debian's Chromium, installed first if missing (one installer at a time: test workers
    may ask together, and dpkg takes one)."""
    with open(Path(tempfile.gettempdir()) / "vario-chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not CHROMIUM.exists():
            _install()
    return CHROMIUM


def _install() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("no /usr/bin/chromium here, and installing it needs root")
    apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=apt, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "chromium"], check=True, env=apt, capture_output=True
    )


@contextlib.contextmanager
def browser_page(width: int = 1600, height: int = 1000) -> Iterator:
    """A Playwright page in a fresh headless Chromium (its own empty profile), closed after."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    profile = Path(tempfile.mkdtemp(prefix="vario-chromium-"))
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(executable),
                headless=True,
                args=FLAGS,
                viewport={"width": width, "height": height},
            )
            try:
                yield context.pages[0] if context.pages else context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
