"""The job archive: one zip written under a temporary name and renamed only when complete, so
a job killed mid-write never leaves an archive behind (at most a ``.partial`` file)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEPTH_SCALE = 1000  # depth PNGs hold millimetres


def encode_png(image: np.ndarray) -> bytes:
    """PNG of an 8-bit RGB or 16-bit single-channel image (fast compression)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """Metres to uint16 millimetres; 0 where nothing was hit or beyond 65.535 m."""
    mm = np.rint(depth * DEPTH_SCALE)
    mm[~np.isfinite(mm) | (mm > 65535)] = 0
    return mm.astype(np.uint16)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


class AtomicArchive:
    """A zip at ``path`` that exists only once everything was written and closed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> AtomicArchive:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._zip = zipfile.ZipFile(self.partial, "w", zipfile.ZIP_STORED)
        return self

    def write(self, name: str, data: bytes, *, compress: bool = False) -> None:
        """Add a member; PNG, MP4 and Parquet are compressed already, so stored as they are."""
        self._zip.writestr(name, data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._zip.close()
        if exc_type is None:
            with open(self.partial, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)
