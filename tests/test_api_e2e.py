"""End to end through the HTTP API: ``vario serve`` starts the API and the Dagster daemon on
a fresh instance; the Python client submits a batch, waits for it (the daemon's sensors
plan, render and test it), and downloads every archive, which equals the data folder's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

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


def test_a_client_submits_waits_and_downloads_through_the_daemon(tmp_path):
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
    except Exception:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server, its daemon and their runs
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
