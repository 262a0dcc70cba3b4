"""End to end: ``vario ui`` (the real Dagster webserver and daemon) on loopback, a spec
through the inbox, runs followed through Dagster's GraphQL API, the tables and the export
checked with DuckDB; and a batch run beforehand with ``vario batch run``, which the daemon
must see as done."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from vario.store import views as ds
from vario.store.layout import DataStore

ROOT = Path(__file__).resolve().parent.parent
RUNS = """{ runsOrError { ... on Runs { results { runId jobName status
            tags { key value } } } } }"""
SPEC = {
    "name": "e2e",
    "generator": "tabletop",
    "seed": 1,
    "shard_size": 2,
    "fixed": {"resolution": 64, "n_objects": 2},
    "sampler": {"kind": "random", "count": 4, "ranges": {"light_azimuth": [0, 360]}},
}
BEFORE = {**SPEC, "name": "before", "seed": 2, "sampler": {**SPEC["sampler"], "count": 2}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


def _runs(port: int) -> list[dict]:
    return _graphql(port, RUNS)["runsOrError"]["results"]


def _batch_of(run: dict) -> str:
    """The batch a run belongs to: its partition (batch or shard) or its dataset run key."""
    tags = {t["key"]: t["value"] for t in run["tags"]}
    if "dagster/partition" in tags:
        return tags["dagster/partition"].split("~")[0]
    return tags["dagster/run_key"].split(":")[1]


def _wait(condition, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; dagster log:\n" + log.read_text()[-4000:])


@pytest.fixture
def dagster_dev(tmp_path):
    home, data, log = tmp_path / "dagster_home", tmp_path / "data", tmp_path / "dagster.log"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    templates = tmp_path / "templates"
    templates.mkdir()
    # a 4-job batch cannot cover its domain: its tests only warn, so the release goes through
    warn = {name: {"severity": "WARN"} for name in ("coverage", "bias", "balance")}
    (templates / "e2e.tests.yaml").write_text(yaml.safe_dump(warn))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "VARIO_DATA_DIR": str(data),
        "VARIO_SENSOR_INTERVAL": "2",
        "VARIO_WORKERS": "1",
        "VARIO_TEMPLATES_DIR": str(templates),
    }
    (templates / "before.tests.yaml").write_text(yaml.safe_dump(warn))
    before = tmp_path / "before.yaml"
    before.write_text(yaml.safe_dump(BEFORE))
    cli = [sys.executable, "-m", "dagster_project.cli"]
    ran = subprocess.run([*cli, "batch", "run", str(before)], env=env, capture_output=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cli, "ui", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait(lambda: _graphql(port, "{ version }"), 120, "the webserver", log)
        yield port, DataStore(data), log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_spec_in_the_inbox_runs_through_the_daemon(dagster_dev, tmp_path):
    port, store, log = dagster_dev
    spec = tmp_path / "e2e.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    store.submit(spec)

    def finished():
        runs = _runs(port)
        failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
        assert not failed, failed
        mine = [r for r in runs if _batch_of(r) == "e2e"]
        done = {r["jobName"] for r in mine if r["status"] == "SUCCESS"}
        return runs if {"dataset_job", "release_job"} <= done else None

    runs = _wait(finished, 400, "the batch's runs", log)
    per_batch = {"before": 1, "e2e": 2}  # shards
    for batch, shards in per_batch.items():  # and the daemon launched nothing for "before"
        mine = [r for r in runs if _batch_of(r) == batch]
        jobs = ["batch_manifest_job", "dataset_job", "release_job", *["render_shard_job"] * shards]
        assert sorted(r["jobName"] for r in mine) == sorted(jobs), (batch, mine)
        assert all(r["status"] == "SUCCESS" for r in mine)
    # submitting the same spec again launches nothing new
    store.submit(spec)
    _wait(lambda: not store.inbox_specs(), 60, "the duplicate to be processed", log)
    time.sleep(6)
    assert len(_runs(port)) == len(runs)

    con = ds.connect(store)
    ok = "SELECT count(*), count(*) FILTER (status = 'ok') FROM jobs WHERE batch = 'e2e'"
    assert con.execute(ok).fetchall() == [(4, 4)]
    assert con.execute(
        "SELECT count(DISTINCT job_id) FROM objects WHERE batch = 'e2e'"
    ).fetchall() == [(4,)]
    exported = con.sql(
        f"SELECT count(*) FROM read_parquet('{store.root}/exports/e2e/objects.parquet')"
    ).fetchall()
    in_dataset = con.sql("SELECT count(*) FROM objects WHERE batch = 'e2e'").fetchall()
    assert exported == in_dataset and in_dataset[0][0] > 0  # tested, then released whole
