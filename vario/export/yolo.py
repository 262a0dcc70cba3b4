"""The YOLO export: the Ultralytics dataset layout, for detection or instance segmentation.

Follows the Ultralytics YOLO dataset format as documented for Ultralytics 8.3 (YOLO11,
https://docs.ultralytics.com/datasets/detect/ and https://docs.ultralytics.com/datasets/segment/)
and as read by ``ultralytics.data.utils.check_det_dataset`` and ``verify_image_label``::

    data.yaml                     path, train / val / test, names
    images/{split}/{stem}.png     the frame's 8-bit RGB PNG, as in the job archive
    labels/{split}/{stem}.txt     one line per object; empty for a frame without objects

(Ultralytics finds a label file by replacing ``/images/`` with ``/labels/`` in the image's
path and the suffix with ``.txt``.)

- ``class``: the 0-based index into ``names``, which lists every category of the catalog
  ordered by its category id (``Catalog.category_ids``: id 1 is index 0), so an export's
  class indices never depend on which categories its slice happened to hold.
- ``task="detect"`` (the default): ``class cx cy w h``, the box's centre and size
  normalised by the image's width and height. The box is the row's integer pixel edges
  (max exclusive, docs/conventions.md), so ``cx = (box_x_min + box_x_max) / 2 / width``
  and ``w = (box_x_max - box_x_min) / width``, as Ultralytics' COCO converter does.
- ``task="segment"``: ``class x1 y1 x2 y2 ...``, one polygon per object from its mask
  (``mask_rle``, decoded with pycocotools): the outer contours of the mask's parts
  (OpenCV ``findContours``, ``RETR_EXTERNAL``, ``CHAIN_APPROX_SIMPLE``), their vertices at
  boundary pixels' indices divided by the image size, as Ultralytics' own
  ``convert_segment_masks_to_yolo_seg`` writes them (so ``cv2.fillPoly``, which Ultralytics'
  ``polygon2mask`` uses, draws the mask's pixels again). Holes are not represented (an
  outer contour encloses them). An object whose mask has several parts (an occluder cutting
  it in two) gets *one* polygon through all of them, joined as Ultralytics' COCO converter
  does (``merge_multi_segment``): parts, largest first, are linked at their closest vertices
  by a zero-width bridge walked out on the way to the next part and back on the way home,
  so every visible part stays in the object's one instance. An object of a single part
  smaller than a triangle (one pixel, a one-pixel-wide line) repeats its last vertex up to
  three. The polygon spans pixel indices ``box_x_min .. box_x_max - 1``: the box
  Ultralytics derives from it is one pixel narrower than the ``detect`` box.
- ``data.yaml``: ``path`` (the export's folder, absolute: the folder ``vario.export.run``
  renames the finished export to), one key per split that holds at least one image
  (``train``, ``val``, ``test``: ``images/{split}``, relative to ``path``) and ``names``
  (``{index: name}``). Ultralytics' trainer requires ``train`` and ``val``: an export
  split without one of them is written as asked, and loads only for what it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import yaml
from pycocotools import mask as mask_utils

from vario.export.frame import BOX, SPLITS, ExportContext, ExportFrame, check_options
from vario.export.select import ExportRequestError

ULTRALYTICS_VERSION = "Ultralytics 8.3 (YOLO11) dataset format"
TASKS = ("detect", "segment")
OPTIONS = ("task",)
DIGITS = 6  # decimals of normalised coordinates: 1e-6 of 10,000 px is 0.01 px


def class_names(ctx: ExportContext) -> list[str]:
    """Every category of the catalog, ordered by category id: index i is class i."""
    ids = ctx.category_ids
    return sorted(ids, key=ids.__getitem__)


def _number(value: float) -> str:
    return f"{min(max(value, 0.0), 1.0):.{DIGITS}f}"


def box_line(obj: dict[str, Any], width: int, height: int) -> list[float]:
    """``cx cy w h`` of a row's box, normalised by the image size."""
    x0, y0, x1, y1 = (obj[f"box_{k}"] for k in ("x_min", "y_min", "x_max", "y_max"))
    return [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]


def mask_parts(rle: str, width: int, height: int) -> list[np.ndarray]:
    """The outer contour of each part of the mask, (N, 2) pixel indices (x, y), largest
    part first (by the number of its pixels)."""
    mask = mask_utils.decode({"size": [height, width], "counts": rle.encode()})
    mask = np.ascontiguousarray(mask)  # pycocotools decodes column-major; OpenCV wants rows
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) == 1:
        return [contours[0].reshape(-1, 2).astype(np.float64)]
    parts = []
    for contour in contours:
        points = contour.reshape(-1, 2).astype(np.float64)
        filled = np.zeros_like(mask)
        cv2.drawContours(filled, [contour], 0, 1, thickness=cv2.FILLED)
        pixels = int((filled & mask).sum())
        parts.append((-pixels, points[:, 0].min(), points[:, 1].min(), points))
    parts.sort(key=lambda p: p[:3])
    return [p[3] for p in parts]


def _closest(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    distances = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(distances)), distances.shape)
    return int(i), int(j)


def join_parts(parts: list[np.ndarray]) -> np.ndarray:
    """One polygon through every part, in Ultralytics' ``merge_multi_segment`` manner: each
    part is linked to the next at their closest vertices; the walk goes out along the chain
    (each part from where it is entered to where it leaves for the next), round the last
    part, and back (the rest of each part, back to where it was entered)."""
    if len(parts) == 1:
        return parts[0]
    links = [_closest(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
    entries = [links[0][0]] + [j for _, j in links]  # where each part is entered
    exits = [i for i, _ in links]  # where each part but the last leaves for the next
    out, back = [], []
    for k, part in enumerate(parts):
        ring = np.roll(part, -entries[k], axis=0)
        ring = np.concatenate([ring, ring[:1]])  # closed: entry ... entry
        if k == len(parts) - 1:
            out.append(ring)
            continue
        leave = (exits[k] - entries[k]) % len(part)
        out.append(ring[: leave + 1])
        back.append(ring[leave:])
    return np.concatenate(out + back[::-1])


def polygon(obj: dict[str, Any], width: int, height: int) -> list[float]:
    """``x1 y1 x2 y2 ...`` of the object's mask, normalised by the image size."""
    points = join_parts(mask_parts(obj["mask_rle"], width, height))
    while len(points) < 3:
        points = np.concatenate([points, points[-1:]])
    return (points / np.array([width, height], float)).reshape(-1).tolist()


class YoloWriter:
    """Images and label files per split as the frames come; ``data.yaml`` at the end."""

    COLUMNS: ClassVar[dict[str, tuple[str, ...]]] = {
        "frames": ("width", "height", "rgb_path"),
        "objects": ("category", *BOX, "mask_rle"),
    }

    def __init__(self, ctx: ExportContext, **options: Any):
        check_options("yolo", options, OPTIONS)
        task = options.get("task", "detect")
        if task not in TASKS:
            raise ExportRequestError(f"yolo task: one of {', '.join(TASKS)} (got {task!r})")
        self.ctx, self.task = ctx, task
        self.names = class_names(ctx)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.images: dict[str, int] = {}
        self.lines = 0

    def add(self, frame: ExportFrame) -> None:
        width, height = frame.row["width"], frame.row["height"]
        lines = []
        for obj in frame.objects:
            if obj["category"] not in self.index:
                raise ValueError(f"category {obj['category']!r} is not in the export's catalog")
            if self.task == "detect":
                values = box_line(obj, width, height)
            else:
                values = polygon(obj, width, height)
            lines.append(" ".join([str(self.index[obj["category"]]), *map(_number, values)]))
        image = Path("images", frame.split, f"{frame.stem}.png")
        self.ctx.write_image(image, frame, "rgb")
        text = "".join(f"{line}\n" for line in lines)
        self.ctx.write(Path("labels", frame.split, f"{frame.stem}.txt"), text.encode())
        self.images[frame.split] = self.images.get(frame.split, 0) + 1
        self.lines += len(lines)

    def close(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": str(self.ctx.destination)}
        for split in (s for s in SPLITS if s in self.images):  # splits with images
            data[split] = f"images/{split}"
        data["names"] = dict(enumerate(self.names))
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        self.ctx.write(Path("data.yaml"), text.encode())
        return {
            "format": ULTRALYTICS_VERSION,
            "task": self.task,
            "data_yaml": "data.yaml",
            "images": dict(self.images),
            "label_lines": self.lines,
            "names": len(self.names),
        }
