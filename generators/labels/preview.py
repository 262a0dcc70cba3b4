"""A frame with its labelled boxes drawn, for a quick look at what a job produced."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np

from generators.labels import archive as arc


def boxed_frame(archive: Path, frame: int = 0) -> bytes:
    """PNG bytes of one frame of a job archive with its boxes and categories drawn."""
    with zipfile.ZipFile(archive) as z:
        png = z.read(f"rgb/{frame:05d}.png")
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    objects = arc.read_tables(archive)["objects"].to_pylist()
    for o in (o for o in objects if o["frame"] == frame):
        top_left, bottom_right = (
            (o["box_x_min"], o["box_y_min"]),
            (o["box_x_max"] - 1, o["box_y_max"] - 1),
        )
        cv2.rectangle(image, top_left, bottom_right, (0, 255, 0), 1)
        cv2.putText(
            image,
            o["category"],
            (top_left[0], max(top_left[1] - 2, 8)),
            cv2.FONT_HERSHEY_PLAIN,
            0.7,
            (0, 255, 0),
            1,
        )
    return cv2.imencode(".png", image)[1].tobytes()
