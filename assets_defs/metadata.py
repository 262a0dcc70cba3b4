"""Metadata the assets attach to their materializations, written one way everywhere: Markdown
tables, and the column schema and row count Dagster shows for a table asset."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa


def markdown_table(rows: list[dict]) -> str:
    """Rows as a Markdown table (the UI renders it), ``(none)`` when there are none."""
    if not rows:
        return "(none)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines)


def table_metadata(schema: pa.Schema, rows: int) -> dict:
    """Dagster's standard table metadata: the columns with their Arrow types
    (``dagster/column_schema``) and the rows (``dagster/row_count``), which the UI shows on
    the asset's page and charts across materializations."""
    columns = [dg.TableColumn(f.name, str(f.type)) for f in schema]
    return {
        "dagster/column_schema": dg.TableSchema(columns=columns),
        "dagster/row_count": rows,
    }
