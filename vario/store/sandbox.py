"""Read-only SQL over the dataset, safe to run for anyone: the CLI's ``vario query`` and,
later, the HTTP API.

A query is one ``SELECT`` (``WITH``, ``FROM``, ``DESCRIBE``, ``SUMMARIZE``) or an ``EXPLAIN``
without ``ANALYZE`` (which would run what it explains). It runs on a DuckDB connection over
the dataset's views that can read the data folder's tables (label tables, real datasets,
predictions) and nothing else (no other file, no extension, no network), with memory and
thread limits, locked so the query cannot lift them, a time limit after which it is
interrupted, and a cap on the rows it returns.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

import duckdb
import pyarrow.fs as pafs

from generators.settings import settings
from vario.store.layout import DataStore
from vario.store.views import connect

_EXPLAIN_ANALYZE = re.compile(r"^\s*explain\s+analy[sz]e\b", re.IGNORECASE)


class QueryRefused(ValueError):
    """A statement the sandbox does not run (it says which and why)."""


class QueryTimedOut(RuntimeError):
    pass


def check_statement(sql: str) -> None:
    """Refuse anything but one read-only statement."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(str(exc).splitlines()[0]) from None
    if len(statements) != 1:
        raise QueryRefused(f"one statement at a time ({len(statements)} given)")
    statement = statements[0]
    kind = statement.type
    if kind == duckdb.StatementType.EXPLAIN and _EXPLAIN_ANALYZE.match(statement.query):
        raise QueryRefused("EXPLAIN ANALYZE runs the statement it explains; use EXPLAIN")
    if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
        raise QueryRefused(f"read-only queries only (SELECT, WITH, EXPLAIN), not {kind.name}")


def connection(
    store: DataStore, remote: tuple[pafs.FileSystem, str] | None = None
) -> duckdb.DuckDBPyConnection:
    """The dataset's views on a connection that reads only the data folder's tables, real
    datasets and predictions."""
    con = connect(store, remote)
    limits = settings()
    readable = [store.root / "tables", store.real_root, store.predictions_root]
    con.execute("SET allowed_directories = $1", [[f"{folder}/" for folder in readable]])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute(f"SET memory_limit = '{int(limits.query_memory_mb)}MB'")
    con.execute(f"SET threads = {int(limits.query_threads)}")
    con.execute("SET lock_configuration = true")
    return con


@contextlib.contextmanager
def time_limit(con: duckdb.DuckDBPyConnection, seconds: float | None = None) -> Iterator[None]:
    """Interrupt whatever ``con`` runs once ``seconds`` (``VARIO_QUERY_TIMEOUT``) have passed."""
    seconds = settings().query_timeout if seconds is None else seconds
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(seconds, stop)
    timer.start()
    try:
        yield
    except duckdb.InterruptException:
        if fired.is_set():
            raise QueryTimedOut(
                f"query stopped after {seconds:g} s (VARIO_QUERY_TIMEOUT)"
            ) from None
        raise
    finally:
        timer.cancel()


def relation(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyRelation:
    """The query's result, checked first, at most ``VARIO_QUERY_MAX_ROWS`` rows."""
    check_statement(sql)
    return con.sql(sql).limit(settings().query_max_rows)
