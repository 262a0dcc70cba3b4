"""What both ingests share: their error, their summary, content digests and the version
folder that appears only once whole, with ``current`` written last."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from generators.labels.archive import write_atomic
from vario.batch.spec import checked_batch

# on_progress(step, done, total): total None while unknown (a JSON file's rows)
Progress = Callable[[str, int, int | None], None]
SHOWN = 20  # per-row messages an error lists; the rest are counted
READ_CHUNK = 1 << 20


class IngestError(ValueError):
    """Input that cannot be ingested, and nothing was written. ``messages``: the first
    ``SHOWN`` problems (one per bad row, or one for a bad file); ``count``: all of them;
    ``head``: what was being read, when the problems are rows of it."""

    def __init__(self, messages: list[str], count: int | None = None, head: str | None = None):
        self.messages = list(messages[:SHOWN])
        self.count = max(count or 0, len(messages))
        self.head = head
        more = self.count - len(self.messages)
        lines = (
            ([head] if head else [])
            + [f"  {m}" if head else m for m in self.messages]
            + ([f"  ... and {more} more"] if more else [])
        )
        super().__init__("\n".join(lines))


class Problems:
    """Per-row problems as a validation finds them: the first ``SHOWN`` kept, all counted."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < SHOWN:
            self.messages.append(message)

    @property
    def room(self) -> int:
        """How many more messages would be kept."""
        return SHOWN - len(self.messages)

    def extend(self, messages: list[str], count: int) -> None:
        """``count`` problems found at once, ``messages`` the first of them."""
        self.messages.extend(messages[: self.room])
        self.count += count

    def __bool__(self) -> bool:
        return self.count > 0

    def check(self, what: str) -> None:
        """Raise the problems found so far, if any, headed by ``what``."""
        if self.count:
            plural = "s" if self.count > 1 else ""
            head = f"{what}: {self.count} problem{plural}, nothing ingested"
            raise IngestError(self.messages, self.count, head)


@dataclass(frozen=True)
class IngestSummary:
    """What an ingest did. ``rows``: frames of a dataset or predictions; ``objects``: a
    dataset's objects; ``skipped``: rows left out on purpose, by reason (an unmapped
    category, a crowd annotation); ``up_to_date``: these inputs were ingested already and
    are current, nothing was written."""

    kind: Literal["dataset", "predictions"]
    name: str
    version: str
    folder: Path
    up_to_date: bool
    rows: int
    objects: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    images_copied: int = 0

    def line(self) -> str:
        """One line for the command line."""
        state = "up to date" if self.up_to_date else "ingested"
        what = (
            f"{self.rows} images, {self.objects} objects"
            if self.kind == "dataset"
            else f"{self.rows} predictions"
        )
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items()))
        tail = f"; skipped {skipped} ({reasons})" if skipped else ""
        return f"{self.kind} {self.name} version {self.version} {state}: {what}{tail}"


def checked_name(name: str, what: str) -> str:
    try:
        return checked_batch(name)
    except ValueError as exc:
        raise IngestError([f"{what}: {exc}"]) from None


def read_capped(path: Path, cap: int, what: str) -> bytes:
    """A whole file, refused above ``cap`` bytes (checked before reading) or if missing."""
    size = file_size(path, what)
    if size > cap:
        raise IngestError([f"{what}: {path} is {size:,} bytes, more than the {cap:,} allowed"])
    return Path(path).read_bytes()


def file_size(path: Path, what: str) -> int:
    try:
        info = Path(path).stat()
    except OSError as exc:
        raise IngestError([f"{what}: cannot read {path} ({exc.strerror or exc})"]) from None
    if not Path(path).is_file():
        raise IngestError([f"{what}: {path} is not a file"])
    return info.st_size


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def version_of(kind: str, parts: dict[str, Any]) -> str:
    """A version: 16 hex digits of SHA-256 over what was ingested (canonical JSON)."""
    text = json.dumps({"kind": kind, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def version_folder(final: Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` to write a version into; renamed to ``final`` when
    the block ends without an error, removed otherwise (or when another process wrote the
    same version first: versions are named by content, so theirs is the same)."""
    partial = final.with_name(f".{final.name}.{os.getpid()}.partial")
    created = [p for p in final.parents if not p.exists()]  # deepest first
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        for file in partial.iterdir():
            with open(file, "rb+") as f:
                os.fsync(f.fileno())
        try:
            os.rename(partial, final)
        except OSError:
            if not final.is_dir():
                raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for folder in created:  # the folders made for it, if nothing else came into them
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def set_current(path: Path, version: str) -> None:
    """Point ``current`` at ``version`` (atomically: readers see the old or the new one)."""
    write_atomic(path, f"{version}\n".encode())


def read_record(folder: Path) -> dict[str, Any]:
    """A version's ``ingest.json``: what was ingested and what it gave."""
    return json.loads((folder / "ingest.json").read_text())


def write_record(folder: Path, record: dict[str, Any]) -> None:
    (folder / "ingest.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
