"""The dataset as DuckDB views over every shard's Parquet files.

DuckDB runs in memory and only reads the Parquet files, so any number of processes can query
while runs write new shards (no shared ``.duckdb`` file, no lock). Tables are hive-partitioned
by ``batch``: a query filtered on ``batch`` reads only that batch's files.

Real datasets and model predictions (``vario.ingest``, docs/real-data.md) are views too:
``frames`` and ``objects`` hold the synthetic rows and, unioned by name, the *current* version
of every real dataset, told apart by ``source`` ('synthetic' or 'real'; a real row's ``batch``
is its dataset's name); ``real_frames`` and ``real_objects`` hold every version of every real
dataset; ``predictions`` the current version of each model's predictions on each dataset and
``predictions_all`` every version. Which version is current is read when the connection is
made: a connection sees the versions current then (versions are immutable and never removed,
so what it reads stays there). Every view exists, with its columns, on an empty data folder.
"""

from __future__ import annotations

import glob
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs

from generators.labels import tables
from vario.store.layout import DataStore

if TYPE_CHECKING:
    import pyarrow.dataset as pads

VIEWS = {"frames": tables.FRAMES, "objects": tables.OBJECTS, "events": tables.EVENTS}

# What ``vario.ingest`` writes: a real dataset version's rows (the frames and objects tables'
# columns that real data has, plus where each row came from in the COCO file) and a model's
# predictions. ``dataset``/``version`` and ``model``/``dataset``/``version`` come from the
# folders' names (hive partitions), never from the files.
REAL_FRAMES = pa.schema(
    [pa.field("batch_id", pa.string()), pa.field("job_id", pa.string())]
    + [pa.field("frame", pa.int32()), pa.field("width", pa.int32()), pa.field("height", pa.int32())]
    + [pa.field("brightness", pa.float32()), pa.field("contrast", pa.float32())]
    + [pa.field("n_objects", pa.int32())]
    + [pa.field("rgb_path", pa.string()), pa.field("rgb_sha256", pa.string())]
    + [pa.field("image_id", pa.int64()), pa.field("file_name", pa.string())]
)
REAL_OBJECTS = pa.schema(
    [pa.field("batch_id", pa.string()), pa.field("job_id", pa.string())]
    + [pa.field("frame", pa.int32()), pa.field("instance_id", pa.int32())]
    + [pa.field("category", pa.string())]
    + [pa.field(n, pa.int32()) for n in ("box_x_min", "box_y_min", "box_x_max", "box_y_max")]
    + [pa.field("visible_pixels", pa.int64()), pa.field("mask_rle", pa.string())]
    + [pa.field("annotation_id", pa.int64())]
)
PREDICTIONS = pa.schema(
    [pa.field("prediction_id", pa.int64()), pa.field("job_id", pa.string())]
    + [pa.field("frame", pa.int32()), pa.field("category", pa.string())]
    + [pa.field("score", pa.float64())]
    + [pa.field(n, pa.float64()) for n in ("box_x", "box_y", "box_w", "box_h")]
    + [pa.field("mask_rle", pa.string())]
)
REAL_TABLES = {"frames": REAL_FRAMES, "objects": REAL_OBJECTS}
_REAL_KEYS = ("dataset", "version")
_PREDICTION_KEYS = ("model", "dataset", "version")


def connect(
    store: DataStore, remote: tuple[pafs.FileSystem, str] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with views ``jobs``, ``frames``, ``objects``, ``events`` and
    ``real_frames``, ``real_objects``, ``predictions``, ``predictions_all``.

    ``remote`` (a pyarrow filesystem and the data's base path on it, e.g. S3) reads the
    tables there instead of in ``store``: DuckDB scans them as Arrow datasets, with column
    projection and filters pushed down, hive-partitioned by ``batch`` and with the files'
    schemas unified by name, as ``union_by_name`` does locally. Real datasets and
    predictions are read from ``store`` in either case.
    """
    con = duckdb.connect(":memory:")
    for name in ("jobs", *VIEWS):
        pattern = store.table_glob(name)
        files = _remote_files(remote, name) if remote else []
        if files:
            con.register(f"_{name}_remote", _remote_dataset(remote, name, files))
            synthetic = f"_{name}_remote"
        elif not remote and glob.glob(pattern):
            synthetic = (
                f"read_parquet({_literal(pattern)}, hive_partitioning = true, "
                f"union_by_name = true, hive_types = {{'batch': 'VARCHAR'}})"
            )
        else:  # an empty dataset still has every view, with its columns
            schema = VIEWS.get(name, tables.JOBS_COMMON)
            empty = _no_rows(schema.append(pa.field("batch", pa.string())))
            con.register(f"_{name}_empty", empty)
            synthetic = f"_{name}_empty"
        if name in REAL_TABLES:
            _real_views(con, store, name, synthetic)
        else:
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM {synthetic}")
    _prediction_views(con, store)
    return con


def _literal(value: str | list[str]) -> str:
    """A path, or a list of paths, as a SQL literal (a data folder's path may hold quotes)."""
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return "'" + value.replace("'", "''") + "'"


def _hive_read(files: str | list[str], keys: tuple[str, ...]) -> str:
    """``read_parquet`` of ``files`` (a glob or a list), the folder keys as strings whatever
    a name looks like (a dataset ``2024`` stays '2024')."""
    types = ", ".join(f"'{k}': 'VARCHAR'" for k in keys)
    return (
        f"read_parquet({_literal(files)}, hive_partitioning = true, union_by_name = true, "
        f"hive_types = {{{types}}})"
    )


def _empty(con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema, keys: tuple) -> str:
    """A registered empty table with ``schema``'s columns and the folder keys."""
    for key in keys:
        schema = schema.append(pa.field(key, pa.string()))
    con.register(name, _no_rows(schema))
    return name


def _no_rows(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` with no rows. (``Schema.empty_table`` imports pandas: 0.4 s of
    every connection's start.)"""
    return pa.Table.from_batches([], schema=schema)


def _real_views(
    con: duckdb.DuckDBPyConnection, store: DataStore, name: str, synthetic: str
) -> None:
    """``real_<name>`` (every version of every real dataset) and ``<name>``: the synthetic
    rows and the real datasets' current versions, unioned by name (a column one side lacks
    is NULL on that side's rows)."""
    schema = REAL_TABLES[name]
    pattern = str(store.real_root / "dataset=*" / "version=*" / f"{name}.parquet")
    every = (
        _hive_read(pattern, _REAL_KEYS)
        if glob.glob(pattern)
        else _empty(con, f"_real_{name}_empty", schema, _REAL_KEYS)
    )
    current = _real_current_files(store, name)
    current_rows = (
        _hive_read(current, _REAL_KEYS)
        if current
        else _empty(con, f"_real_{name}_current_empty", schema, _REAL_KEYS)
    )
    con.execute(
        f"CREATE VIEW real_{name} AS SELECT dataset, version, * EXCLUDE (dataset, version), "
        f"dataset AS batch, 'real' AS source FROM {every}"
    )
    con.execute(
        f"CREATE VIEW {name} AS SELECT *, 'synthetic' AS source FROM {synthetic} "
        f"UNION ALL BY NAME SELECT * EXCLUDE (dataset), dataset AS batch, 'real' AS source "
        f"FROM {current_rows}"
    )


def _real_current_files(store: DataStore, name: str) -> list[str]:
    """The ``name`` table's file of each real dataset's current version."""
    files = []
    for dataset in store.real_datasets():
        try:
            version = store.real_current(dataset)
            path = store.real_version_dir(dataset, version) / f"{name}.parquet"
        except (ValueError, TypeError):  # a folder no ingest wrote: not a dataset's
            continue
        if path.exists():
            files.append(str(path))
    return files


def _prediction_views(con: duckdb.DuckDBPyConnection, store: DataStore) -> None:
    """``predictions_all`` (every version) and ``predictions`` (each model's current version
    on each dataset)."""
    root = store.predictions_root
    pattern = str(root / "model=*" / "dataset=*" / "version=*" / "predictions.parquet")
    current = []
    for path in sorted(root.glob("model=*/dataset=*/current")) if root.exists() else []:
        model = path.parent.parent.name.removeprefix("model=")
        dataset = path.parent.name.removeprefix("dataset=")
        try:
            version = store.predictions_current(model, dataset)
            file = store.predictions_version_dir(model, dataset, version) / "predictions.parquet"
        except (ValueError, TypeError):  # a folder no ingest wrote: not a dataset's
            continue
        if file.exists():
            current.append(str(file))
    for view, files in (("predictions_all", pattern), ("predictions", current)):
        source = (
            _hive_read(files, _PREDICTION_KEYS)
            if (glob.glob(files) if isinstance(files, str) else files)
            else _empty(con, f"_{view}_empty", PREDICTIONS, _PREDICTION_KEYS)
        )
        con.execute(
            f"CREATE VIEW {view} AS SELECT model, dataset, version, "
            f"* EXCLUDE (model, dataset, version) FROM {source}"
        )


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
    import pyarrow.dataset as pads  # here: it imports pandas (0.3 s at every load)

    filesystem, base = remote
    partitioning = pads.partitioning(pa.schema([("batch", pa.string())]), flavor="hive")
    factory = pads.FileSystemDatasetFactory(
        filesystem,
        files,
        pads.ParquetFileFormat(),
        pads.FileSystemFactoryOptions(
            partition_base_dir=f"{base}/tables/{name}", partitioning=partitioning
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
