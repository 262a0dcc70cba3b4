"""H.264 video of a job's RGB frames, encoded in memory with PyAV (FFmpeg's libx264)."""

from __future__ import annotations

import io

import av
import numpy as np


class VideoEncoder:
    """Feed RGB frames with ``add``; ``finish`` returns the MP4 bytes."""

    def __init__(self, width: int, height: int, fps: int, crf: int = 20):
        if width % 2 or height % 2:
            raise ValueError(f"H.264 (4:2:0) needs even image sizes, got {width}x{height}")
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        # a single thread: jobs already run in parallel, one per core
        self._stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}

    def add(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        self._container.mux(self._stream.encode(frame))

    def finish(self) -> bytes:
        self._container.mux(self._stream.encode())
        self._container.close()
        return self._buffer.getvalue()
