"""``/v1/query``: one read-only SQL statement over the dataset's views, in the same sandbox
and limits as ``vario query``; rows as JSON, or as an Arrow IPC stream."""

from __future__ import annotations

import duckdb
import pyarrow as pa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from vario.api.auth import require
from vario.api.models import QueryRequest, QueryResult
from vario.api.problems import PROBLEM_RESPONSES, ApiError
from vario.store import sandbox

router = APIRouter(
    tags=["query"], dependencies=[Depends(require("read"))], responses=PROBLEM_RESPONSES
)
ARROW = "application/vnd.apache.arrow.stream"


@router.post(
    "/query",
    response_model=QueryResult,
    responses={200: {"content": {ARROW: {}}}, 408: {"description": "The query took too long."}},
)
def query(request: Request, body: QueryRequest) -> Response:
    """At most ``max_rows`` rows (and ``VARIO_QUERY_MAX_ROWS``); ``truncated`` says whether
    more were there. 422: a statement the sandbox refuses or that does not run."""
    con = sandbox.connection(request.app.state.store)
    try:
        with sandbox.time_limit(con):
            table = sandbox.relation(con, body.sql).limit(body.max_rows + 1).to_arrow_table()
    except sandbox.QueryRefused as exc:
        raise ApiError(422, f"sql: {exc}") from None
    except sandbox.QueryTimedOut as exc:
        raise ApiError(408, str(exc)) from None
    except duckdb.Error as exc:
        raise ApiError(422, f"sql: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    truncated = table.num_rows > body.max_rows
    table = table.slice(0, body.max_rows)
    if body.format == "arrow":
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW)
    rows = [list(r.values()) for r in table.to_pylist()]
    result = QueryResult(columns=table.column_names, rows=rows, truncated=truncated)
    return Response(result.model_dump_json(), media_type="application/json")
