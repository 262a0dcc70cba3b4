"""The dataset as DuckDB views over every shard's Parquet files.

DuckDB runs in memory and only reads the Parquet files, so any number of processes can query
while runs write new shards (no shared ``.duckdb`` file, no lock). Tables are hive-partitioned
by ``batch``: a query filtered on ``batch`` reads only that batch's files.
"""

from __future__ import annotations

import glob

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from generators.labels import tables
from vario.store.layout import DataStore

VIEWS = {"frames": tables.FRAMES, "objects": tables.OBJECTS, "events": tables.EVENTS}
BATCH_PARTITIONING = pads.partitioning(pa.schema([("batch", pa.string())]), flavor="hive")


def connect(
    store: DataStore, remote: tuple[pafs.FileSystem, str] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with views ``jobs``, ``frames``, ``objects``, ``events``.

    ``remote`` (a pyarrow filesystem and the data's base path on it, e.g. S3) reads the
    tables there instead of in ``store``: DuckDB scans them as Arrow datasets, with column
    projection and filters pushed down, hive-partitioned by ``batch`` and with the files'
    schemas unified by name, as ``union_by_name`` does locally.
    """
    con = duckdb.connect(":memory:")
    for name in ("jobs", *VIEWS):
        pattern = store.table_glob(name)
        files = _remote_files(remote, name) if remote else []
        if files:
            con.register(f"_{name}_remote", _remote_dataset(remote, name, files))
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_remote")
        elif not remote and glob.glob(pattern):
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


def _remote_files(remote: tuple[pafs.FileSystem, str], name: str) -> list[str]:
    """The table's Parquet files under the remote base, one listing for all batches."""
    filesystem, base = remote
    selector = pafs.FileSelector(f"{base}/tables/{name}", allow_not_found=True, recursive=True)
    infos = filesystem.get_file_info(selector)
    return sorted(
        i.path for i in infos if i.extension == "parquet" and i.type == pafs.FileType.File
    )


def _remote_dataset(
    remote: tuple[pafs.FileSystem, str], name: str, files: list[str]
) -> pads.Dataset:
    """The table's files as one Arrow dataset over the union of their schemas: batches of
    different generators have different ``param_*`` columns, and a pyarrow dataset otherwise
    takes the first file's schema (dropping the others' columns, or failing on them). Every
    file's footer is read, as DuckDB's ``union_by_name`` does; a column a file lacks reads as
    NULL, and ``batch`` is a string whatever the batch's name looks like."""
    filesystem, base = remote
    factory = pads.FileSystemDatasetFactory(
        filesystem,
        files,
        pads.ParquetFileFormat(),
        pads.FileSystemFactoryOptions(
            partition_base_dir=f"{base}/tables/{name}", partitioning=BATCH_PARTITIONING
        ),
    )
    return factory.finish(factory.inspect(promote_options="permissive", fragments=None))


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
