"""A job archive's members read straight from where they lie in the file.

Job archives store their PNGs uncompressed (``ZIP_STORED``: PNG does not compress further),
so a member's bytes are one contiguous run of the archive. ``zipfile`` reads them through a
chain of Python objects per member; an export of 10,000 frames reads 10,000 members, and that
chain cost as much as the system calls. Here the archive's central directory is parsed once
(``zipfile``), then a stored member is

- read with one ``pread`` and checked against its CRC-32 (``read``), or
- copied into another file by the kernel (``copy_to``: ``os.sendfile``, no bytes through
  Python; the copy is checked later, against the SHA-256 recorded at render time, by
  ``sha256sum -c checksums.sha256`` in the export).

A compressed member (an archive written by someone else) goes through ``zipfile``.
The local header layout is APPNOTE.TXT section 4.3.7 (PKWARE's ZIP specification).
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, 22 bytes, name and extra lengths
_SIGNATURE = b"PK\x03\x04"


READ_AHEAD = 64 * 2**20  # bytes of archives the disk is asked for ahead of the one read


class ReadAhead:
    """Keeps the kernel reading (``POSIX_FADV_WILLNEED``) up to ``window`` bytes of the
    archives after the one in hand. An export reads archives one after another; from a cold
    page cache each waited for the disk in turn (a COCO export took 1.0x the time of copying
    its images, 0.6-0.8x read ahead), while read ahead the disk works as frames are written.
    Nothing where the call does not exist (macOS, Windows)."""

    def __init__(self, paths: list[Path], window: int = READ_AHEAD):
        self.paths = paths
        self.window = window
        self.sizes: list[int] = []  # of the archives asked for so far, in order
        self.index = -1  # the archive in hand
        self.ahead = 0  # bytes asked for after it

    def at(self, index: int) -> None:
        """Archive ``index`` is about to be read: it and the ones after it, up to the
        window, asked for."""
        if not hasattr(os, "posix_fadvise"):
            return
        while self.index < index:
            self.index += 1
            if self.index < len(self.sizes):  # asked for already: no longer ahead
                self.ahead -= self.sizes[self.index]
        while len(self.sizes) < len(self.paths) and (
            len(self.sizes) <= index or self.ahead < self.window
        ):
            size = _advise(self.paths[len(self.sizes)])
            if len(self.sizes) > index:
                self.ahead += size
            self.sizes.append(size)


def _advise(path: Path) -> int:
    """The file's size, once the kernel has been asked to read it; 0 for a file that cannot
    be opened (its reader reports that, with its own message)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


class MemberError(zipfile.BadZipFile):
    """A member whose local header or CRC-32 does not match the central directory."""


class ArchiveMembers:
    """One archive, opened on the first member asked for (formats that only copy images
    never open it in the export's process); a context manager that closes it."""

    def __init__(self, path: str | Path):
        self.filename = str(path)
        self._zip: zipfile.ZipFile | None = None
        self._fd = -1

    def __enter__(self) -> ArchiveMembers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            os.close(self._fd)
            self._zip, self._fd = None, -1

    def _info(self, name: str) -> zipfile.ZipInfo:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.filename)
            self._fd = os.open(self.filename, os.O_RDONLY)
        return self._zip.getinfo(name)  # KeyError for a member it does not hold

    def size(self, name: str) -> int:
        return self._info(name).file_size

    def _offset(self, info: zipfile.ZipInfo) -> int:
        """Where a stored member's bytes start: after its local header's name and extra."""
        header = os.pread(self._fd, _LOCAL_HEADER.size, info.header_offset)
        if len(header) != _LOCAL_HEADER.size:
            raise MemberError(f"{self.filename}: {info.filename}: truncated local header")
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        if signature != _SIGNATURE:
            raise MemberError(f"{self.filename}: {info.filename}: bad local header")
        return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length

    def read(self, name: str) -> bytes:
        """The member's bytes, checked against its CRC-32."""
        info = self._info(name)
        if not _stored(info):
            return self._zip.read(info)  # compressed or encrypted: zipfile's way
        data = os.pread(self._fd, info.file_size, self._offset(info))
        self._check(info, len(data), data)
        return data

    def read_into(self, name: str, buffer: memoryview) -> None:
        """The member's bytes read into ``buffer`` (exactly its size), checked against its
        CRC-32: many members read into one buffer make one Arrow column with no copy."""
        info = self._info(name)
        if len(buffer) != info.file_size:
            raise ValueError(f"{name}: {info.file_size} bytes, not {len(buffer)}")
        if not _stored(info):
            buffer[:] = self._zip.read(info)
            return
        self._check(info, os.preadv(self._fd, [buffer], self._offset(info)), buffer)

    def _check(self, info: zipfile.ZipInfo, read: int, data: bytes | memoryview) -> None:
        if read != info.file_size or zlib.crc32(data) != info.CRC:
            raise MemberError(
                f"{self.filename}: {info.filename}: bad CRC-32 (the archive is damaged)"
            )

    def copy_to(self, name: str, target: Path) -> int:
        """The member written as ``target`` (created or truncated); returns its size."""
        info = self._info(name)
        if not _stored(info):
            target.write_bytes(self._zip.read(info))
            return info.file_size
        offset, left = self._offset(info), info.file_size
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while left:
                sent = os.sendfile(out, self._fd, offset, left)
                if sent == 0:
                    raise MemberError(f"{self.filename}: {name}: the archive ends early")
                offset, left = offset + sent, left - sent
        finally:
            os.close(out)
        return info.file_size


def _stored(info: zipfile.ZipInfo) -> bool:
    """Whether the member's bytes lie in the archive as they are (not compressed or
    encrypted)."""
    return info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1
