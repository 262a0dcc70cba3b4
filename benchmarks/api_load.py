"""The HTTP API under load, on loopback only: ``GET /v1/batches/{name}`` at a fixed rate while
another batch renders with 2 workers, and archive downloads against reading the same files.

    uv run python benchmarks/api_load.py [--rate 500] [--seconds 60]

A batch of archives is rendered first (the one polled and downloaded: 16 jobs of 24 frames at
512 px, about 8 MiB each, so the download measures moving bytes, not per-request set-up);
then ``vario serve
--no-daemon`` starts on a free loopback port and a second batch renders beside it (``vario
batch run``, ``VARIO_WORKERS=2``). Requests are sent open-loop: each at its scheduled time
whether or not the ones before have been answered, and its latency is measured from that
time, so a server falling behind shows in the figures instead of slowing the load. Bounded:
at most ``--rate`` x ``--seconds`` requests, 64 in flight (one per connection).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvloop
import yaml
from page_cache import drop_caches

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 20.0
TARGET_THROUGHPUT = 0.8  # of reading the same files from disk
TURNS = 3
IN_FLIGHT = 64  # connections, each with one request at a time


def _spec(name: str, count: int, frames: int, resolution: int) -> dict:
    return {
        "name": name,
        "generator": "tabletop",
        "seed": 3,
        "shard_size": count,
        "fixed": {"resolution": resolution, "n_frames": frames, "n_objects": 4},
        "sampler": {"kind": "random", "count": count, "ranges": {"fov": [30, 60]}},
    }


def _vario(env: dict, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dagster_project.cli", *args], env=env, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _render(env: dict, folder: Path, spec: dict) -> subprocess.Popen:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return _vario(
        env, "batch", "run", str(path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


class _Connections:
    """``size`` keep-alive HTTP/1.1 connections to the server, each sending one GET at a
    time. Requests are built once as bytes and answers parsed only as far as their status
    and length: the load generator shares the machine's two cores with the server and the
    renderer, so it must cost far less per request than the server does (httpx costs
    about as much, and the generator itself became the bottleneck)."""

    def __init__(self, host: str, port: int, size: int):
        self.host, self.port, self.size = host, port, size
        self.idle: asyncio.Queue = asyncio.Queue()
        self._reopening: set[asyncio.Task] = set()

    async def open(self) -> None:
        for _ in range(self.size):
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()

    def _replace(self, writer: asyncio.StreamWriter) -> None:
        writer.close()

        async def reopen() -> None:
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))

        self._reopening.add(task := asyncio.create_task(reopen()))
        task.add_done_callback(self._reopening.discard)

    async def get(self, request: bytes) -> int:
        """The status of one answer to ``request`` on an idle connection."""
        reader, writer = await self.idle.get()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self._replace(writer)
            return 0
        except asyncio.CancelledError:  # timed out: its answer may still come, on no one's watch
            self._replace(writer)
            raise
        self.idle.put_nowait((reader, writer))
        return int(head.split(b" ", 2)[1])


async def _load(port: int, key: str, batch: str, rate: int, seconds: int) -> list[float]:
    """Latencies (s) of ``rate`` x ``seconds`` GETs sent on schedule; errors count as inf."""
    latencies: list[float] = []
    request = (
        f"GET /v1/batches/{batch} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nAccept: application/json\r\n\r\n"
    ).encode()
    connections = _Connections("127.0.0.1", port, IN_FLIGHT)
    await connections.open()

    async def one(due: float) -> None:
        try:
            ok = await asyncio.wait_for(connections.get(request), timeout=10) == 200
        except TimeoutError:
            ok = False
        latencies.append(time.perf_counter() - due if ok else float("inf"))

    start = time.perf_counter()
    tasks = []
    for n in range(rate * seconds):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    await connections.close()
    return latencies


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _download_figures(url: str, key: str, archives: list[Path], folder: Path, pid: int) -> None:
    """Downloading the batch with the client (every archive verified and written) against
    reading the same files, and, for scale, against copying them (reading and writing: what
    any download to disk does at least) and against reading, hashing and writing them with
    no HTTP (what a verified download does besides the transfer); each from a cold page
    cache, ``TURNS`` times in turn, medians compared."""
    from vario_client import Client

    size = sum(p.stat().st_size for p in archives) / 2**20
    disk, plain, local, http, cpu = [], [], [], [], []
    for turn in range(TURNS):
        cold = drop_caches()
        begun = time.perf_counter()
        for path in archives:
            path.read_bytes()
        disk.append(time.perf_counter() - begun)
        drop_caches()
        copies = folder / f"plain-{turn}"
        copies.mkdir()
        begun = time.perf_counter()
        for path in archives:
            (copies / path.name).write_bytes(path.read_bytes())
        plain.append(time.perf_counter() - begun)
        drop_caches()
        copies = folder / f"copied-{turn}"
        copies.mkdir()
        begun = time.perf_counter()
        for path in archives:
            data = path.read_bytes()
            hashlib.sha256(data).hexdigest()
            (copies / path.name).write_bytes(data)
        local.append(time.perf_counter() - begun)
        drop_caches()
        server_cpu, own_cpu = _cpu_seconds(pid), time.process_time()
        with Client(url, key) as vario:
            begun = time.perf_counter()
            summary = vario.batch("polled").download(folder / f"downloaded-{turn}", workers=8)
            http.append(time.perf_counter() - begun)
        cpu.append((_cpu_seconds(pid) - server_cpu, time.process_time() - own_cpu))
        assert summary.downloaded == len(archives)
    disk_s, plain_s, local_s, http_s = (statistics.median(t) for t in (disk, plain, local, http))
    ratio = disk_s / http_s
    verdict = "met" if ratio >= TARGET_THROUGHPUT else "MISSED"
    print(
        f"download {size:.1f} MiB, medians of {TURNS}: {size / http_s:.0f} MiB/s over HTTP "
        f"(client: 8 workers, verified), {size / disk_s:.0f} MiB/s read from disk "
        f"({'cold' if cold else 'page cache: could not drop it'}): {ratio:.2f} of it "
        f"(target >= {TARGET_THROUGHPUT}: {verdict})"
    )
    server_cpu, client_cpu = (statistics.median(c[i] for c in cpu) for i in (0, 1))
    print(
        f"  read and write them (a copy: any download's floor): {size / plain_s:.0f} MiB/s, "
        f"{disk_s / plain_s:.2f} of the read\n"
        f"  read, hash and write them with no HTTP: {size / local_s:.0f} MiB/s "
        f"(the download is {local_s / http_s:.2f} of it); CPU seconds per download: "
        f"server {server_cpu:.2f}, client {client_cpu:.2f}, on {os.cpu_count()} cores"
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=500, help="requests per second")
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        home = folder / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "VARIO_DATA_DIR": str(folder / "data"),
            "VARIO_WORKERS": "2",
            "VARIO_API_RATE_PER_MINUTE": str(args.rate * 120),
        }
        started = time.perf_counter()
        assert _render(env, folder, _spec("polled", 16, 24, 512)).wait() in (0, 1)
        key = subprocess.run(
            [sys.executable, "-m", "dagster_project.cli", "api-key", "create"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        archives = sorted((folder / "data" / "archives" / "polled").glob("*.zip"))
        size = sum(p.stat().st_size for p in archives)
        built = time.perf_counter() - started
        print(f"{len(archives)} archives, {size / 2**20:.1f} MiB (built in {built:.0f} s)")
        port = _free_port()
        server = _vario(
            env,
            "serve",
            "--no-daemon",
            "--port",
            str(port),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            rendering = _render(env, folder, _spec("beside", 64, 20, 256))
            latencies = uvloop.run(_load(port, key, "polled", args.rate, args.seconds))
            busy = rendering.poll() is None
            rendered = len(list((folder / "data" / "archives" / "beside").glob("*.zip")))
            rendering.kill()
            rendering.wait()
            failed = sum(1 for v in latencies if v == float("inf"))
            ok = [v for v in latencies if v != float("inf")]
            p50, p99 = (_percentile(ok, q) * 1000 for q in (0.5, 0.99))
            verdict = "met" if p99 <= TARGET_P99_MS and not failed else "MISSED"
            print(
                f"GET /v1/batches/polled: {len(latencies):,} requests at {args.rate}/s for "
                f"{args.seconds} s, a batch rendering beside ({rendered} jobs done, still "
                f"rendering at the end: {busy}): "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {failed} failed "
                f"(target p99 <= {TARGET_P99_MS:g} ms: {verdict})"
            )
            _download_figures(url, key, archives, folder, server.pid)
        finally:
            server.terminate()
            server.wait()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak memory of the load generator: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
