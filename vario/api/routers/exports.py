"""``/v1/batches/{name}/exports`` and ``/v1/exports``: a batch, or a slice of it, exported in
a training format (``vario.export``) on the server, followed, and its files downloaded.

An export's id is a digest of its request, so the same request is the same export: asked
again, it is answered from where it is (running, done or failed), never made twice. It runs
on a thread of the server into ``<data>/exports/<id>`` (a folder that appears whole, as
every export's does); a server stopped midway leaves nothing and the request can be made
again."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from vario.api import working_copy
from vario.api.auth import require
from vario.api.models import ID_PATTERN
from vario.api.problems import PROBLEM_RESPONSES, ApiError
from vario.export.run import FORMATS, MANIFEST, export_batch
from vario.export.select import ExportRequestError, parse_split
from vario.store.layout import DataStore

router = APIRouter(tags=["exports"], responses=PROBLEM_RESPONSES)
Name = Annotated[str, Path(pattern=ID_PATTERN, description="A batch's name.")]
ExportId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="An export's id.")]
ExportFormat = Literal[tuple(FORMATS)]  # type: ignore[valid-type]  # the formats there are
_running: dict[str, threading.Thread] = {}
_failed: dict[str, str] = {}
_lock = threading.Lock()


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: ExportFormat
    where: str | None = Field(None, max_length=10_000, description="A SQL slice of objects.")
    split: str = Field("train=0.8,val=0.1,test=0.1", max_length=200)
    split_seed: int = Field(0, ge=0, le=2**32 - 1)
    frames: str = Field("every", max_length=20, description="every, first or N.")


class ExportStatus(BaseModel):
    id: str
    batch: str
    state: Literal["running", "done", "failed"]
    request: ExportRequest
    summary: dict[str, Any] | None = Field(None, description="Counts per split and category.")
    files: list[str] | None = Field(None, description="Every file, for /files/{path}.")
    error: str | None = None


def _folder(store: DataStore, export_id: str) -> FilePath:
    return store.root / "exports" / export_id


def _status(store: DataStore, export_id: str) -> ExportStatus | None:
    request_file = _folder(store, export_id).with_suffix(".request.json")
    if not request_file.exists():
        return None
    asked = json.loads(request_file.read_text())
    known = {"id": export_id, "batch": asked["batch"], "request": asked["request"]}
    # Running until its thread ends: made and, with the data on S3, published. Read without
    # the lock (one dict look-up each), since ``start_export`` calls this holding it.
    thread = _running.get(export_id)
    if thread is not None and thread.is_alive():
        return ExportStatus(**known, state="running")
    manifest = _folder(store, export_id) / MANIFEST
    if manifest.exists():
        recorded = json.loads(manifest.read_text())
        root = _folder(store, export_id)
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        return ExportStatus(**known, state="done", summary=recorded["summary"], files=files)
    error = _failed.get(export_id, "stopped before it was done (ask again to retry)")
    return ExportStatus(**known, state="failed", error=error)


def _run(
    store: DataStore,
    remote: working_copy.Mirror | None,
    export_id: str,
    batch: str,
    asked: ExportRequest,
) -> None:
    try:
        working_copy.bring(store, remote, batch)
        summary = export_batch(
            store,
            batch,
            asked.format,
            _folder(store, export_id),
            where=asked.where,
            split=parse_split(asked.split),
            split_seed=asked.split_seed,
            frames=asked.frames,
        )
        if remote is not None:
            remote.publish_tree(summary.out)
    except Exception as exc:  # noqa: BLE001 (recorded for GET /exports/{id})
        with _lock:
            _failed[export_id] = f"{type(exc).__name__}: {exc}"


@router.post("/batches/{name}/exports", status_code=202, dependencies=[Depends(require("submit"))])
def start_export(request: Request, name: Name, body: ExportRequest) -> ExportStatus:
    """Start (or find) the export of ``name`` that ``body`` asks for (422 for a bad split);
    a ``where`` that does not run on the objects view makes it ``failed``, with why."""
    store: DataStore = request.app.state.store
    remote = working_copy.mirror(request)
    if name not in working_copy.batches(store, remote):
        raise ApiError(404, f"no recorded batch {name!r}")
    try:
        parse_split(body.split)
    except ExportRequestError as exc:
        raise ApiError(422, str(exc)) from None
    asked = {"batch": name, "request": body.model_dump(mode="json")}
    export_id = hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:16]
    with _lock:
        found = _status(store, export_id) if export_id not in _failed else None
        if found is not None and found.state != "failed":
            return found
        _failed.pop(export_id, None)
        request_file = _folder(store, export_id).with_suffix(".request.json")
        request_file.parent.mkdir(parents=True, exist_ok=True)
        request_file.write_text(json.dumps(asked))
        thread = threading.Thread(
            target=_run, args=(store, remote, export_id, name, body), daemon=True
        )
        _running[export_id] = thread
        thread.start()
    return ExportStatus(id=export_id, batch=name, state="running", request=body)


@router.get("/exports/{export_id}", dependencies=[Depends(require("read"))])
def show_export(request: Request, export_id: ExportId) -> ExportStatus:
    found = _status(request.app.state.store, export_id)
    if found is None:
        raise ApiError(404, f"no export {export_id!r}")
    return found


@router.get(
    "/exports/{export_id}/files/{path:path}",
    response_class=FileResponse,
    dependencies=[Depends(require("read"))],
)
def export_file(request: Request, export_id: ExportId, path: str) -> FileResponse:
    """One file of a finished export, by its path in ``files`` (ranges as for archives)."""
    root = _folder(request.app.state.store, export_id)
    if "\x00" in path or not (root / MANIFEST).exists():
        raise ApiError(404, f"no finished export {export_id!r}")
    target = (root / path).resolve()
    if not target.is_relative_to(root.resolve()) or not target.is_file():
        raise ApiError(404, f"export {export_id} has no file {path!r}")
    return FileResponse(target)
