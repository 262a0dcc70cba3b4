"""``/v1/batches``: submit a batch spec (validated and planned as the CLI does, then dropped
into the inbox the Dagster sensor watches), list batches, follow one's progress and tests,
page through its jobs, read its report."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse

from generators.labels.archive import write_atomic
from generators.params import parse_yaml_model
from vario.api import status, working_copy
from vario.api.auth import require
from vario.api.models import (
    ID_PATTERN,
    JOB_STATE,
    BatchPage,
    BatchStatus,
    BatchSummary,
    JobPage,
    Submitted,
)
from vario.api.problems import PROBLEM_RESPONSES, ApiError
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec, SpecError
from vario.quality import checks as quality
from vario.quality.report import write_report
from vario.store.layout import DataStore

router = APIRouter(prefix="/batches", tags=["batches"], responses=PROBLEM_RESPONSES)
Name = Annotated[str, Path(pattern=ID_PATTERN, description="A batch's name.")]
SPEC_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml")


def spec_schemas() -> dict[str, dict]:
    """``BatchSpec`` and the models it holds as OpenAPI components (the body is read as JSON
    or YAML by the route itself, so FastAPI does not add them)."""
    schema = BatchSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs", {}), "BatchSpec": schema}


_SPEC_BODY = {
    "content": {
        kind: {"schema": {"$ref": "#/components/schemas/BatchSpec"}} for kind in SPEC_TYPES
    },
    "required": True,
}


def _store(request: Request) -> DataStore:
    return request.app.state.store


@router.post(
    "",
    status_code=202,
    openapi_extra={"requestBody": _SPEC_BODY},
    dependencies=[Depends(require("submit"))],
)
async def submit_batch(
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Submitted:
    """A batch spec (JSON or YAML), validated and planned whole (every job) before it is
    queued; 422 names each bad field, 409 a name taken by another spec. The same spec
    again is answered as recorded and queues nothing. With ``Idempotency-Key``, a retry of
    the same request gets the same answer; the key with another body is a 422."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if kind not in SPEC_TYPES:
        raise ApiError(415, f"a batch spec is one of {', '.join(SPEC_TYPES)} (got {kind!r})")
    raw = await request.body()
    store = _store(request)
    remembered = _idempotent(store, idempotency_key, raw)
    if remembered is not None:
        response.status_code = remembered["status"]
        return Submitted.model_validate(remembered["body"])
    spec = parse_yaml_model(BatchSpec, raw, SpecError)
    planned = plan(spec)
    try:
        recorded = store.recorded(planned.spec)
    except SpecError as exc:
        raise ApiError(409, exc.messages[0].split(": ", 1)[-1]) from None
    answer = Submitted(
        name=spec.name,
        jobs=planned.job_count,
        shards=len(planned.shards),
        state="recorded" if recorded else "queued",
    )
    if recorded:
        response.status_code = 200
    else:
        working_copy.submit(store, working_copy.mirror(request), json.loads(spec.model_dump_json()))
    response.headers["Location"] = f"/v1/batches/{spec.name}"
    _remember(store, idempotency_key, raw, response.status_code, answer)
    return answer


def _idempotency_path(store: DataStore, key: str):
    return store.root / "api" / "idempotency" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def _idempotent(store: DataStore, key: str | None, raw: bytes) -> dict | None:
    if key is None:
        return None
    path = _idempotency_path(store, key)
    if not path.exists():
        return None
    remembered = json.loads(path.read_text())
    if remembered["request"] != hashlib.sha256(raw).hexdigest():
        raise ApiError(422, "this Idempotency-Key was used with another request body")
    return remembered


def _remember(store: DataStore, key: str | None, raw: bytes, code: int, answer: Submitted) -> None:
    if key is None:
        return
    path = _idempotency_path(store, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "request": hashlib.sha256(raw).hexdigest(),
        "status": code,
        "body": answer.model_dump(mode="json"),
    }
    write_atomic(path, json.dumps(record).encode())


@router.get("", dependencies=[Depends(require("read"))])
def list_batches(
    request: Request,
    cursor: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> BatchPage:
    """Recorded batches by name, ``limit`` a page, after the name ``cursor``."""
    store = _store(request)
    known = working_copy.batches(store, working_copy.mirror(request))
    names = [n for n in known if cursor is None or n > cursor]
    page = []
    for name in names[:limit]:
        jobs = status.job_count(store, name)
        page.append(BatchSummary(name=name, generator=status.generator_of(store, name), jobs=jobs))
    more = len(names) > limit
    return BatchPage(batches=page, next_cursor=page[-1].name if more else None)


def _state(store: DataStore, name: str, rendering: str, tests: list | None) -> str:
    if rendering == "rendered":
        return "done" if tests is not None else "rendered"
    return "cancelled" if store.cancelled(name) else rendering


@router.get("/{name}", dependencies=[Depends(require("read"))], response_model=BatchStatus)
async def show_batch(request: Request, name: Name) -> Response:  # polled: no thread hop
    """Counts by state, progress, time left and the dataset tests of a recorded batch:
    ``pending``, ``running``, ``rendered`` (every job ended, the dataset tests not run yet),
    ``done`` (tested), ``cancelled`` (jobs left pending). A spec still in the inbox is
    ``queued``, one the sensor refused ``rejected`` (with why). A recorded batch's answer is
    at most ``status.FRESH_SECONDS`` old: it is rendered once for all who poll it."""
    store, remote = _store(request), working_copy.mirror(request)
    if name in working_copy.batches(store, remote):
        working_copy.bring(store, remote, name)
        key = ("status", str(store.root), name)
        body = status.fresh(key, lambda: _batch_status(store, name).model_dump_json().encode())
        return Response(body, media_type="application/json")
    if working_copy.queued(store, remote, name):
        return BatchStatus(name=name, state="queued")
    rejected = working_copy.rejection(store, remote, name)
    if rejected is not None:
        return BatchStatus(name=name, state="rejected", errors=rejected.read_text().splitlines())
    raise ApiError(404, f"no batch {name!r}")


def _batch_status(store: DataStore, name: str) -> BatchStatus:
    now = status.progress(store, name)
    tests = status.test_results(store, name)
    return BatchStatus(
        name=name,
        generator=status.generator_of(store, name),
        jobs=now["jobs"],
        state=_state(store, name, now["state"], tests),
        counts=now["counts"],
        progress=now["progress"],
        eta_seconds=now["eta_seconds"],
        tests=tests,
    )


@router.post("/{name}/cancel", status_code=202, dependencies=[Depends(require("submit"))])
def cancel_batch(request: Request, name: Name) -> BatchStatus:
    """Stop a batch: a queued spec leaves the inbox; a recorded batch's shard runs stop
    before their next job (rendered jobs are kept, pending ones stay pending). Cancelling
    it again changes nothing; a batch that is done cannot be cancelled (409)."""
    store = _store(request)
    queued = store.inbox / f"{name}.yaml"
    if name not in working_copy.batches(store, working_copy.mirror(request)):
        try:
            queued.unlink()
        except FileNotFoundError:
            raise ApiError(404, f"no batch {name!r} queued or recorded") from None
        return BatchStatus(name=name, state="cancelled")
    if status.progress(store, name)["state"] == "rendered" and not store.cancelled(name):
        raise ApiError(409, f"batch {name!r} has no job left to render")
    store.cancel(name)
    remote = working_copy.mirror(request)
    if remote is not None:  # where the shard runs, on any machine, look for it
        remote.publish(store.cancel_path(name))
    status.forget(store, name)
    return _batch_status(store, name)


def _recorded(request: Request, name: str) -> DataStore:
    """The store, with the recorded batch ``name`` up to date in it (else 404)."""
    store, remote = _store(request), working_copy.mirror(request)
    if name not in working_copy.batches(store, remote):
        raise ApiError(404, f"no recorded batch {name!r}")
    working_copy.bring(store, remote, name)
    return store


@router.get("/{name}/jobs", dependencies=[Depends(require("read"))])
def list_jobs(
    request: Request,
    name: Name,
    cursor: Annotated[int, Query(ge=-1, description="The last job index of the page before.")] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    status_filter: Annotated[JOB_STATE | None, Query(alias="status")] = None,
) -> JobPage:
    """The batch's jobs in job order, ``limit`` a page, with their state."""
    store = _recorded(request, name)
    rows, next_cursor = status.jobs_page(store, name, cursor, limit, status_filter)
    return JobPage(jobs=rows, next_cursor=next_cursor)


@router.get(
    "/{name}/report",
    response_class=FileResponse,
    responses={200: {"content": {"text/html": {}}}},
    dependencies=[Depends(require("read"))],
)
def batch_report(request: Request, name: Name) -> FileResponse:
    """The batch's HTML dataset report (written from its recorded tests when missing)."""
    store = _recorded(request, name)
    path = store.root / "reports" / name / "report.html"
    if not path.exists():
        results = quality.recorded_results(store, name)
        if results is None:
            raise ApiError(404, f"batch {name!r} has no dataset test results yet")
        path, _ = write_report(store, name, results)
    return FileResponse(path, media_type="text/html")
