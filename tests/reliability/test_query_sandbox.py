"""``vario query`` as an attacker would use it: only read-only statements run, they read the
dataset's own tables and nothing else on the machine, and they stop at the time limit."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data folder with one objects table, and a file beside it that must stay unreadable."""
    root = tmp_path_factory.mktemp("sandbox")
    table = root / "data" / "tables" / "objects" / "batch=b" / "b~00000.parquet"
    table.parent.mkdir(parents=True)
    pq.write_table(
        pa.table({"category": ["duck", "duck", "mug"], "occlusion": [0.0, 0.5, 0.2]}), table
    )
    (root / "data" / "secret.txt").write_text("do not read")
    return root / "data"


def vario_query(data, sql: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", "query", sql],
        env={**os.environ, "VARIO_DATA_DIR": str(data), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_query_over_the_dataset_runs(data):
    result = vario_query(data, "SELECT category, count(*) AS n FROM objects GROUP BY 1 ORDER BY 1")
    assert result.returncode == 0, result.stderr
    rows = [
        line.split("│")[1:3]
        for line in result.stdout.splitlines()
        if "duck" in line or "mug" in line
    ]
    assert [[c.strip() for c in row] for row in rows] == [["duck", "2"], ["mug", "1"]]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM read_text('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
        ("SELECT * FROM read_csv('/proc/self/environ')", 'Cannot access file "/proc/self/environ"'),
        ("SELECT * FROM read_text('{data}/secret.txt')", "Cannot access file"),
        ("COPY (SELECT 1) TO '{data}/tables/x.csv'", "read-only queries only"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{data}/tables/x.csv'", "EXPLAIN ANALYZE runs"),
        ("SELECT 1; SELECT 2", "one statement at a time"),
        ("SET enable_external_access = true", "not SET"),
        ("ATTACH '{data}/x.db'", "not ATTACH"),
        ("INSTALL httpfs", "not LOAD"),
        ("SELECT FROM WHERE", "Parser Error"),
    ],
)
def test_anything_but_reading_the_dataset_is_refused_with_exit_2(data, sql, message):
    result = vario_query(data, sql.format(data=data))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in (data / "tables").iterdir()) == ["objects"]  # nothing written


def test_a_query_stops_at_the_time_limit(data):
    endless = "SELECT count(*) FROM range(1000000000000) a, range(1000) b"
    result = vario_query(data, endless, VARIO_QUERY_TIMEOUT="1")
    assert result.returncode == 2
    assert "query stopped after 1 s (VARIO_QUERY_TIMEOUT)" in result.stderr
