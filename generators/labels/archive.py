"""The job archive: one zip written under a temporary name and renamed only when complete, so
a job killed mid-write never leaves an archive behind (at most a ``.partial`` file)."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEPTH_SCALE = 1000  # depth PNGs hold millimetres
FLOW_SCALE, FLOW_OFFSET = 64.0, 2**15  # KITTI's flow PNG: (value - 2^15) / 64 pixels
LABEL_TABLES = ("jobs", "frames", "objects", "events")


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


def flow_to_png16(flow: np.ndarray) -> np.ndarray:
    """(dx, dy) pixels to KITTI's 16-bit (u, v, valid); invalid beyond +-511 px."""
    coded = np.rint(flow * FLOW_SCALE + FLOW_OFFSET)
    valid = np.all((coded >= 0) & (coded <= 65535) & np.isfinite(coded), axis=-1)
    out = np.zeros((*flow.shape[:2], 3), np.uint16)
    out[..., :2] = np.where(valid[..., None], coded, FLOW_OFFSET)
    out[..., 2] = valid
    return out


def png16_to_flow(png: np.ndarray) -> np.ndarray:
    """The inverse of ``flow_to_png16``: (dx, dy) pixels, NaN where not valid."""
    flow = (png[..., :2].astype(np.float32) - FLOW_OFFSET) / FLOW_SCALE
    flow[png[..., 2] == 0] = np.nan
    return flow


def unit_to_png16(values: np.ndarray, lo: float) -> np.ndarray:
    """Values in [lo, 1] (normals: lo = -1; object coordinates: lo = 0) to 16-bit."""
    return np.rint((np.clip(values, lo, 1.0) - lo) / (1.0 - lo) * 65535).astype(np.uint16)


# Dense maps some renderers add: (archive folder, encoder).
DENSE_MAPS = {
    "normals": ("normals", lambda v: unit_to_png16(v, -1.0)),
    "object_coordinates": ("object_coordinates", lambda v: unit_to_png16(v, 0.0)),
    "forward_flow": ("flow/forward", flow_to_png16),
    "backward_flow": ("flow/backward", flow_to_png16),
}


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """The temporary name ``.NAME.PID.partial`` beside ``path`` to write a file under, for a
    writer that streams it (more than fits in memory). When the block ends without an error
    the file is synced and renamed to ``path``; on an error or an interrupt (a full disk,
    Ctrl-C, the writer's own) it is removed, so ``path`` holds a complete file or what it held
    before. A process killed outright leaves at most the partial file, named by its pid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a whole file under a temporary name, sync it, then rename it into place."""
    with atomic_path(path) as partial:
        partial.write_bytes(data)


def is_complete(path: Path) -> bool:
    """A zip whose directory lists the job description and every label table. Archives
    appear only by atomic rename once closed and synced, so a readable directory means a
    whole archive."""
    required = {"job.json", *(f"labels/{t}.parquet" for t in LABEL_TABLES)}
    try:
        with zipfile.ZipFile(path) as z:
            return required <= set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def read_tables(path: Path) -> dict[str, pa.Table]:
    """The label tables stored in a job archive, read single-threaded through ``ParquetFile``
    from an Arrow buffer. Arrow's reads through a Python file object (``io.BytesIO``) or its
    datasets path (``read_table``) run on its I/O threads, and a read's last piece of work,
    still on such a thread at the process's exit, needs the interpreter lock to let go of
    the Python bytes it held: the thread ends mid-destructor and the process aborts
    ("terminate called without an active exception", apache/arrow #33975; a core dump
    showed it). That failed finished Cycles jobs: about 1 process in 200 on a loaded
    machine through ``io.BytesIO``. This way no Arrow thread starts."""
    with zipfile.ZipFile(path) as z:
        return {
            t: pq.ParquetFile(pa.BufferReader(z.read(f"labels/{t}.parquet"))).read(
                use_threads=False
            )
            for t in LABEL_TABLES
        }


class AtomicArchive:
    """A zip at ``path`` that exists only once everything was written and closed.

    While writing, it is ``.NAME.PID.partial``: the process id tells whose it is, so a parent
    can remove what a killed worker left.
    """

    def __init__(self, path: Path, *, pid: int | None = None):
        self.path = Path(path)
        pid = os.getpid() if pid is None else pid
        self.partial = self.path.with_name(f".{self.path.name}.{pid}.partial")
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> AtomicArchive:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._zip = zipfile.ZipFile(self.partial, "w", zipfile.ZIP_STORED)
        return self

    def write(self, name: str, data: bytes, *, compress: bool = False) -> None:
        """Add a member; PNG, MP4 and Parquet are compressed already, so stored as they are."""
        self._zip.writestr(name, data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._zip.close()
            if exc_type is None:
                with open(self.partial, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(self.partial, self.path)
        finally:  # an error, also one closing or syncing (a full disk): nothing stays
            self.partial.unlink(missing_ok=True)
