"""Frames of job archives with their labels drawn, for a look at what jobs produced: one frame
at its rendered size (``boxed_frame``, the API's preview) or a readable grid of frames
(``contact_sheet``, shown in the Dagster UI and the dataset report).

A contact sheet scales each frame up to its tile (nearest neighbour, so a 96 px render stays
sharp instead of blurred) and draws the labels at that size: each object's mask outline and
box in its category's colour, and its category on a filled label off the box's lines (above
or below the box where there is room) and away from labels already drawn. Each tile has a
caption bar with its job id above it.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np

from generators.labels import archive as arc

MIN_SHEET_WIDTH = 512  # px: narrower, a tile of three columns is too small to read
_JPEG_QUALITY = 88  # sharp text on its filled label; a 1024 px sheet of six frames ~150 KB
_GAP, _CAPTION = 4, 18  # px between tiles; height of a tile's caption bar
_FONT, _TEXT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.42
_BACKGROUND = (40, 40, 40)
_DISTRACTOR = (160, 160, 160)
# matplotlib's tab10 colours (BGR) but its grey, the distractors': a category keeps its colour
# on every tile and sheet (picked by a hash of its name)
_PALETTE = (
    (180, 119, 31),
    (14, 127, 255),
    (44, 160, 44),
    (40, 39, 214),
    (189, 103, 148),
    (75, 86, 140),
    (194, 119, 227),
    (34, 189, 188),
    (207, 190, 23),
)


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


def contact_sheet(
    archives: list[Path], *, width: int = 1024, columns: int = 3, frame: int = 0
) -> bytes:
    """JPEG bytes of ``contact_image`` of frame ``frame`` of each archive. JPEG, not PNG: the
    sheet is a file and also inlined as base64 in Dagster's metadata, where a PNG of upscaled
    rendered frames (noise, textures) weighs several times more; text sits on filled labels,
    so compression ringing does not make it less legible."""
    image = contact_image([(a, frame) for a in archives], width=width, columns=columns)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])[1].tobytes()


def contact_image(
    frames: list[tuple[Path, int]], *, width: int = 1024, columns: int = 3
) -> np.ndarray:
    """A BGR grid, ``width`` px wide, of the given (archive, frame) pairs with their labels;
    rows are filled left to right. Fewer frames than ``columns`` get wider tiles."""
    if not frames:
        raise ValueError("a contact sheet needs at least one frame")
    if width < MIN_SHEET_WIDTH:
        raise ValueError(f"a contact sheet is at least {MIN_SHEET_WIDTH} px wide, not {width}")
    columns = max(1, min(columns, len(frames)))
    tile_width = (width - _GAP * (columns - 1)) // columns
    tiles = [labelled_tile(archive, frame, tile_width) for archive, frame in frames]
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    return _stack_rows([_row(row, width) for row in rows])


def labelled_tile(archive: Path, frame: int, width: int) -> np.ndarray:
    """One frame scaled to ``width`` px with its objects' outlines, boxes and categories, under
    a caption bar naming the job (and the frame, past the first)."""
    image, instances, objects = read_frame(archive, frame)
    scale = width / image.shape[1]
    size = (width, round(image.shape[0] * scale))
    interpolation = cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA
    image = cv2.resize(image, size, interpolation=interpolation)
    instances = cv2.resize(instances, size, interpolation=cv2.INTER_NEAREST)
    boxes = [_scaled_box(o, scale) for o in objects]
    for o, box in zip(objects, boxes, strict=True):
        _outline(image, instances == o["instance_id"], _colour(o["category"]))
        cv2.rectangle(image, box[:2], box[2:], _colour(o["category"]), 1)
    taken: list[tuple[int, int, int, int]] = []  # labels after every line: none hides one
    for o, box in zip(objects, boxes, strict=True):
        taken.append(_label(image, o["category"], box, taken))
    caption = archive.stem + (f"  frame {frame}" if frame else "")
    return np.vstack([_caption(caption, width), image])


def read_frame(archive: Path, frame: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The frame's RGB (as BGR), its instance ids and its objects, read from the archive;
    ``ValueError`` when the archive has no such frame or its images do not decode (a
    damaged archive: the integrity check's findings)."""
    tables = arc.read_tables(archive)
    rows = [f for f in tables["frames"].to_pylist() if f["frame"] == frame]
    if not rows:
        raise ValueError(f"{archive.name} has no frame {frame}")
    with zipfile.ZipFile(archive) as z:
        rgb, seg = (z.read(rows[0][k]) for k in ("rgb_path", "segmentation_path"))
    image = cv2.imdecode(np.frombuffer(rgb, np.uint8), cv2.IMREAD_COLOR)
    instances = cv2.imdecode(np.frombuffer(seg, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or instances is None:
        raise ValueError(f"{archive.name}: frame {frame}'s images do not decode")
    objects = [o for o in tables["objects"].to_pylist() if o["frame"] == frame]
    return image, instances, objects


def _scaled_box(o: dict, scale: float) -> tuple[int, int, int, int]:
    """The box's first and last pixel (boxes end exclusive) at the tile's scale."""
    x0, y0 = round(o["box_x_min"] * scale), round(o["box_y_min"] * scale)
    x1, y1 = round(o["box_x_max"] * scale) - 1, round(o["box_y_max"] * scale) - 1
    return x0, y0, max(x0, x1), max(y0, y1)


def _colour(category: str) -> tuple[int, int, int]:
    if category == "distractor":
        return _DISTRACTOR
    return _PALETTE[zlib.crc32(category.encode()) % len(_PALETTE)]


def _outline(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(image, contours, -1, colour, 1)


def _label(
    image: np.ndarray, text: str, box: tuple[int, int, int, int], taken: list[tuple]
) -> tuple[int, int, int, int]:
    """Draw ``text`` on a filled label beside the box without covering its line: above it or
    below it (aligned with its left or right side), or just inside its top edge; the first
    place inside the image that overlaps no label in ``taken``, else the first inside the
    image. Returns the label's rectangle."""
    (w, h), baseline = cv2.getTextSize(text, _FONT, _TEXT_SCALE, 1)
    w, h = w + 4, h + baseline + 3
    x0, y0, x1, y1 = box
    left, right = (min(max(x, 0), image.shape[1] - w) for x in (x0, x1 + 1 - w))
    places = [(x, y) for y in (y0 - 1 - h, y1 + 2) for x in (left, right)] + [(left, y0 + 2)]
    inside = [p for p in places if 0 <= p[1] <= image.shape[0] - h] or places[-1:]
    fits = [p for p in inside if not any(_overlap((*p, p[0] + w, p[1] + h), t) for t in taken)]
    left, top = (fits or inside)[0]
    rect = (left, top, left + w, top + h)
    colour = _colour(text)
    cv2.rectangle(image, rect[:2], (rect[2] - 1, rect[3] - 1), colour, cv2.FILLED)
    cv2.putText(
        image,
        text,
        (left + 2, top + h - baseline - 2),
        _FONT,
        _TEXT_SCALE,
        _ink(colour),
        1,
        cv2.LINE_AA,
    )
    return rect


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _ink(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black text on a light label, white on a dark one (luma of the BGR colour)."""
    blue, green, red = colour
    return (0, 0, 0) if 0.114 * blue + 0.587 * green + 0.299 * red > 140 else (255, 255, 255)


def _caption(text: str, width: int) -> np.ndarray:
    bar = np.full((_CAPTION, width, 3), _BACKGROUND, np.uint8)
    cv2.putText(bar, text, (4, _CAPTION - 5), _FONT, _TEXT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return bar


def _row(tiles: list[np.ndarray], width: int) -> np.ndarray:
    """Tiles side by side with gaps, padded to ``width`` and to the tallest tile."""
    height = max(t.shape[0] for t in tiles)
    row = np.full((height, width, 3), _BACKGROUND, np.uint8)
    x = 0
    for tile in tiles:
        row[: tile.shape[0], x : x + tile.shape[1]] = tile
        x += tile.shape[1] + _GAP
    return row


def _stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    gap = np.full((_GAP, rows[0].shape[1], 3), _BACKGROUND, np.uint8)
    return np.vstack([part for r in rows for part in (r, gap)][:-1])
