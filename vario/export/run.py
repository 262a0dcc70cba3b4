"""Export a batch, or a slice of it, in a training format: its frames streamed shard by shard
through the format's writer into a folder that appears whole or not at all.

Each shard's ``frames`` and ``objects`` tables are read (a few thousand rows), sliced with the
request's WHERE on the query sandbox's connection, and handed to the writer job by job, the
job's archive readable while its frames are written; images as stored in the archives are
copied on a second process (``vario.export.copier``; Hugging Face shards are written on one:
``vario.export.hf_shards``) while this one writes the labels.
The export is written under a temporary name beside ``out`` and renamed once complete, with
``export.json`` (what was asked, with any augmentation spec's content, the counts, the
catalog) and ``checksums.sha256`` (every file, ``sha256sum -c`` reads it). The same request
again finds ``export.json`` and does nothing; another request for the same folder is refused;
the same request after one killed outright takes its temporary folder over and resumes.
With ``link``, archive images are hard links into the data folder's image cache.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from generators.scene.catalog import default_catalog
from vario.batch.spec import checked_batch
from vario.export import augment as aug
from vario.export.copier import Copier
from vario.export.frame import SPLITS, ExportContext, ExportFrame
from vario.export.members import ArchiveMembers, ReadAhead
from vario.export.select import ExportRequestError, Selection, assign_splits, frame_step
from vario.run import shard as sh
from vario.store import sandbox
from vario.store.layout import DataStore

FORMATS = {
    "coco": "vario.export.coco:CocoWriter",
    "yolo": "vario.export.yolo:YoloWriter",
    "kitti": "vario.export.kitti:KittiWriter",
    "bop": "vario.export.bop:BopWriter",
    "hf": "vario.export.hf:HuggingFaceWriter",
}
MANIFEST = "export.json"
_REQUEST = ".request.json"  # in the temporary folder: which request it is being made for
CHECKSUMS = "checksums.sha256"


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    format: str
    frames: dict[str, int]  # per split
    objects: dict[str, int]  # per split
    categories: dict[str, int]  # objects per category
    bytes: int
    up_to_date: bool = False  # the same export was there already; nothing was written
    writer: dict[str, Any] = field(default_factory=dict)  # what the format's writer reports


def writer_class(fmt: str) -> type:
    if fmt not in FORMATS:
        raise ExportRequestError(f"--format: one of {', '.join(FORMATS)} (got {fmt!r})")
    module, name = FORMATS[fmt].split(":")
    return getattr(importlib.import_module(module), name)


def export_batch(
    store: DataStore,
    batch: str,
    fmt: str,
    out: Path,
    *,
    where: str | None = None,
    split: dict[str, float] | None = None,
    split_seed: int = 0,
    frames: str = "every",
    options: dict | None = None,
    on_job: Callable[[int, int], None] | None = None,
    augment: Path | None = None,
    link: bool = False,
) -> ExportSummary:
    """Export ``batch`` as ``fmt`` into ``out`` (which must not exist, or hold this very
    export), each frame augmented as the spec in ``augment`` asks (``vario.export.augment``).
    With ``link``, images as stored in the archives are hard links into the data folder's
    image cache (``cache/images``: one read-only copy of each, shared by every linked export)
    instead of copies. Raises ``ExportRequestError`` for a request that cannot run, before
    any work."""
    selection = Selection(where, frames, split or Selection().split, split_seed)
    cls, options = writer_class(fmt), dict(options or {})
    spec = aug.load_spec(augment) if augment is not None else None
    if spec is not None:
        aug.check_request(spec, fmt, options)
    out = Path(out).absolute()
    if checked_batch(batch) not in store.batches():
        raise ExportRequestError(f"no batch {batch!r} in {store.root}")
    catalog = default_catalog()
    request = {
        "batch": batch,
        "format": fmt,
        "where": where,
        "frames": frames,
        "split": selection.split,
        "split_seed": split_seed,
        "options": options,
        "catalog_hash": catalog.content_hash,
        "tables": _tables_digest(store, batch),  # the batch as it is now: a re-rendered
        # shard makes the same request a new export
    }
    if spec is not None:  # the spec's content, not its path: an edited spec is a new export
        request["augment"] = spec.model_dump(mode="json", exclude_none=True)
    done = _existing(out, request)
    if done is not None:
        return done
    cache = _link_cache(store, out) if link else None
    con = sandbox.connection(store)
    _check_slice(con, selection)
    jobs, generators = _rendered_jobs(con, batch)
    splits = assign_splits(jobs, selection.split, split_seed)
    partial = _partial(out, request)
    try:
        with _FileWriter(partial, cache) as files:
            ctx = ExportContext(
                out=partial,
                batch=batch,
                splits=tuple(s for s in SPLITS if s in set(splits.values())),
                catalog=catalog,
                write=files.write,
                final=out,
                generators=tuple(generators),
                copy=files.copy,
                made=files.made,
            )
            counts = _Counts()
            augmenter = aug.Augmenter(spec) if spec is not None else None
            # the columns the writer reads (every column for an augmenter, which reads more)
            columns = getattr(cls, "COLUMNS", None) if augmenter is None else None
            frames = _frames(store, con, batch, selection, splits, len(jobs), on_job, columns)
            # the open archive closed, and the writer's own process stopped, even on an error
            with _entered(cls(ctx, **options)) as writer, closing(frames):
                for found in frames:
                    for frame in augmenter.frames(found) if augmenter else (found,):
                        writer.add(frame)
                        counts.add(frame)
                reported = writer.close()
        in_order = [name for name in SPLITS if name in counts.frames]
        summary = ExportSummary(
            out,
            fmt,
            {name: counts.frames[name] for name in in_order},
            {name: counts.objects[name] for name in in_order},
            dict(sorted(counts.categories.items())),
            files.bytes,
            writer=reported,
        )
        (partial / _REQUEST).unlink()
        _write_manifest(partial, request, summary, files.digests)
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return summary


def _entered(writer: Any) -> AbstractContextManager:
    """The writer as a context manager: itself when it is one (it runs a process of its
    own: ``Writer``), else one that does nothing."""
    return writer if isinstance(writer, AbstractContextManager) else nullcontext(writer)


def _partial(out: Path, request: dict) -> Path:
    """This process's temporary folder for ``out``. What exports into ``out`` killed outright
    (no ``finally`` ran) left is removed: folders named by a process id that no longer runs;
    one that was making this very request is taken over instead, so the export resumes: the
    images it wrote whole are not written again (``_FileWriter``)."""
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    wanted = json.dumps(request, sort_keys=True, default=str)
    for folder in out.parent.glob(f".{glob.escape(out.name)}.partial-*"):
        pid = folder.name.rsplit("-", 1)[1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        recorded = folder / _REQUEST
        if not partial.exists() and recorded.exists() and recorded.read_text() == wanted:
            os.replace(folder, partial)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    (partial / _REQUEST).write_text(wanted)
    return partial


def _link_cache(store: DataStore, out: Path) -> Path:
    """The image cache that ``--link`` exports link into; hard links cannot cross
    filesystems, so ``out`` must be on the data folder's."""
    cache = store.root / "cache" / "images"
    cache.mkdir(parents=True, exist_ok=True)
    existing = next(p for p in (out, *out.parents) if p.exists())
    if existing.stat().st_dev != cache.stat().st_dev:
        raise ExportRequestError(
            f"--link: {out} is on another filesystem than the data folder {store.root}; "
            "hard links cannot cross filesystems (use --copy)"
        )
    return cache


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _existing(out: Path, request: dict) -> ExportSummary | None:
    """The summary of the same export already in ``out``; a folder holding anything else
    is refused rather than overwritten."""
    if not out.exists():
        return None
    manifest = out / MANIFEST
    if manifest.exists():
        recorded = json.loads(manifest.read_text())
        if recorded.get("request") == request:
            summary = {**recorded["summary"], "out": out, "up_to_date": True}
            return ExportSummary(**summary)
        raise ExportRequestError(f"--out: {out} holds another export ({manifest}); choose another")
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
        return None
    raise ExportRequestError(f"--out: {out} exists and is not an export; choose another")


def _tables_digest(store: DataStore, batch: str) -> str:
    """SHA-256 over the batch's label table files (names and bytes)."""
    digest = hashlib.sha256()
    for table in ("jobs", "frames", "objects"):
        folder = store.table_dir(table, batch)
        for path in sorted(folder.glob("*.parquet")) if folder.exists() else []:
            digest.update(f"{table}/{path.name}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _check_slice(con: duckdb.DuckDBPyConnection, selection: Selection) -> None:
    """The slice on the objects view, with no rows: a column that does not exist or a type
    that does not fit is a request error, before any work."""
    expression = selection.expression()
    if expression is None:
        return
    try:
        con.table("objects").filter(expression).limit(0).fetchall()
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0]
        raise ExportRequestError(f"--where: {reason}") from None


def _rendered_jobs(con: duckdb.DuckDBPyConnection, batch: str) -> tuple[list[str], list[str]]:
    """The batch's rendered jobs, and ``name version`` of the generators that rendered them."""
    rows = con.execute(
        "SELECT job_id, generator || ' ' || generator_version FROM jobs "
        "WHERE batch = $batch AND status = 'ok' ORDER BY job_id",
        {"batch": batch},
    ).fetchall()
    if not rows:
        raise ExportRequestError(f"batch {batch!r} has no rendered jobs to export")
    return [j for j, _ in rows], sorted({g for _, g in rows})


def _frames(
    store: DataStore,
    con: duckdb.DuckDBPyConnection,
    batch: str,
    selection: Selection,
    splits: dict[str, str],
    total_jobs: int,
    on_job: Callable[[int, int], None] | None,
    columns: dict[str, tuple[str, ...]] | None = None,
) -> Iterator[ExportFrame]:
    """Every selected frame of the batch, shard by shard, job by job (by job id within a
    shard), frame by frame, each with its selected objects in instance order; with
    ``columns``, rows of those columns only (``Writer.COLUMNS``)."""
    done = 0
    for shard in store.shard_keys(batch):
        tables = _shard_tables(store, con, batch, shard, selection)
        if tables is None:
            continue
        frames, objects = tables
        if columns is not None:
            keys = ["job_id", "frame"]
            # and the RGB image's recorded digest (``ExportFrame.checksum``); older tables lack it
            digest = ["rgb_sha256"] if "rgb_sha256" in frames.schema.names else []
            frames = frames.select([*keys, *digest, *columns["frames"]])
            objects = objects.select([*keys, *columns["objects"]])
        by_frame: dict[tuple[str, int], list[dict]] = {}
        for row in _rows(objects, batch, columns is None):
            by_frame.setdefault((row["job_id"], row["frame"]), []).append(row)
        by_job: dict[str, list[dict]] = {}
        for row in _rows(frames, batch, columns is None):  # sorted by job and frame
            by_job.setdefault(row["job_id"], []).append(row)
        jobs = [job_id for job_id in by_job if job_id in splits]
        archives = [sh.archive_path(store.archive_dir(batch), job_id) for job_id in jobs]
        ahead = ReadAhead(archives)
        for index, job_id in enumerate(jobs):
            ahead.at(index)
            with ArchiveMembers(archives[index]) as job:
                for row in by_job[job_id]:
                    found = by_frame.get((job_id, row["frame"]), [])
                    yield ExportFrame(splits[job_id], job_id, row["frame"], row, found, job)
            done += 1
            if on_job:
                on_job(done, total_jobs)
    if on_job:  # jobs the slice left without a frame count as done too
        on_job(total_jobs, total_jobs)


def _shard_tables(
    store: DataStore,
    con: duckdb.DuckDBPyConnection,
    batch: str,
    shard: str,
    selection: Selection,
) -> tuple[pa.Table, pa.Table] | None:
    """The shard's kept frames (sorted by job and frame) and selected objects (by job,
    frame and instance), as stored (no ``batch`` column: ``_rows``), or None for a shard
    without tables."""
    paths = [store.table_path(t, batch, shard) for t in ("frames", "objects")]
    if not all(p.exists() for p in paths):
        return None
    frames, objects = (_read(p) for p in paths)
    step = frame_step(selection.frames)
    if step != 1:
        frames, objects = frames.filter(_kept(frames, step)), objects.filter(_kept(objects, step))
    expression = selection.expression()
    if expression is not None:  # on the columns the dataset's views have, ``batch`` too
        # (a checked batch name is safe in SQL)
        viewed = con.from_arrow(objects).project(f"*, '{checked_batch(batch)}' AS batch")
        objects = viewed.filter(expression).project("* EXCLUDE (batch)").to_arrow_table()
        hit = pc.is_in(_frame_keys(frames), value_set=_frame_keys(objects))
        frames = frames.filter(hit)
    frames = frames.sort_by([("job_id", "ascending"), ("frame", "ascending")])
    objects = objects.sort_by(
        [("job_id", "ascending"), ("frame", "ascending"), ("instance_id", "ascending")]
    )
    return frames, objects


def _read(path: Path) -> pa.Table:
    """One label table file, read as a file (``pq.read_table`` reads it as a dataset, and
    ``pyarrow.dataset`` imports pandas: a quarter of a second of every export)."""
    with pq.ParquetFile(path) as file:
        return file.read(use_threads=False)


def _kept(table: pa.Table, step: int | None) -> pa.Array:
    """Rows of the frames kept: each job's first (``step`` None) or every ``step``-th."""
    frame = table["frame"].to_numpy()
    return pa.array(frame == 0 if step is None else frame % step == 0)


def _rows(table: pa.Table, batch: str, every_column: bool) -> list[dict[str, Any]]:
    """A shard table's rows, with every column the dataset's views give them (``batch``
    too) or the columns selected. The ``batch`` column is added here, not in Arrow: making
    an Arrow column from Python values imports pandas, a quarter of a second of an export."""
    rows = table.to_pylist()
    if every_column:
        for row in rows:
            row["batch"] = batch
    return rows


def _frame_keys(table: pa.Table) -> pa.Array:
    """``job_id/frame`` of each row, to match frames with their objects."""
    frame = pc.cast(table["frame"], pa.string())
    return pc.binary_join_element_wise(table["job_id"], frame, "/").combine_chunks()


class _Counts:
    def __init__(self) -> None:
        self.frames: Counter[str] = Counter()
        self.objects: Counter[str] = Counter()
        self.categories: Counter[str] = Counter()

    def add(self, frame: ExportFrame) -> None:
        self.frames[frame.split] += 1
        self.objects[frame.split] += len(frame.objects)
        self.categories.update(o["category"] for o in frame.objects)


class _FileWriter:
    """Writes files under the export's folder, each hashed (SHA-256) unless its digest is
    known, and copies archive images on a copier process (``vario.export.copier``, started
    on the first) while the writer goes on.

    A copied image whose digest is known (``ExportFrame.checksum``) is not copied again when
    a resumed export finds it whole (its size); with a ``cache`` it is a hard link to the
    cache's read-only copy (``--link``)."""

    def __init__(self, root: Path, cache: Path | None = None):
        self.root = root
        self.cache = cache
        self.digests: dict[str, str] = {}
        self.bytes = 0
        self._copier: Copier | None = None
        self._folders: set[Path] = set()  # made already

    def __enter__(self) -> _FileWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._copier is None:
            return
        with self._copier:  # killed when leaving on an error
            if exc_type is None:
                copied, computed = self._copier.finish()
                self.bytes += copied
                self.digests.update(computed)

    def write(self, path: Path | str, data: bytes, sha256: str | None = None) -> None:
        relative = self._claim(path)
        target = self.root / relative
        if target.parent not in self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(target.parent)
        target.write_bytes(data)
        self.digests[relative] = sha256 or hashlib.sha256(data).hexdigest()
        self.bytes += len(data)

    def copy(self, path: Path | str, archive: str, member: str, sha256: str | None) -> None:
        relative = self._claim(path)
        if self._copier is None:
            self._copier = Copier(self.root, self.cache)
        self._copier.copy(archive, member, relative, sha256)
        self.digests[relative] = sha256 or ""  # or the copier's, once it is done

    def made(self, path: str, sha256: str) -> None:
        relative = self._claim(path)
        self.digests[relative] = sha256
        self.bytes += (self.root / relative).stat().st_size

    def _claim(self, path: Path | str) -> str:
        """``path`` as a name inside the export, not given before (string checks: this runs
        once per file of the export, and ``pathlib`` cost more than the writing)."""
        name = path.as_posix() if isinstance(path, Path) else path
        parts = name.split("/")
        if name.startswith("/") or {"", ".", ".."} & set(parts):
            raise ValueError(f"{path}: not a path inside the export")
        if name in self.digests:  # two frames under one name: a writer's bug
            raise ValueError(f"{name} written twice")
        self.digests[name] = ""
        return name


def _sha256(path: Path) -> str:
    """A file's SHA-256, read a block at a time (a shard may be hundreds of megabytes)."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _files(root: Path) -> Iterator[str]:
    """Every file under ``root``, by its path relative to it (``/``-separated)."""
    for folder, _, names in os.walk(root):
        relative = os.path.relpath(folder, root).replace(os.sep, "/")
        prefix = "" if relative == "." else f"{relative}/"
        yield from (prefix + name for name in names)


def _write_manifest(
    root: Path, request: dict, summary: ExportSummary, digests: dict[str, str]
) -> None:
    """``checksums.sha256`` over every file the writer wrote (or that ``write`` missed:
    files a writer wrote itself are hashed here), then ``export.json``."""
    missing = sorted(name for name in _files(root) if not digests.get(name))
    with ThreadPoolExecutor(max_workers=2) as pool:  # hashing lets go of the GIL: two cores
        hashed = pool.map(_sha256, (root / n for n in missing))
        for name, digest in zip(missing, hashed, strict=True):
            digests[name] = digest
    lines = [f"{digest}  {name}\n" for name, digest in sorted(digests.items())]
    (root / CHECKSUMS).write_text("".join(lines))
    recorded = {k: v for k, v in asdict(summary).items() if k not in ("out", "up_to_date")}
    manifest = {
        "vario_export": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "request": request,
        "summary": recorded,
        "files": len(digests),
        "checksums": CHECKSUMS,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
