"""``Batch``: follow a submitted batch, page through its jobs, download its archives.

A download writes ``<job id>.zip.part`` and renames it once its SHA-256 equals the one the
server gives (the archive's ``ETag``); an interrupted one resumes from the part's size with
``Range`` (``If-Range``: the same archive, or it starts over); a complete file is checked by
asking with ``If-None-Match`` its own digest, and the server answers 304 without sending it.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vario_client.errors import ApiError
from vario_client.models import BatchStatus, JobRow
from vario_client.transfer import Failure, Transfers


@dataclass(frozen=True)
class DownloadSummary:
    downloaded: int  # archives transferred (whole or resumed)
    skipped: int  # archives already complete
    bytes: int  # bytes transferred


class Batch:
    def __init__(self, client, name: str):
        self.client = client
        self.name = name
        self.status: BatchStatus | None = None

    def __repr__(self) -> str:
        return f"Batch({self.name!r})"

    def refresh(self) -> BatchStatus:
        self.status = BatchStatus.model_validate(self.client._json("GET", f"/batches/{self.name}"))
        return self.status

    def wait(
        self, timeout: float | None = None, *, poll: float = 2.0, progress: bool = False
    ) -> BatchStatus:
        """Poll until every job has ended and the dataset tests ran (``done``), or the batch
        was cancelled;
        ``TimeoutError`` after ``timeout`` seconds, an ``ApiError`` if the spec was
        rejected. With ``progress``, a line on stderr."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.refresh()
            if progress:
                _show(status)
            if status.state == "rejected":
                raise ApiError(
                    422,
                    f"batch {self.name} was rejected",
                    [{"field": "spec", "message": e} for e in status.errors or []],
                )
            if status.state in ("done", "cancelled"):
                if progress:
                    sys.stderr.write("\n")
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {self.name} not done after {timeout} s ({status.state})")
            time.sleep(poll)

    def cancel(self) -> BatchStatus:
        """Stop the batch: jobs not rendered yet stay pending."""
        self.status = BatchStatus.model_validate(
            self.client._json("POST", f"/batches/{self.name}/cancel")
        )
        return self.status

    def export(
        self,
        format: str,
        folder: str | Path,
        *,
        where: str | None = None,
        split: str = "train=0.8,val=0.1,test=0.1",
        split_seed: int = 0,
        frames: str = "every",
        timeout: float | None = None,
        poll: float = 1.0,
    ) -> dict:
        """Export the batch (or the ``where`` slice of it) as ``format`` on the server, wait
        for it and download its files into ``folder``; returns the export's status (its
        ``summary`` counts per split and category)."""
        body = {"format": format, "where": where, "split": split, "split_seed": split_seed}
        started = self.client._json(
            "POST", f"/batches/{self.name}/exports", json={**body, "frames": frames}
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        status = started
        while status["state"] == "running":
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"export {started['id']} not done after {timeout} s")
            time.sleep(poll)
            status = self.client._json("GET", f"/exports/{started['id']}")
        if status["state"] == "failed":
            raise ApiError(422, f"export {started['id']} failed: {status['error']}")
        folder = Path(folder)
        with self.client.transfers() as transfers:
            for name in status["files"]:
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with transfers.get(f"/exports/{status['id']}/files/{name}") as answer:
                    answer.raise_for_status()
                    with target.open("wb", buffering=0) as out:
                        answer.save(out)
        return status

    def jobs(self, status: str | None = None, page: int = 500) -> Iterator[JobRow]:
        cursor = -1
        while True:
            params = {"cursor": cursor, "limit": page, **({"status": status} if status else {})}
            answer = self.client._json("GET", f"/batches/{self.name}/jobs", params=params)
            yield from (JobRow.model_validate(j) for j in answer["jobs"])
            if answer["next_cursor"] is None:
                return
            cursor = answer["next_cursor"]

    def download(self, folder: str | Path, workers: int = 8) -> DownloadSummary:
        """Every done job's archive into ``folder`` as ``<job id>.zip``, ``workers`` at a
        time; complete files are skipped, partial ones resumed, every one verified."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        done = [j.job_id for j in self.jobs(status="done")]
        with self.client.transfers() as transfers, ThreadPoolExecutor(workers) as pool:
            results = list(
                pool.map(lambda job: _download(self.client, transfers, job, folder), done)
            )
        transferred = [n for n in results if n is not None]
        return DownloadSummary(len(transferred), len(results) - len(transferred), sum(transferred))


def _show(status: BatchStatus) -> None:
    counts = status.counts
    ended = f"{counts.done + counts.failed}/{status.jobs}" if counts else "0/?"
    eta = f", about {status.eta_seconds:.0f} s left" if status.eta_seconds else ""
    failed = f", {counts.failed} failed" if counts and counts.failed else ""
    sys.stderr.write(f"\r{status.name}: {status.state} {ended} jobs{failed}{eta}   ")
    sys.stderr.flush()


def _hasher(path: Path | None) -> hashlib._Hash:
    """A SHA-256 that has read ``path`` already (the part a resumed download keeps)."""
    if path is None:
        return hashlib.sha256()
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256")


def _sha256(path: Path) -> str:
    return _hasher(path).hexdigest()


def _download(client, transfers: Transfers, job_id: str, folder: Path) -> int | None:
    """One archive; the bytes transferred, or None when the file was complete already.
    A connection that fails, a 5xx answer or a body cut short is retried with backoff
    (``client.retries`` times), resuming from what arrived."""
    target = folder / f"{job_id}.zip"
    part = target.with_name(target.name + ".part")
    etag_file = target.with_name(target.name + ".etag")
    received, failures = 0, 0
    while True:
        headers: dict[str, str] = {}
        if target.exists():
            headers["If-None-Match"] = f'"{_sha256(target)}"'
        elif part.exists() and etag_file.exists():
            headers["Range"] = f"bytes={part.stat().st_size}-"
            headers["If-Range"] = etag_file.read_text()
        try:
            with transfers.get(f"/jobs/{job_id}/archive", headers) as answer:
                if answer.status == 304:
                    return None
                if answer.status == 416:  # the part is no part of this archive: start over
                    part.unlink()
                    etag_file.unlink()
                    continue
                if answer.status < 500 or failures == client.retries:
                    answer.raise_for_status()
                if answer.status < 500:
                    etag = answer.headers["ETag"]
                    etag_file.write_text(etag)
                    resumed = answer.status == 206
                    digest = _hasher(part if resumed else None)  # hashed as it arrives
                    with part.open("ab" if resumed else "wb", buffering=0) as out:
                        try:
                            answer.save(out, digest)
                        finally:  # a cut body's bytes were transferred too
                            received += answer.received
                    break
        except Failure:
            if failures == client.retries:
                raise
        failures += 1
        time.sleep(0.5 * 2 ** (failures - 1))
    if digest.hexdigest() != etag.strip('"'):
        part.unlink()
        etag_file.unlink()
        raise ApiError(502, f"{job_id}: the archive's SHA-256 does not match its ETag; removed")
    part.replace(target)
    etag_file.unlink()
    return received
