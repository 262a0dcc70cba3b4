"""End to end through the HTTP API: ``vario serve`` starts the API and the Dagster daemon on
a fresh instance, on SQLite and on PostgreSQL; the Python client submits a batch, waits for
it (the daemon's sensors plan it, its run queue launches the shard runs within their limit,
they render, the dataset tests run), and downloads every archive, which equals the data
folder's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pg_server
import pytest
import yaml
from test_api import start_server
from vario_client import Client

from vario.api.keys import create_key
from vario.store.layout import DataStore

ROOT = Path(__file__).resolve().parent.parent
SPEC = {
    "name": "served",
    "generator": "tabletop",
    "seed": 4,
    "shard_size": 2,
    "fixed": {"resolution": 64, "n_frames": 1, "n_objects": 2, "n_distractors": 0},
    "sampler": {"kind": "random", "count": 3, "ranges": {"light_azimuth": [0, 360]}},
}


@pytest.fixture(params=["sqlite", "postgres"])
def instance_env(request) -> dict[str, str]:
    """The settings that put the instance on each storage."""
    if request.param == "sqlite":
        yield {}
        return
    with pg_server.server() as server, pg_server.database(server) as url:
        yield {"VARIO_DAGSTER_POSTGRES_URL": url}


def _most_at_once(runs: list[dg.DagsterRun], instance: dg.DagsterInstance) -> int:
    """How many of these runs were running at the same moment, at most."""
    records = instance.get_run_records(dg.RunsFilter(run_ids=[r.run_id for r in runs]))
    edges = sorted(edge for r in records for edge in ((r.start_time, 1), (r.end_time, -1)))
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_a_client_submits_waits_and_downloads_through_the_daemon(
    tmp_path, instance_env, monkeypatch
):
    home, data, templates = tmp_path / "dagster_home", tmp_path / "data", tmp_path / "templates"
    home.mkdir()
    templates.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # three jobs cannot cover a domain: the dataset tests only warn, so the batch completes
    warn = {name: {"severity": "WARN"} for name in ("coverage", "bias", "balance", "novelty")}
    (templates / "served.tests.yaml").write_text(yaml.safe_dump(warn))
    store = DataStore(data)
    key = create_key(store, "submit")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "VARIO_DATA_DIR": str(data),
        "VARIO_SENSOR_INTERVAL": "2",
        "VARIO_WORKERS": "1",
        "VARIO_TEMPLATES_DIR": str(templates),
        "VARIO_MAX_CPU_SHARD_RUNS": "1",
        **instance_env,
    }
    process, url, log = start_server(env, cwd=ROOT, new_session=True)
    try:
        with Client(url, key) as vario:
            batch = vario.submit(SPEC)
            status = batch.wait(timeout=400, poll=2)
            assert status.counts.done == 3 and status.counts.failed == 0, status
            assert status.tests and all(t.passed or t.severity == "WARN" for t in status.tests)
            summary = batch.download(tmp_path / "downloads", workers=3)
            assert (summary.downloaded, summary.skipped) == (3, 0)
        archives = sorted(store.archive_dir("served").glob("*.zip"))
        assert len(archives) == 3
        for archive in archives:
            assert (tmp_path / "downloads" / archive.name).read_bytes() == archive.read_bytes()
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__.startswith(
                "Postgres" if instance_env else "Sqlite"
            )
            shard_runs = instance.get_runs(dg.RunsFilter(job_name="render_shard_job"))
            assert len(shard_runs) == 2
            assert all(r.tags["vario/device"] == "cpu" for r in shard_runs)
            assert _most_at_once(shard_runs, instance) == 1  # the queue's limit held
    except Exception:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server, which stops its daemon and runs
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert _processes_of(home) == []  # the daemon, its code servers and runs ended too


def _processes_of(home: Path) -> list[int]:
    """Processes that run with ``DAGSTER_HOME`` set to ``home`` (a minute at most for them
    to end)."""
    marker = f"DAGSTER_HOME={home}".encode()
    for _ in range(60):
        found = []
        for entry in Path("/proc").iterdir():
            try:
                environ = (entry / "environ").read_bytes() if entry.name.isdigit() else b""
            except OSError:  # ended meanwhile, or not ours to read
                continue
            if marker in environ.split(b"\0"):
                found.append(int(entry.name))
        if not found:
            return []
        time.sleep(1)
    return found
