"""A batch's label tables exported as one Parquet file per table: ``exports/BATCH/TABLE.parquet``.

Each file is streamed: DuckDB reads the batch's rows as Arrow record batches which pyarrow's
Parquet writer appends, so memory holds about one row group, not the table (a batch's
objects can be millions of rows). The file is written under a temporary name, synced, and
renamed only when complete (``archive.atomic_path``): a failed export leaves the previous
file or none, never part of one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from generators.labels import archive as arc
from vario.batch.spec import checked_batch
from vario.store.layout import DataStore
from vario.store.views import VIEWS, connect

TABLES = ("jobs", *VIEWS)
ROW_GROUP_ROWS = 65_536  # a row group, and the rows held at once: tens of MB at most


class Exported(NamedTuple):
    path: Path
    rows: int  # as the written file's footer states


def export_dir(store: DataStore, batch: str) -> Path:
    return store.root / "exports" / checked_batch(batch)


def export_batch(store: DataStore, batch: str) -> dict[str, Exported]:
    """Every label table's rows of ``batch`` (with the ``batch`` column, as the views give
    them), one file per table."""
    con = connect(store)
    con.execute("SET enable_progress_bar = false")  # a streamed query stays open for seconds
    folder = export_dir(store, batch)
    return {name: _export(con, name, batch, folder / f"{name}.parquet") for name in TABLES}


def _export(con: duckdb.DuckDBPyConnection, table: str, batch: str, path: Path) -> Exported:
    """One view's rows of ``batch`` streamed into ``path`` (zstd); the batch is a bound
    parameter, never SQL text."""
    query = con.sql(f"SELECT * FROM {table} WHERE batch = $batch", params={"batch": batch})
    with (
        query.to_arrow_reader(ROW_GROUP_ROWS) as reader,
        arc.atomic_path(path) as partial,  # closed (its footer written) before the rename
        pq.ParquetWriter(partial, reader.schema, compression="zstd") as writer,
    ):
        for group in _row_groups(reader, ROW_GROUP_ROWS):
            writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
    return Exported(path, pq.read_metadata(path).num_rows)


def _row_groups(reader: pa.RecordBatchReader, rows: int) -> Iterator[pa.Table]:
    """The reader's batches cut and gathered into tables of ``rows`` rows (the last may hold
    fewer): DuckDB ends a batch at every shard file, and a row group per small shard would
    make a file slow to read."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in reader:
        while held + batch.num_rows >= rows:
            take = rows - held
            yield pa.Table.from_batches([*pending, batch.slice(0, take)], reader.schema)
            pending, held, batch = [], 0, batch.slice(take)
        if batch.num_rows:
            pending.append(batch)
            held += batch.num_rows
    if pending:
        yield pa.Table.from_batches(pending, reader.schema)
