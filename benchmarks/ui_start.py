"""How soon ``vario ui`` is ready: seconds until the webserver answers and until its code
location has loaded (every definition imported, the asset graph servable), against Dagster's
own floor in the same run: ``dagster dev`` on a one-asset definitions file. Peak memory is
the process tree's (webserver, daemon, code server) while starting.

Each start is on a fresh project (empty data folder and Dagster home), stopped with Ctrl-C
(SIGINT to its process group) as a user stops it. Target: ready within 20 s.

    uv run python benchmarks/ui_start.py [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from memory import PeakTreeMemory

TARGET_SECONDS = 20.0
MINIMAL = """import dagster as dg


@dg.asset
def one() -> int:
    return 1


defs = dg.Definitions(assets=[one])
"""
LOADED = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loaded(url: str) -> bool:
    """Whether the webserver answers and every code location has loaded."""
    try:
        reply = httpx.post(f"{url}/graphql", json={"query": LOADED}, timeout=5)
        entries = reply.json()["data"]["workspaceOrError"]["locationEntries"]
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return False
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def start(arguments: list[str], root: Path) -> tuple[float, float, int]:
    """Seconds to the first answer and to a loaded location, and the tree's peak bytes."""
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(root / "home"),
        "VARIO_DATA_DIR": str(root / "data"),
        "VARIO_CACHE_DIR": str(root / "cache"),
    }
    (root / "home").mkdir()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *arguments, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with PeakTreeMemory(process.pid) as peak:
            while not _answers(url):
                if process.poll() is not None:
                    raise SystemExit(f"{arguments} ended with {process.returncode}")
                time.sleep(0.1)
            answered = time.perf_counter() - started
            while not _loaded(url):
                time.sleep(0.1)
            loaded = time.perf_counter() - started
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return answered, loaded, peak.bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, int]]] = {"dagster floor": [], "vario ui": []}
    with tempfile.TemporaryDirectory() as scratch:
        minimal = Path(scratch) / "minimal.py"
        minimal.write_text(MINIMAL)
        commands = {
            "dagster floor": ["-m", "dagster", "dev", "--log-level", "warning", "-f", str(minimal)],
            "vario ui": ["-m", "dagster_project.cli", "ui"],
        }
        for run in range(args.runs):
            for name, command in commands.items():  # alternated: drift hits both alike
                root = Path(scratch) / f"{name.replace(' ', '-')}-{run}"
                root.mkdir()
                results[name].append(start(command, root))
                answered, loaded, peak = results[name][-1]
                print(
                    f"  {name:13s} run {run + 1}: answers {answered:5.1f} s  "
                    f"loaded {loaded:5.1f} s  peak memory {peak / 2**20:,.0f} MiB"
                )
    floor = statistics.median(r[1] for r in results["dagster floor"])
    vario = statistics.median(r[1] for r in results["vario ui"])
    verdict = "meets" if vario <= TARGET_SECONDS else "misses"
    print(f"vario ui loaded in {vario:.1f} s (median), {vario / floor:.2f}x Dagster's floor")
    print(f"({floor:.1f} s); target {TARGET_SECONDS:.0f} s: {verdict}")


if __name__ == "__main__":
    main()
