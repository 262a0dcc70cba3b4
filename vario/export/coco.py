"""The COCO export: object-detection and instance-segmentation ("instances") annotations.

Follows the COCO data format for object detection as published with COCO 2017
(https://cocodataset.org/#format-data, the ``instances_{train,val}2017.json`` layout that
pycocotools' ``COCO`` and ``COCOeval`` read)::

    annotations/instances_{split}.json   info, licenses, images, annotations, categories
    images/{split}/{stem}.png            the frame's 8-bit RGB PNG, as in the job archive

- ``images``: ``id`` (1, 2, ... in the order the export streams frames, unique in the whole
  export and the same in every re-export of the same slice), ``file_name`` (relative to
  ``images/{split}``), ``width``, ``height``, and the extension field ``vario``:
  ``{job_id, frame, fx, fy, cx, cy}`` (pinhole intrinsics in pixels, docs/conventions.md).
- ``annotations``: ``id`` (1, 2, ..., unique in the export), ``image_id``, ``category_id``
  (the catalog's ids, ``Catalog.category_ids``), ``segmentation`` as compressed COCO RLE
  ``{size: [height, width], counts}`` (the row's ``mask_rle``), ``area`` (the mask's pixels,
  ``visible_pixels``), ``bbox`` ``[x, y, width, height]`` from the box's pixel edges,
  ``iscrowd`` 0, and, as in a job's own ``labels/coco.json``, ``instance_id``,
  ``occlusion`` and ``truncation``.
- ``categories``: every category of the catalog with its id, ``name`` and ``supercategory``.

Memory holds no split's annotations: each image, and each frame's annotations, are appended
as one line to a temporary file per split, and ``close`` streams those lines into the final
JSON.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import orjson

from vario.export.frame import BOX, SPLITS, ExportContext, ExportFrame, check_options

COCO_VERSION = "COCO 2017 instances (https://cocodataset.org/#format-data)"
PARTS = ".coco-parts"  # the temporary JSON-lines files, inside the export's folder
OPTIONS = ("description", "version", "supercategories")


def coco_bbox(obj: dict[str, Any]) -> list[int]:
    """``[x, y, width, height]`` of a row's box (integer pixel edges, max exclusive)."""
    x0, y0 = obj["box_x_min"], obj["box_y_min"]
    return [x0, y0, obj["box_x_max"] - x0, obj["box_y_max"] - y0]


class _SplitParts:
    """One split's images (a JSON object a line) and annotations (a frame's objects a line,
    comma-separated), in two temporary files."""

    def __init__(self, folder: Path, split: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.images_path = folder / f"{split}.images.jsonl"
        self.annotations_path = folder / f"{split}.annotations.jsonl"
        self.images: BinaryIO = self.images_path.open("wb")
        self.annotations: BinaryIO = self.annotations_path.open("wb")
        self.n_images = 0
        self.n_annotations = 0
        self.per_category: dict[str, int] = {}

    def close(self) -> None:
        self.images.close()
        self.annotations.close()


def _line(entry: dict[str, Any] | list[dict[str, Any]]) -> bytes:
    """``entry`` as compact JSON (orjson: a NaN would be ``null``) and a newline."""
    return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)


def _copy_array(out: BinaryIO, lines: Path) -> None:
    """The lines of ``lines`` (JSON values, or several comma-separated) as the elements of a
    JSON array, streamed."""
    out.write(b"[")
    with lines.open("rb") as source:
        for n, line in enumerate(source):
            out.write(b",\n" if n else b"\n")
            out.write(line.rstrip(b"\n"))
    out.write(b"\n]")


class CocoWriter:
    COLUMNS: ClassVar[dict[str, tuple[str, ...]]] = {
        "frames": ("width", "height", "fx", "fy", "cx", "cy", "rgb_path"),
        "objects": (
            "category",
            "instance_id",
            *BOX,
            "visible_pixels",
            "occlusion",
            "truncation",
            "mask_rle",
        ),
    }

    """COCO instances per split. Options: ``description`` and ``version`` (the ``info``
    block's, defaults: the batch's name and Vario's version), ``supercategories`` (a
    category name to supercategory mapping; others get ``object``)."""

    def __init__(self, ctx: ExportContext, **options: Any):
        check_options("coco", options, OPTIONS)
        self.ctx = ctx
        self.ids = ctx.category_ids
        supercategories = dict(options.get("supercategories") or {})
        unknown = sorted(set(supercategories) - set(self.ids))
        if unknown:
            raise ValueError(f"coco: supercategories for unknown categories {unknown}")
        self.categories = [
            {"id": i, "name": name, "supercategory": supercategories.get(name, "object")}
            for name, i in sorted(self.ids.items(), key=lambda item: item[1])
        ]
        self.info = {
            "description": options.get("description") or f"Vario batch {ctx.batch}",
            "version": str(options.get("version") or package_version("vario")),
            "year": datetime.now(UTC).year,
            "contributor": "Vario",
            "url": "",
            "date_created": datetime.now(UTC).isoformat(timespec="seconds"),
            "batch": ctx.batch,
            "format": COCO_VERSION,
        }
        self.parts_dir = ctx.out / PARTS
        self.splits: dict[str, _SplitParts] = {}
        self.next_image = 1
        self.next_annotation = 1

    def add(self, frame: ExportFrame) -> None:
        if frame.split not in self.ctx.splits:
            raise ValueError(f"frame {frame.stem}: split {frame.split!r} not in the export's")
        parts = self.splits.get(frame.split)
        if parts is None:
            parts = self.splits[frame.split] = _SplitParts(self.parts_dir, frame.split)
        file_name = f"{frame.stem}.png"
        self.ctx.write_image(f"images/{frame.split}/{file_name}", frame, "rgb")
        row = frame.row
        image_id = self.next_image
        self.next_image += 1
        parts.images.write(
            _line(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": row["width"],
                    "height": row["height"],
                    "vario": {
                        "job_id": frame.job_id,
                        "frame": frame.frame,
                        **{k: row[k] for k in ("fx", "fy", "cx", "cy")},
                    },
                }
            )
        )
        parts.n_images += 1
        size = [row["height"], row["width"]]
        annotations = []
        for obj in frame.objects:
            category = obj["category"]
            if category not in self.ids:
                raise ValueError(f"frame {frame.stem}: category {category!r} is not in the catalog")
            annotations.append(
                {
                    "id": self.next_annotation,
                    "image_id": image_id,
                    "category_id": self.ids[category],
                    "segmentation": {"size": size, "counts": obj["mask_rle"]},
                    "area": obj["visible_pixels"],
                    "bbox": coco_bbox(obj),
                    "iscrowd": 0,
                    "instance_id": obj["instance_id"],
                    "occlusion": obj["occlusion"],
                    "truncation": obj["truncation"],
                }
            )
            self.next_annotation += 1
            parts.per_category[category] = parts.per_category.get(category, 0) + 1
        if annotations:  # one line: the frame's annotations, comma-separated
            parts.annotations.write(_line(annotations)[1:-2] + b"\n")
            parts.n_annotations += len(annotations)

    def close(self) -> dict[str, Any]:
        """One ``instances_{split}.json`` for every split of the export (an empty one for a
        split that got no frame), assembled from the temporary lines, which are removed."""
        folder = self.ctx.out / "annotations"
        folder.mkdir(parents=True, exist_ok=True)
        info = {**self.info, "generators": list(self.ctx.generators)}
        head = {"info": info, "licenses": []}
        files, images, annotations = [], {}, {}
        for split in [s for s in SPLITS if s in self.ctx.splits or s in self.splits]:
            parts = self.splits.get(split) or _SplitParts(self.parts_dir, split)
            parts.close()
            path = folder / f"instances_{split}.json"
            with path.open("wb") as out:
                out.write(orjson.dumps(head)[:-1])  # the object left open
                out.write(b',\n"images": ')
                _copy_array(out, parts.images_path)
                out.write(b',\n"annotations": ')
                _copy_array(out, parts.annotations_path)
                out.write(b',\n"categories": ')
                out.write(orjson.dumps(self.categories))
                out.write(b"}\n")
            files.append(path.relative_to(self.ctx.out).as_posix())
            images[split] = parts.n_images
            annotations[split] = parts.n_annotations
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return {
            "format": "coco",
            "files": files,
            "images": images,
            "annotations": annotations,
            "categories": len(self.categories),
        }
