"""``/v1/jobs``: one job's record (parameters, seed, state, timing, error), its archive
(streamed, with ranges, an ETag that is its SHA-256, and that digest in ``Repr-Digest``), and
a preview of its first frame with its boxes."""

from __future__ import annotations

import base64
import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from generators.labels.preview import boxed_frame
from vario.api import status, working_copy
from vario.api.auth import require
from vario.api.models import ID_PATTERN, Job
from vario.api.problems import PROBLEM_RESPONSES, ApiError
from vario.run import shard as sh

router = APIRouter(
    prefix="/jobs",
    tags=["jobs"],
    dependencies=[Depends(require("read"))],
    responses=PROBLEM_RESPONSES,
)
JobId = Annotated[str, Path(pattern=ID_PATTERN, description="A job's id.")]


def _job(request: Request, job_id: str) -> dict[str, Any]:
    """The job's manifest row, its batch brought up to date when the data is on S3."""
    store, remote = request.app.state.store, working_copy.mirror(request)
    working_copy.batches(store, remote)
    found = status.find_job(store, job_id)
    if found is None:
        raise ApiError(404, f"no job {job_id!r}")
    working_copy.bring(store, remote, found["batch"])
    return found


def _archive(request: Request, job_id: str):
    """The job's archive; with the data on S3, fetched first when it is not here yet."""
    store = request.app.state.store
    path = status.find_archive(store, job_id)
    if path is None and working_copy.mirror(request) is not None:
        with contextlib.suppress(ApiError):
            _job(request, job_id)
            path = status.find_archive(store, job_id)
    if path is None:
        raise ApiError(404, f"job {job_id!r} has no archive (unknown, not rendered yet, or failed)")
    return path


@router.get("/{job_id}")
def show_job(request: Request, job_id: JobId) -> Job:
    store = request.app.state.store
    job = _job(request, job_id)
    record = status.job_record(store, job["batch"], job["shard"], job_id)
    archive = sh.archive_path(store.archive_dir(job["batch"]), job_id)
    done = record["status"] == "done"
    return Job(
        **job,
        **record,
        archive_sha256=status.archive_sha256(archive) if done else None,
        archive_bytes=archive.stat().st_size if done else None,
    )


@router.get(
    "/{job_id}/archive",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/zip": {}}},
        206: {"description": "The range asked for."},
        304: {"description": "The archive has the ETag given in If-None-Match."},
    },
)
async def download_archive(request: Request, job_id: JobId) -> Response:  # no thread hop
    """The job's archive. ``ETag`` is its SHA-256 (``If-None-Match`` with it: 304);
    ``Range: bytes=N-`` resumes a partial download (206)."""
    store = request.app.state.store
    path = status.find_archive(store, job_id) or await run_in_threadpool(
        _archive, request, job_id
    )  # fetching one from S3 blocks: on a thread, not the event loop
    digest = status.archive_sha256(path)
    etag = f'"{digest}"'
    headers = {
        "ETag": etag,
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:",
        "Cache-Control": "private, max-age=0",
    }
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return _Archive(
        path,
        media_type="application/zip",
        filename=path.name,
        headers=headers,
        stat_result=path.stat(),  # taken here: one thread hop less per download
    )


class _Archive(FileResponse):
    # a range's chunks are read on a thread: a few large ones, not many small (a whole
    # archive goes by sendfile under ``vario serve``: vario.api.sendfile)
    chunk_size = 1 << 20


@router.get("/{job_id}/preview.png", responses={200: {"content": {"image/png": {}}}})
def preview(request: Request, job_id: JobId) -> Response:
    """The job's first frame with its objects' boxes and categories drawn."""
    return Response(boxed_frame(_archive(request, job_id), 0), media_type="image/png")
