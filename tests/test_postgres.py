"""The Dagster instance on PostgreSQL (``VARIO_DAGSTER_POSTGRES_URL``): the same ``vario batch
run`` as on SQLite, its runs, partitions and check results read back from the database."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import dagster as dg
import pg_server
import psycopg2
import pytest
import yaml

SPEC = {
    "name": "pg-run",
    "generator": "tabletop",
    "seed": 5,
    "fixed": {"resolution": 64, "n_frames": 1, "n_objects": 3, "n_distractors": 0},
    "sampler": {"kind": "sobol", "count": 4, "ranges": {"light_azimuth": [0, 360]}},
    "shard_size": 2,
}


@pytest.fixture(scope="module")
def on_postgres(tmp_path_factory):
    """The batch run once with the instance on a fresh database."""
    root = tmp_path_factory.mktemp("pg")
    spec = root / "pg-run.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    with pg_server.server() as server, pg_server.database(server) as url:
        env = {
            **os.environ,
            "VARIO_DATA_DIR": str(root / "data"),
            "DAGSTER_HOME": str(root / "home"),
            "VARIO_DAGSTER_POSTGRES_URL": url,
        }
        result = subprocess.run(
            [sys.executable, "-m", "dagster_project.cli", "batch", "run", str(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        yield root, env, url


def _rows(url: str, sql: str) -> list[tuple]:
    connection = psycopg2.connect(url.replace("+psycopg2", ""))
    with contextlib.closing(connection), connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def test_the_instance_is_on_postgres_and_holds_the_batchs_runs(on_postgres, monkeypatch):
    root, env, url = on_postgres
    assert "postgres_url" in (root / "home" / "dagster.yaml").read_text()
    assert url not in (root / "home" / "dagster.yaml").read_text()  # read from the environment
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    monkeypatch.setenv("VARIO_DAGSTER_POSTGRES_URL", url)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs()
        assert sorted(r.job_name for r in runs) == [
            "batch_manifest_job",
            "dataset_job",
            "release_job",
            "render_shard_job",
            "render_shard_job",
        ]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    statuses = _rows(url, "SELECT status, count(*) FROM runs GROUP BY status")
    assert statuses == [("SUCCESS", 5)]


def test_partitions_and_check_results_are_in_the_database(on_postgres):
    _, _, url = on_postgres
    partitions = {p for (p,) in _rows(url, "SELECT partition FROM dynamic_partitions")}
    assert {"pg-run", "pg-run~00000", "pg-run~00001"} <= partitions, partitions
    checks = _rows(
        url,
        "SELECT check_name, execution_status FROM asset_check_executions "
        "WHERE execution_status IS NOT NULL",
    )
    names = {name for name, _ in checks}
    assert {"coverage", "bias", "balance", "edge_cases", "novelty", "integrity"} <= names
    assert all(status in ("SUCCEEDED", "FAILED") for _, status in checks)


def test_the_instance_file_follows_the_setting_and_a_users_own_is_kept(tmp_path, monkeypatch):
    from dagster_project.instance import dagster_home, default_config

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VARIO_DAGSTER_POSTGRES_URL", "postgresql+psycopg2://u:secret@db/x")
    config = dagster_home() / "dagster.yaml"
    written = yaml.safe_load(config.read_text())
    assert written["storage"] == {
        "postgres": {"postgres_url": {"env": "VARIO_DAGSTER_POSTGRES_URL"}}
    }
    assert "secret" not in config.read_text()
    monkeypatch.delenv("VARIO_DAGSTER_POSTGRES_URL")
    dagster_home()
    assert config.read_text() == default_config()  # back on SQLite
    assert "storage" not in yaml.safe_load(config.read_text())
    config.write_text("telemetry:\n  enabled: true\n")
    monkeypatch.setenv("VARIO_DAGSTER_POSTGRES_URL", "postgresql+psycopg2://u@db/x")
    dagster_home()
    assert config.read_text() == "telemetry:\n  enabled: true\n"
