"""What a format writer sees: one exported frame at a time, and the export's context.

Writers never query tables or open archives themselves: ``vario.export.run`` streams the
batch's selected frames, job by job, each with its ``frames`` row, its selected ``objects``
rows and access to its images in the job's archive, so every format reads the same rows the
slice selected and memory holds one job's labels at a time. A writer hands an image that is
the archive's as stored to ``ExportContext.write_image``, which copies it on another process
(``vario.export.copier``) while the writer goes on with the labels. An export with augmentations
(``vario.export.augment``) hands writers augmented copies too: frames like the others, with
their own rows, objects, images and stems.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from generators.scene.catalog import Catalog

SPLITS = ("train", "val", "test")  # the split names every format uses, in this order
IMAGE_KINDS = ("rgb", "depth", "segmentation")  # PNG members of every job's archive


class MemberReader(Protocol):
    """A job's archive (``zipfile.ZipFile`` reads like this): its file and its members."""

    filename: str | None

    def read(self, name: str) -> bytes: ...


@dataclass(frozen=True)
class ExportFrame:
    """One frame of the export. ``row`` is its ``frames`` row (``width``, ``height``,
    ``fx``..``cy``, ``cam_*`` camera-to-world pose, ``rgb_path``...), ``objects`` its
    selected ``objects`` rows in instance order (docs/conventions.md gives every column's
    frame and unit). ``stem`` names its files in every format: unique in the export,
    the same in every re-export.

    An augmented copy (``vario.export.augment``) has its own ``row`` and ``objects`` (new
    size, intrinsics, masks and boxes), its transformed PNGs in ``images``, a ``suffix`` on
    its stem, and, when its pixels moved (a geometric transform), ``archive_images`` False:
    it has no image but those in ``images``."""

    split: str
    job_id: str
    frame: int
    row: dict[str, Any]
    objects: list[dict[str, Any]]
    archive: MemberReader  # the job's archive, readable while its frames are written
    images: dict[str, bytes] | None = None  # PNGs by kind that replace the archive's
    archive_images: bool = True  # whether kinds not in ``images`` are the archive's
    suffix: str = ""  # appended to the stem: ``_a0``, ``_a1``... for augmented copies

    @property
    def stem(self) -> str:
        return f"{self.job_id}_{self.frame:05d}{self.suffix}"

    def image(self, kind: str) -> bytes:
        """The frame's PNG of ``kind`` (``rgb``: 8-bit RGB; ``depth``: 16-bit millimetres;
        ``segmentation``: 16-bit instance ids): from ``images`` if there, else as stored in
        the archive; ``ValueError`` for a kind an augmented frame does not have."""
        if kind not in IMAGE_KINDS:
            raise ValueError(f"no {kind!r} image; kinds: {', '.join(IMAGE_KINDS)}")
        if self.images and kind in self.images:
            return self.images[kind]
        if not self.archive_images:
            raise ValueError(
                f"frame {self.stem}: no {kind} image: a geometric augmentation moved its "
                f"pixels and only its {', '.join(self.images or {}) or 'no'} image was "
                "transformed with them"
            )
        return self.archive.read(self.row[f"{kind}_path"])

    def member(self, kind: str) -> str | None:
        """The archive member that ``image(kind)`` is, as stored, for another process to read
        from the archive's file; None for a replaced image (an augmented copy's) or an
        archive with no file."""
        if not self.archive_images or (self.images and kind in self.images):
            return None
        return self.row[f"{kind}_path"] if self.archive.filename else None

    def checksum(self, kind: str) -> str | None:
        """The SHA-256 recorded at render time of the image ``image(kind)`` returns, when
        that is the archive's file as stored (``rgb_sha256``, docs/conventions.md); None
        when none was recorded or the image was replaced (an augmented copy)."""
        if self.images and kind in self.images:
            return None
        return self.row.get(f"{kind}_sha256")


class FileCopy(Protocol):
    def __call__(self, path: Path | str, archive: str, member: str, sha256: str | None) -> None:
        """Copy ``member`` of the job archive ``archive`` to ``path`` (relative to the
        export's folder); ``sha256``, when known, is its digest."""


class FileWrite(Protocol):
    def __call__(self, path: Path | str, data: bytes, sha256: str | None = None) -> None:
        """Write ``data`` at ``path`` (relative to the export's folder); ``sha256``, when
        known (``ExportFrame.checksum``), is the data's digest and saves hashing it."""


class FileMade(Protocol):
    def __call__(self, path: str, sha256: str) -> None:
        """Record ``path`` (relative to the export's folder), a file the writer made itself,
        and its SHA-256."""


@dataclass(frozen=True)
class ExportContext:
    """What a writer knows of the whole export before its first frame."""

    out: Path  # the folder to write into (a temporary one, renamed when the export is whole)
    batch: str
    splits: tuple[str, ...]  # the splits that hold at least one job, in ``SPLITS`` order
    catalog: Catalog  # the batch's catalog: category ids (``category_ids()``), asset meshes
    write: FileWrite  # writes a file (relative to ``out``) on a pool of threads; every
    # write is done when ``close`` is called
    final: Path | None = None  # the folder ``out`` becomes once whole (None: ``out`` itself),
    # for a format that names its own absolute path (YOLO's data.yaml)
    generators: tuple[str, ...] = ()  # ``name version`` of each generator that rendered
    # the batch's jobs, sorted (the jobs table)
    copy: FileCopy | None = None  # copies archive members on another process; without it
    # ``write_image`` writes them in this one
    made: FileMade | None = None  # records a file the writer made whole itself (a Parquet
    # shard) with its digest, so that the export's checksums do not read it again

    def write_image(self, path: Path | str, frame: ExportFrame, kind: str) -> None:
        """Write ``frame``'s image of ``kind`` at ``path``: an image as stored in the archive
        is copied from it (on the copier process), any other written from its bytes."""
        member = frame.member(kind)
        if self.copy is not None and member is not None:
            self.copy(path, frame.archive.filename, member, frame.checksum(kind))
        else:
            self.write(path, frame.image(kind), frame.checksum(kind))

    @property
    def destination(self) -> Path:
        return self.final or self.out

    @property
    def category_ids(self) -> dict[str, int]:
        """COCO-style category ids (1-based, stable: docs/conventions.md)."""
        return self.catalog.category_ids()


def check_options(writer: str, options: dict[str, Any], known: tuple[str, ...]) -> None:
    """A writer's options must be among ``known``: a misspelt one is an error, not ignored."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(
            f"{writer}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"options: {', '.join(known) or 'none'}"
        )


BOX = ("box_x_min", "box_y_min", "box_x_max", "box_y_max")


class Writer(Protocol):
    """A format: made with the context, given every frame once, closed at the end.

    A writer may name the columns it reads in a class attribute ``COLUMNS``
    (``{"frames": (...), "objects": (...)}``): its frames' rows and objects then hold those
    (and ``job_id``, ``frame``) only, which makes turning a shard's rows into dicts several
    times cheaper. Without it they hold every column.

    A writer that runs a process of its own (``vario.export.hf``) is a context manager too:
    the export enters it, so that leaving on an error stops that process."""

    def add(self, frame: ExportFrame) -> None: ...

    def close(self) -> dict[str, Any]:
        """Write what needs every frame (a JSON per split, a dataset card); returns a few
        facts for the export's manifest (files, counts)."""
        ...
