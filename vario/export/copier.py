"""Copying archive images into an export on another process, beside the one that writes labels.

An export's time goes to two kinds of work: turning label rows into the format's text (Python,
one core) and copying image files out of the job archives (system calls). Threads in one
process share one interpreter lock, and handing each image to a thread cost more on a
two-core machine than writing it; a second process runs the copies truly beside the labels.

``Copier`` (in the export's process) starts the copier process as ``vario.export.worker``
says (``python -m vario.export.copier PARENT_PID ROOT [--cache CACHE]``) and sends it one
line of JSON per job: the archive and, for each image, its member, where it goes (relative
to the export's folder) and its SHA-256 when recorded at render time. The process copies
each image (by the kernel when its digest is known: ``vario.export.members``) unless a
resumed export already holds it whole (its size), or, with a cache, links it to the
cache's read-only copy (``--link``: ``<cache>/<digest[:2]>/<digest><suffix>``, made once
under a temporary name). After the end mark (a line ``end``) it answers the bytes copied
and every digest it had to compute.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import IO, Any

from vario.export.members import ArchiveMembers
from vario.export.worker import Worker, check_parent, serve

END = "end"  # the last line a finished export sends


class Copier(Worker):
    """One copier process for an export's folder ``root``; ``copy`` queues a job's images,
    ``finish`` waits for them all and returns ``(bytes copied, digests computed)``.
    Used as a context manager: leaving it on an error kills the process."""

    def __init__(self, root: Path, cache: Path | None = None):
        args = [str(root)] + (["--cache", str(cache)] if cache is not None else [])
        super().__init__("vario.export.copier", "copying images", *args)
        self._job: tuple[str, list[list[Any]]] | None = None

    def copy(self, archive: str, member: str, target: str, sha256: str | None) -> None:
        """Copy ``member`` of ``archive`` to ``target`` (relative to the export's folder).
        Images of one archive are sent together, when the next archive's first comes."""
        if self._job is not None and self._job[0] != archive:
            self._send()
        if self._job is None:
            self._job = (archive, [])
        self._job[1].append([member, target, sha256])

    def finish(self) -> tuple[int, dict[str, str]]:
        self._send()
        self._write(END)
        reply = self.result()
        return reply["bytes"], reply["digests"]

    def _send(self) -> None:
        if self._job is not None:
            self._write(json.dumps({"archive": self._job[0], "images": self._job[1]}))
            self._job = None

    def _write(self, line: str) -> None:
        self.send(lambda: self.stdin.write(f"{line}\n".encode()))


def _copy_job(
    root: Path, cache: Path | None, job: dict, digests: dict[str, str], parent: int
) -> int:
    """One archive's images; returns the bytes copied. Stops the process at once when the
    export's process is gone (killed outright): its folder may be taken over by another."""
    copied = 0
    folders: set[Path] = set()
    with ArchiveMembers(job["archive"]) as archive:
        for member, relative, sha256 in job["images"]:
            check_parent(parent)
            target = root / relative
            size = archive.size(member)
            copied += size
            if sha256 and target.exists() and target.stat().st_size == size:
                continue  # written whole by the export this one resumes
            if target.parent not in folders:
                target.parent.mkdir(parents=True, exist_ok=True)
                folders.add(target.parent)
            if sha256 is not None and cache is None:
                archive.copy_to(member, target)  # by the kernel: no bytes through Python
                continue
            data = archive.read(member)
            if sha256 is None:
                sha256 = digests[relative] = hashlib.sha256(data).hexdigest()
            if cache is None:
                target.write_bytes(data)
            else:
                target.unlink(missing_ok=True)
                os.link(_cached(cache, sha256, target.suffix, data), target)
    return copied


def _cached(cache: Path, sha256: str, suffix: str, data: bytes) -> Path:
    """The cache's read-only copy of ``data``, made if absent; the first copy made stays (a
    link never replaces a name, as ``os.replace`` would), so exports never race on it."""
    cached = cache / sha256[:2] / f"{sha256}{suffix}"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_name(f".{cached.name}.{os.getpid()}-{threading.get_ident()}")
        temporary.write_bytes(data)
        temporary.chmod(0o444)  # shared by every linked export: nobody edits it in place
        try:
            os.link(temporary, cached)
        except FileExistsError:  # another export cached the same image first
            pass
        finally:
            temporary.unlink()
    return cached


def _serve(root: Path, cache: Path | None, lines: IO[str], parent: int) -> dict | None:
    """The copier's loop: jobs from ``lines`` until the end mark; None when its input ends
    before it (the export was stopped)."""
    copied, digests = 0, {}
    for line in lines:
        if line.strip() == END:
            return {"bytes": copied, "digests": digests}
        job = json.loads(line)
        try:
            copied += _copy_job(root, cache, job, digests, parent)
        except Exception as exc:
            exc.add_note(job["archive"])
            raise
    return None


if __name__ == "__main__":
    parent_pid, folder, *rest = sys.argv[1:]
    found_cache = Path(rest[1]) if rest[:1] == ["--cache"] else None
    sys.exit(
        serve(lambda: _serve(Path(folder), found_cache, sys.stdin, int(parent_pid)), sys.stdout)
    )
