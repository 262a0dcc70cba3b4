"""The Hugging Face export's Parquet shards, written on a second process beside the labels.

Most of a shard's making is work on image bytes: reading each frame's PNG out of its archive
and checking its CRC-32, putting it into Parquet pages, writing them, hashing the file for
``checksums.sha256``. In the export's own process that work queued behind the labels' (one
interpreter lock for both: the export took 1.7x the time of copying its images); here it
runs beside them, on a helper process started as ``vario.export.worker`` says
(``python -m vario.export.hf_shards PARENT_PID PARTS SHARD_BYTES``).

The export (``ShardWriter``) sends the process an Arrow IPC stream on its stdin, one record
batch per row group, its split named in the batch's custom metadata (``split``); a batch
with ``end`` in its metadata ends it. A batch holds the shard's columns, labels built, and
names the images to read instead of carrying them: an image column's ``bytes`` are null
where ``__{column}_member`` names a member of the row's archive (``__archive``); an image
that is not the archive's (an augmented copy's) comes as bytes. The process reads a row
group's images into one buffer (no copy per image), writes the row group into its split's
current shard (``PARTS/{split}-NNNNN.parquet``), and starts the split's next shard once one
holds ``SHARD_BYTES`` of images. Each shard is hashed on a thread as it grows, from the
bytes each row group added. The answer names every split's shards, in order, with their
SHA-256: ``{"shards": {split: [[file name, sha256], ...]}}``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vario.export.members import ArchiveMembers
from vario.export.worker import Worker, check_parent, serve

IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
ARCHIVE = "__archive"  # the row's job archive, in the stream: not a shard column
WRITE_BATCH_ROWS = 1  # a page closes once past 1 MiB, whatever the images' size
HASH_BLOCK = 2**20  # bytes of a shard read back at a time to hash it
MAX_ROW_GROUP_IMAGES = 2**31 - 1  # bytes of one image column in one row group (``binary``
# offsets are 32-bit)


def member_column(name: str) -> str:
    """The stream's column naming, per row, the archive member an image column's bytes are."""
    return f"__{name}_member"


def stream_schema(schema: pa.Schema) -> pa.Schema:
    """The stream's schema: the shards' (with their metadata), then the row's archive and
    each image column's member."""
    extra = [pa.field(ARCHIVE, pa.string())]
    extra += [pa.field(member_column(f.name), pa.string()) for f in schema if f.type == IMAGE]
    return pa.schema([*schema, *extra], metadata=schema.metadata)


def writer_options(schema: pa.Schema) -> dict[str, Any]:
    """``ParquetWriter`` options: zstd and dictionaries, but not for PNG bytes, which neither
    compress nor repeat (trying cost as much as writing them); and pages of about
    ``data_page_size`` (1 MiB). The writer checks a page's size after each batch of
    ``write_batch_size`` rows (1,024 by default): a row group's PNGs made one page, written
    with one call of megabytes, which the kernel took five times as long to copy as the
    same bytes in calls of a megabyte (a row group of 8.8 MB, on ext4)."""
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_batches([], schema=schema), buffer)  # no pandas import
    parquet = pq.ParquetFile(pa.BufferReader(buffer.getvalue())).schema
    leaves = [parquet.column(i).path for i in range(len(parquet))]  # "image.bytes", ...
    images = {f"{field.name}.bytes" for field in schema if field.type == IMAGE}
    return {
        "compression": {c: "none" if c in images else "zstd" for c in leaves},
        "use_dictionary": [c for c in leaves if c not in images],
        "write_batch_size": WRITE_BATCH_ROWS,
    }


class ShardWriter(Worker):
    """The shard-writing process of one export: ``write`` sends a split's row group (its
    columns in the order of ``schema``, the stream's), ``finish`` waits for every shard and returns
    ``{split: [(file name in parts, sha256), ...]}``. A context manager (``Worker``)."""

    def __init__(self, parts: Path, schema: pa.Schema, shard_bytes: int):
        super().__init__(
            "vario.export.hf_shards", "writing Parquet shards", str(parts), str(shard_bytes)
        )
        self.schema = stream_schema(schema)
        self._stream: pa.ipc.RecordBatchStreamWriter | None = None

    def write(self, split: str, columns: list[pa.Array]) -> None:
        batch = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        self._send(batch, {"split": split})

    def finish(self) -> dict[str, list[tuple[str, str]]]:
        self._send(pa.RecordBatch.from_pylist([], schema=self.schema), {"end": ""})
        self.send(self._stream.close)
        shards = self.result()["shards"]
        return {
            split: [(name, sha256) for name, sha256 in files] for split, files in shards.items()
        }

    def _send(self, batch: pa.RecordBatch, metadata: dict[str, str]) -> None:
        def write() -> None:
            if self._stream is None:
                self._stream = pa.ipc.new_stream(self.stdin, self.schema)
            self._stream.write_batch(batch, custom_metadata=metadata)

        self.send(write)


class _Images:
    """Reads a row group's archive images into one buffer per image column, its values.
    Row groups take turns between two sets of buffers: one is read while the row group
    before, in the other, is written (``_Shards``); fresh memory for each cost more than
    the reading."""

    def __init__(self) -> None:
        self.archives: dict[str, ArchiveMembers] = {}  # the row group's, open: a job's
        # frames come one after another, and may go on in the next row group
        self.buffers: dict[tuple[str, int], pa.Buffer] = {}  # by column and turn
        self.turn = 0

    def close(self) -> None:
        for archive in self.archives.values():
            archive.close()
        self.archives = {}

    def row_group(self, paths: list[str | None]) -> None:
        """The next row group, whose rows are in the archives at ``paths``: the other turn's
        buffers, the archives opened (those of the row group before that it reads kept)."""
        self.turn = 1 - self.turn
        opened = {path: self.archives.pop(path, None) for path in dict.fromkeys(paths) if path}
        self.close()
        self.archives = {p: archive or ArchiveMembers(p) for p, archive in opened.items()}

    def column(
        self, name: str, given: pa.StructArray, members: list[str | None], paths: list[str | None]
    ) -> tuple[pa.StructArray, int]:
        """The image column ``name`` with every value's bytes (read, or as given), and their
        size."""
        rows = list(zip(given.field("bytes").to_pylist(), members, paths, strict=True))
        sizes = [len(data) if member is None else 0 for data, member, _ in rows]
        path = None
        try:  # an error names the archive it comes from
            for row, (_, member, path) in enumerate(rows):
                if member is not None:
                    sizes[row] = self.archives[path].size(member)
            offsets = np.zeros(len(sizes) + 1, np.int64)
            np.cumsum(sizes, out=offsets[1:])
            total, path = int(offsets[-1]), None
            buffer = self._buffer(name, total)
            view = memoryview(buffer).cast("B")  # bytes, as the values given are
            for start, end, (data, member, path) in zip(
                offsets[:-1], offsets[1:], rows, strict=True
            ):
                if member is None:
                    view[start:end] = data
                else:
                    self.archives[path].read_into(member, view[start:end])
        except Exception as exc:
            if path is not None:
                exc.add_note(path)
            raise
        buffers = [None, pa.py_buffer(offsets.astype(np.int32)), buffer.slice(0, total)]
        data = pa.Array.from_buffers(pa.binary(), len(sizes), buffers)
        return pa.StructArray.from_arrays([data, given.field("path")], fields=list(IMAGE)), total

    def _buffer(self, column: str, size: int) -> pa.Buffer:
        """This turn's buffer for ``column``, of at least ``size`` bytes."""
        if size > MAX_ROW_GROUP_IMAGES:
            raise ValueError(
                f"a row group's images take {size / 2**30:.1f} GiB, more than one Parquet "
                "column chunk holds (2 GiB): lower the option row_group_rows"
            )
        buffer = self.buffers.get((column, self.turn))
        if buffer is None or buffer.size < size:
            buffer = self.buffers[column, self.turn] = pa.allocate_buffer(size)
        return buffer


class _Split:
    """One split's shards: each row group written into the current one, rolled by size.
    Used by one thread at a time: the writing thread, then ``_Shards.finish``."""

    def __init__(self, name: str, shards: _Shards):
        self.name = name
        self.owner = shards
        self.parquet: pq.ParquetWriter | None = None  # the current shard's, at ``path``
        self.path = shards.parts
        self.hash: _Hash | None = None  # the current shard's
        self.images = 0  # bytes of images in the current shard
        self.shards: list[tuple[str, Future[str]]] = []  # each shard's name and digest

    def write(self, table: pa.Table, images: int) -> None:
        if self.parquet is None:
            self.path = self.owner.parts / f"{self.name}-{len(self.shards):05d}.parquet"
            self.parquet = pq.ParquetWriter(self.path, self.owner.schema, **self.owner.options)
            self.hash = _Hash(self.path, self.owner.hashing)
        self.parquet.write_table(table, row_group_size=table.num_rows)
        self.hash.grow()
        self.images += images
        if self.images >= self.owner.shard_bytes:
            self.close()

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
            self.shards.append((self.path.name, self.hash.finish()))
            self.parquet, self.images = None, 0


class _Hash:
    """A shard's SHA-256, brought up to date on the hashing thread with the bytes each row
    group added (read back from the page cache), so that closing the last shards waits for
    little hashing. One hashing thread: a file's updates run in the order they were asked."""

    def __init__(self, path: Path, pool: ThreadPoolExecutor):
        self.fd = os.open(path, os.O_RDONLY)
        self.pool = pool
        self.sha256 = hashlib.sha256()
        self.block = memoryview(bytearray(HASH_BLOCK))  # read into again and again: fresh
        # memory for every block cost more than the hashing
        self.done = 0  # bytes hashed

    def grow(self) -> None:
        self.pool.submit(self._update)

    def finish(self) -> Future[str]:
        """The digest of the whole file, once it is closed."""
        return self.pool.submit(self._digest)

    def _update(self) -> None:
        size = os.fstat(self.fd).st_size  # the file only grows: bytes written stay as they are
        while self.done < size:
            read = os.preadv(self.fd, [self.block[: size - self.done]], self.done)
            self.sha256.update(self.block[:read])
            self.done += read

    def _digest(self) -> str:
        try:
            self._update()
            return self.sha256.hexdigest()
        finally:
            os.close(self.fd)


class _Shards:
    """The process's work: each row group's images read while the one before is written
    (on a thread: Arrow lets go of the interpreter lock), and hashed once written (on
    another)."""

    def __init__(self, parts: Path, shard_bytes: int, schema: pa.Schema):
        self.parts = parts
        self.shard_bytes = shard_bytes
        self.schema = schema
        self.options = writer_options(schema)
        self.splits: dict[str, _Split] = {}
        self.images = _Images()
        self.writing = ThreadPoolExecutor(max_workers=1)
        self.hashing = ThreadPoolExecutor(max_workers=1)  # one: see _Hash
        self.written: Future | None = None  # the row group being written

    def __enter__(self) -> _Shards:
        return self

    def __exit__(self, *exc) -> None:
        self.writing.shutdown(cancel_futures=True)
        self.hashing.shutdown(cancel_futures=True)
        self.images.close()

    def add(self, split: str, batch: pa.RecordBatch) -> None:
        """One row group of ``split``: its images read, then written once the row group
        before is (which frees the buffers this one's next will be read into)."""
        paths = batch.column(ARCHIVE).to_pylist()
        self.images.row_group(paths)
        columns, size = [], 0
        for field in self.schema:
            column = batch.column(field.name)
            if field.type == IMAGE:
                members = batch.column(member_column(field.name)).to_pylist()
                column, read = self.images.column(field.name, column, members, paths)
                size += read
            columns.append(column)
        table = pa.Table.from_arrays(columns, schema=self.schema)
        if split not in self.splits:
            self.splits[split] = _Split(split, self)
        self._wait()
        self.written = self.writing.submit(self.splits[split].write, table, size)

    def finish(self) -> dict[str, list[list[str]]]:
        """Every split's shards, closed and hashed: ``{split: [[name, sha256], ...]}``."""
        self._wait()
        for split in self.splits.values():
            split.close()
        return {
            name: [[shard, digest.result()] for shard, digest in split.shards]
            for name, split in self.splits.items()
        }

    def _wait(self) -> None:
        if self.written is not None:
            self.written.result()  # its error, if any, raised here
            self.written = None


def _serve(parts: Path, shard_bytes: int, source: IO[bytes], parent: int) -> dict[str, Any] | None:
    """The process's loop: row groups from ``source`` until the end mark; None when the
    stream ends before it (the export was stopped)."""
    reader = pa.ipc.open_stream(source)
    stream = reader.schema
    schema = pa.schema([f for f in stream if not f.name.startswith("__")], metadata=stream.metadata)
    with _Shards(parts, shard_bytes, schema) as shards:
        while True:
            try:
                batch, metadata = reader.read_next_batch_with_custom_metadata()
            except StopIteration:
                return None
            check_parent(parent)
            if b"end" in metadata:
                return {"shards": shards.finish()}
            shards.add(metadata[b"split"].decode(), batch)


if __name__ == "__main__":
    parent_pid, folder, shard_size = sys.argv[1:]
    sys.exit(
        serve(
            lambda: _serve(Path(folder), int(shard_size), sys.stdin.buffer, int(parent_pid)),
            sys.stdout,
        )
    )
