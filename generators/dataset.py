"""The dataset as DuckDB views over every shard's Parquet files.

DuckDB runs in memory and only reads the Parquet files, so any number of processes can query
while runs write new shards (no shared ``.duckdb`` file, no lock). Tables are hive-partitioned
by ``batch``: a query filtered on ``batch`` reads only that batch's files.
"""

from __future__ import annotations

import glob

import duckdb
import pyarrow as pa

from generators import tables
from generators.datastore import DataStore

VIEWS = {"frames": tables.FRAMES, "objects": tables.OBJECTS, "events": tables.EVENTS}


def connect(store: DataStore) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with views ``jobs``, ``frames``, ``objects``, ``events``."""
    con = duckdb.connect(":memory:")
    for name in ("jobs", *VIEWS):
        pattern = store.table_glob(name)
        if glob.glob(pattern):
            con.execute(
                f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{pattern}', "
                "hive_partitioning = true, union_by_name = true)"
            )
        else:  # an empty dataset still has every view, with its columns
            schema = VIEWS.get(name, tables.JOBS_COMMON)
            empty = schema.empty_table().append_column("batch", pa.array([], pa.string()))
            con.register(f"_{name}_empty", empty)
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_empty")
    return con


def summary(con: duckdb.DuckDBPyConnection) -> dict:
    """Whole-dataset counts and render time."""
    jobs, ok, failed, render = con.execute(
        "SELECT count(*), count(*) FILTER (status = 'ok'), count(*) FILTER (status = 'failed'), "
        "coalesce(sum(render_seconds), 0) FROM jobs"
    ).fetchall()[0]
    frames = con.execute("SELECT count(*) FROM frames").fetchall()[0][0]
    objects = con.execute("SELECT count(*) FROM objects").fetchall()[0][0]
    return {
        "jobs": jobs,
        "jobs_ok": ok,
        "jobs_failed": failed,
        "frames": frames,
        "objects": objects,
        "render_seconds": round(render, 3),
    }
