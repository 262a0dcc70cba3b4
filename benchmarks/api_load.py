"""The HTTP API under load, on loopback only: ``GET /v1/batches/{name}`` at a fixed rate while
another batch renders with 2 workers, and archive downloads against reading the same files.

    uv run python benchmarks/api_load.py [--rate 500] [--seconds 60]

A batch of archives is rendered first (the one polled and downloaded); then ``vario serve
--no-daemon`` starts on a free loopback port and a second batch renders beside it (``vario
batch run``, ``VARIO_WORKERS=2``). Requests are sent open-loop: each at its scheduled time
whether or not the ones before have been answered, and its latency is measured from that
time, so a server falling behind shows in the figures instead of slowing the load. Bounded:
at most ``--rate`` x ``--seconds`` requests, 200 in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 20.0
TARGET_THROUGHPUT = 0.8  # of reading the same files from disk
IN_FLIGHT = 200


def _spec(name: str, count: int, frames: int) -> dict:
    return {
        "name": name,
        "generator": "tabletop",
        "seed": 3,
        "shard_size": count,
        "fixed": {"resolution": 256, "n_frames": frames, "n_objects": 4},
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


async def _load(url: str, key: str, batch: str, rate: int, seconds: int) -> list[float]:
    """Latencies (s) of ``rate`` x ``seconds`` GETs sent on schedule; errors count as inf."""
    latencies: list[float] = []
    gate = asyncio.Semaphore(IN_FLIGHT)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:

        async def one(due: float) -> None:
            async with gate:
                try:
                    response = await client.get(f"/v1/batches/{batch}", timeout=10)
                    ok = response.status_code == 200
                except httpx.HTTPError:
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
    return latencies


def _drop_caches() -> bool:
    """Empty the page cache (root only), so both reads start from the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


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
        assert _render(env, folder, _spec("polled", 16, 10)).wait() in (0, 1)
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
            rendering = _render(env, folder, _spec("beside", 64, 20))
            latencies = asyncio.run(_load(url, key, "polled", args.rate, args.seconds))
            busy = rendering.poll() is None
            rendering.kill()
            rendering.wait()
            failed = sum(1 for v in latencies if v == float("inf"))
            ok = [v for v in latencies if v != float("inf")]
            p50, p99 = (_percentile(ok, q) * 1000 for q in (0.5, 0.99))
            verdict = "met" if p99 <= TARGET_P99_MS and not failed else "MISSED"
            print(
                f"GET /v1/batches/polled: {len(latencies):,} requests at {args.rate}/s for "
                f"{args.seconds} s, a batch rendering beside (still at the end: {busy}): "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {failed} failed "
                f"(target p99 <= {TARGET_P99_MS:g} ms: {verdict})"
            )
            from vario_client import Client

            cold = _drop_caches()
            begun = time.perf_counter()
            for path in archives:
                path.read_bytes()
            disk = time.perf_counter() - begun
            _drop_caches()
            with Client(url, key) as vario:
                begun = time.perf_counter()
                summary = vario.batch("polled").download(folder / "downloaded", workers=8)
                http = time.perf_counter() - begun
            assert summary.downloaded == len(archives)
            ratio = disk / http
            verdict = "met" if ratio >= TARGET_THROUGHPUT else "MISSED"
            print(
                f"download {size / 2**20:.1f} MiB: {size / 2**20 / http:.0f} MiB/s over HTTP "
                f"(client: 8 workers, verified), {size / 2**20 / disk:.0f} MiB/s read from disk "
                f"({'cold' if cold else 'page cache: could not drop it'}): "
                f"{ratio:.2f} of it (target >= {TARGET_THROUGHPUT}: {verdict})"
            )
        finally:
            server.terminate()
            server.wait()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak memory of the load generator: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
