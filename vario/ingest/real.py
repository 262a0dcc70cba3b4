"""Real datasets: a COCO instances file and its images, ingested beside the synthetic batches
so that the same views, dataset tests, domain-gap report and evaluations read both.

    real/dataset=NAME/images/KEY.EXT              each image once, KEY = 16 hex of its SHA-256
    real/dataset=NAME/version=V/frames.parquet    one row per image (views.REAL_FRAMES)
    real/dataset=NAME/version=V/objects.parquet   one row per annotation kept (views.REAL_OBJECTS)
    real/dataset=NAME/version=V/ingest.json       inputs, category mapping, counts
    real/dataset=NAME/current                     the current V, written last

A version is named by what was ingested (the annotation file's bytes, each image's digest, the
category each COCO category became), so the same inputs again are the same version and add
nothing; an edited file is a new version and the old one stays. Everything is checked before
anything is written: the file's structure, every image (present, inside the images folder,
within the size caps, decodable, the size the file says), every box and mask. A bad input
raises ``IngestError`` listing the bad rows and leaves the data folder as it was. Then the
images are copied (content-addressed, each under a temporary name until whole), the version
folder is written under a temporary name and renamed, and ``current`` is written last.

A frame's ``job_id`` is its image's content key and its ``frame`` 0; an image whose very bytes
came earlier in the file (a duplicate) is stored once and its later copies get frames 1, 2, ...
Boxes become the tables' integer pixel edges, as synthetic ones: ``floor(x), floor(y),
ceil(x + w), ceil(y + h)`` clipped to the image (docs/conventions.md "Boxes"); masks are kept as
compressed COCO RLE (polygons and uncompressed RLE converted with pycocotools).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from generators.labels.archive import write_atomic
from generators.labels.frame_labels import image_stats
from generators.scene.catalog import default_catalog
from vario.ingest.common import (
    IngestError,
    IngestSummary,
    Problems,
    Progress,
    checked_name,
    read_capped,
    read_record,
    set_current,
    version_folder,
    version_of,
    write_record,
)
from vario.ingest.rle import check_counts
from vario.store.layout import DataStore
from vario.store.views import REAL_FRAMES, REAL_OBJECTS

MAX_ANNOTATIONS_BYTES = 512 << 20  # a COCO file is parsed whole: Python holds ~5x its size
MAX_IMAGE_BYTES = 64 << 20
MAX_MAP_BYTES = 1 << 20
MAX_POLYGON_VALUES = 1_000_000  # coordinates in one annotation's polygons
FALLBACK_MAX_PIXELS = 89_478_485  # Pillow's default, if someone switched its limit off
BOX_TOLERANCE = 1.0  # pixels a box may reach past the image's border (then clipped to it)
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
_ID = Annotated[int, Strict(), Field(ge=0, lt=2**63)]
_FINITE = Annotated[float, Field(allow_inf_nan=False)]


class _Image(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: _ID
    file_name: str = Field(min_length=1, max_length=4096)
    width: Annotated[int, Strict(), Field(gt=0, lt=2**31)]
    height: Annotated[int, Strict(), Field(gt=0, lt=2**31)]


class _Annotation(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: _ID
    image_id: _ID
    category_id: _ID
    bbox: tuple[_FINITE, _FINITE, _FINITE, _FINITE]
    segmentation: Any = None
    area: _FINITE | None = None
    iscrowd: Literal[0, 1] = 0


class _Category(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: _ID
    name: str = Field(min_length=1, max_length=256)


@dataclass
class _Source:
    """One image of the file, as checked."""

    entry: _Image
    path: Path
    digest: str = ""
    ext: str = ""
    frame: int = 0  # 0, or n for the file's (n+1)-th image with these very bytes
    brightness: float = 0.0
    contrast: float = 0.0

    @property
    def key(self) -> str:
        return self.digest[:16]


@dataclass
class _Object:
    """One annotation kept."""

    row: int  # its position in the file's annotations
    annotation_id: int
    image_id: int
    instance_id: int
    category: str
    box: tuple[int, int, int, int]
    counts: str | None
    area: int  # without a mask: the file's area, rounded


def ingest_coco_dataset(
    store: DataStore,
    name: str,
    annotations: Path,
    images_dir: Path,
    *,
    category_map: dict[str, str | None] | None = None,
    on_progress: Progress | None = None,
) -> IngestSummary:
    """Ingest the COCO instances file ``annotations`` (images' ``file_name`` relative to
    ``images_dir``) as real dataset ``name``. Categories become the catalog's by name, or
    through ``category_map`` (COCO name to catalog name; None leaves one out); annotations of
    a category that maps to none, and crowd annotations, are skipped and counted. Raises
    ``IngestError`` for bad input, before anything is written."""
    progress = on_progress or (lambda step, done, total: None)
    name = checked_name(name, "dataset name")
    if store.batch_dir(name).exists():
        raise IngestError([f"{name!r} is a batch: a real dataset needs a name of its own"])
    annotations, images_dir = Path(annotations), Path(images_dir)
    if not images_dir.is_dir():
        raise IngestError([f"images: {images_dir} is not a folder"])
    raw = read_capped(annotations, MAX_ANNOTATIONS_BYTES, "annotations")
    doc = _parse(raw, annotations)
    catalog = set(default_catalog().category_ids())
    mapping = _checked_mapping(category_map, catalog)

    problems = Problems()
    sources, bad_images = _images(doc["images"], images_dir, problems)
    categories = _categories(doc["categories"], mapping, catalog, problems)
    objects, skipped = _objects(doc["annotations"], sources, bad_images, categories, problems)
    _check_masks(objects, sources, problems)
    problems.check(f"annotations {annotations}")
    _inspect(sources, problems, progress)
    problems.check(f"images in {images_dir}")

    version = version_of(
        "real",
        {
            "annotations": hashlib.sha256(raw).hexdigest(),
            "categories": sorted([i, n, c] for i, (n, c) in categories.items()),
            "images": [s.digest for s in sources.values()],
        },
    )
    folder = store.real_version_dir(name, version)
    if folder.is_dir():
        was = store.real_current(name)
        if was != version:
            set_current(store.real_current_path(name), version)
        record = read_record(folder)
        counts = (record["frames"], record["objects"], record["skipped"])
        return IngestSummary("dataset", name, version, folder, was == version, *counts)

    _measure(sources, problems, progress)
    problems.check(f"images in {images_dir}")
    copied = _copy(store, name, sources, progress)
    frames, rows = _tables(store, name, sources, objects)
    record = {
        "dataset": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "annotations": {
            "path": str(annotations.absolute()),
            "sha256": hashlib.sha256(raw).hexdigest(),
        },
        "images_dir": str(images_dir.absolute()),
        "categories": [
            {"id": i, "name": n, "category": c} for i, (n, c) in sorted(categories.items())
        ],
        "frames": frames.num_rows,
        "objects": rows.num_rows,
        "skipped": skipped,
    }
    with version_folder(folder) as partial:
        pq.write_table(frames, partial / "frames.parquet", compression="zstd")
        pq.write_table(rows, partial / "objects.parquet", compression="zstd")
        write_record(partial, record)
    set_current(store.real_current_path(name), version)
    return IngestSummary(
        "dataset", name, version, folder, False, frames.num_rows, rows.num_rows, skipped, copied
    )


def load_category_map(path: Path) -> dict[str, str | None]:
    """A category mapping file (YAML or JSON): ``coco name: catalog name`` (or null)."""
    data = read_capped(Path(path), MAX_MAP_BYTES, "category map")
    try:
        mapping = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise IngestError([f"category map: {path} is not valid YAML ({exc})"]) from None
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in mapping.items()
    ):
        raise IngestError([f"category map: {path} must map COCO names to catalog names (or null)"])
    return mapping


def dataset_categories(
    store: DataStore, name: str, version: str
) -> dict[int, tuple[str, str | None]]:
    """A real dataset version's COCO categories: id to (COCO name, catalog name or None)."""
    record = read_record(store.real_version_dir(name, version))
    return {c["id"]: (c["name"], c["category"]) for c in record["categories"]}


def _parse(raw: bytes, path: Path) -> dict[str, list]:
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IngestError([f"annotations: {path} is not valid JSON ({exc})"]) from None
    if not isinstance(doc, dict):
        raise IngestError([f"annotations: {path} is not a COCO instances object"])
    missing = [
        k for k in ("images", "annotations", "categories") if not isinstance(doc.get(k), list)
    ]
    if missing:
        raise IngestError([f"annotations: {path} has no list {', '.join(missing)}"])
    if not doc["images"]:
        raise IngestError([f"annotations: {path} lists no images"])
    return doc


def _checked_mapping(
    mapping: dict[str, str | None] | None, catalog: set[str]
) -> dict[str, str | None]:
    mapping = dict(mapping or {})
    unknown = sorted({v for v in mapping.values() if v is not None and v not in catalog})
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise IngestError(
            [f"category map: {names} not in the catalog ({', '.join(sorted(catalog))})"]
        )
    return mapping


def _row_error(what: str, i: int, row: Any, exc: ValidationError) -> str:
    ident = f" (id {row.get('id')!r})" if isinstance(row, dict) and "id" in row else ""
    reasons = "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors()[:3]
    )
    return f"{what}[{i}]{ident}: {reasons}"


def _safe_path(file_name: str, root: Path) -> tuple[Path | None, str | None]:
    """The image's path inside ``root``, or why ``file_name`` is refused: absolute, with
    ``..``, a backslash or a drive, or resolving (through a link) outside ``root``."""
    if "\x00" in file_name or "\\" in file_name or re.match(r"^[A-Za-z]:", file_name):
        return None, "is not a plain relative path"
    relative = PurePosixPath(file_name)
    if relative.is_absolute() or file_name.startswith("~"):
        return None, "is an absolute path"
    if ".." in relative.parts:
        return None, "climbs out of the images folder (..)"
    path = root / relative
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        return None, "resolves outside the images folder"
    if not path.is_file():
        return None, f"no such image file {path}"
    return path, None


def _images(rows: list, root: Path, problems: Problems) -> tuple[dict[int, _Source], set[int]]:
    sources: dict[int, _Source] = {}
    bad: set[int] = set()
    names: dict[str, int] = {}
    for i, row in enumerate(rows):
        try:
            entry = _Image.model_validate(row)
        except ValidationError as exc:
            problems.add(_row_error("images", i, row, exc))
            if isinstance(row, dict) and isinstance(row.get("id"), int):
                bad.add(row["id"])
            continue
        where = f"images[{i}] (id {entry.id})"
        if entry.id in sources or entry.id in bad:
            problems.add(f"{where}: id used twice")
            continue
        if entry.file_name in names:
            problems.add(
                f"{where}: file_name {entry.file_name!r} also images[{names[entry.file_name]}]'s"
            )
        names[entry.file_name] = i
        path, reason = _safe_path(entry.file_name, root)
        if reason:
            problems.add(f"{where}: file_name {entry.file_name[:200]!r} {reason}")
            bad.add(entry.id)
            continue
        sources[entry.id] = _Source(entry, path)
    return sources, bad


def _categories(
    rows: list, mapping: dict[str, str | None], catalog: set[str], problems: Problems
) -> dict[int, tuple[str, str | None]]:
    """COCO category id to (its name, the catalog category it becomes, or None)."""
    categories: dict[int, tuple[str, str | None]] = {}
    for i, row in enumerate(rows):
        try:
            category = _Category.model_validate(row)
        except ValidationError as exc:
            problems.add(_row_error("categories", i, row, exc))
            continue
        if category.id in categories:
            problems.add(f"categories[{i}] (id {category.id}): id used twice")
            continue
        by_name = category.name if category.name in catalog else None
        target = mapping.get(category.name, by_name)  # the map first, then the name
        categories[category.id] = (category.name, target)
    return categories


def _objects(
    rows: list,
    sources: dict[int, _Source],
    bad_images: set[int],
    categories: dict[int, tuple[str, str | None]],
    problems: Problems,
) -> tuple[list[_Object], dict[str, int]]:
    objects: list[_Object] = []
    skipped: dict[str, int] = {}
    seen: set[int] = set()
    per_image: dict[int, int] = {}
    for i, row in enumerate(rows):
        try:
            a = _Annotation.model_validate(row)
        except ValidationError as exc:
            problems.add(_row_error("annotations", i, row, exc))
            continue
        where = f"annotations[{i}] (id {a.id})"
        if a.id in seen:
            problems.add(f"{where}: id used twice")
            continue
        seen.add(a.id)
        if a.image_id in bad_images:
            continue  # that image's problem is reported
        source = sources.get(a.image_id)
        if source is None:
            problems.add(f"{where}: image_id {a.image_id} is not an image of the file")
            continue
        if a.category_id not in categories:
            problems.add(f"{where}: category_id {a.category_id} is not a category of the file")
            continue
        instance_id = per_image[a.image_id] = per_image.get(a.image_id, 0) + 1
        coco_name, category = categories[a.category_id]
        if a.iscrowd:
            skipped["crowd"] = skipped.get("crowd", 0) + 1
            continue
        if category is None:
            reason = f"category {coco_name}"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        width, height = source.entry.width, source.entry.height
        box, reason = _box(a.bbox, width, height)
        if reason:
            problems.add(f"{where}: {reason}")
            continue
        counts, reason = _mask(a.segmentation, height, width)
        if reason:
            problems.add(f"{where}: segmentation {reason}")
            continue
        area = a.area if a.area is not None else (box[2] - box[0]) * (box[3] - box[1])
        objects.append(
            _Object(i, a.id, a.image_id, instance_id, category, box, counts, round(area))
        )
    return objects, skipped


def _box(
    bbox: tuple[float, float, float, float], width: int, height: int
) -> tuple[tuple[int, int, int, int], str | None]:
    """The tables' integer box edges of a COCO ``[x, y, w, h]``, or why it is refused."""
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return (0, 0, 0, 0), f"bbox {list(bbox)}: width and height must be > 0"
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return (0, 0, 0, 0), f"bbox {list(bbox)} is outside the {width}x{height} image"
    box = (
        max(0, math.floor(x)),
        max(0, math.floor(y)),
        min(width, math.ceil(x + w)),
        min(height, math.ceil(y + h)),
    )
    if box[2] <= box[0] or box[3] <= box[1]:
        return box, f"bbox {list(bbox)} covers no pixel of the {width}x{height} image"
    return box, None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _mask(segmentation: Any, height: int, width: int) -> tuple[str | None, str | None]:
    """The compressed RLE counts string of a COCO segmentation (None: no mask), or why it is
    refused. A counts string given as such is checked later, with all the others."""
    if segmentation is None or segmentation == []:
        return None, None
    if isinstance(segmentation, list):
        if not all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(map(_is_number, p))
            for p in segmentation
        ):
            return None, "polygons must be lists of at least 3 finite x, y pairs"
        if sum(map(len, segmentation)) > MAX_POLYGON_VALUES:
            return None, f"has more than {MAX_POLYGON_VALUES:,} polygon coordinates"
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        return rle["counts"].decode("ascii"), None
    if not isinstance(segmentation, dict):
        return None, "is neither polygons nor RLE"
    if segmentation.get("size") != [height, width]:
        return None, f"size {segmentation.get('size')!r} is not the image's [{height}, {width}]"
    counts = segmentation.get("counts")
    if isinstance(counts, str):
        return counts, None
    if isinstance(counts, list) and all(
        isinstance(c, int) and not isinstance(c, bool) for c in counts
    ):
        if any(c < 0 for c in counts) or sum(counts) != height * width:
            return None, f"RLE counts must be >= 0 and add up to {height} x {width}"
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        return rle["counts"].decode("ascii"), None
    return None, "RLE counts must be a string or a list of integers"


def _check_masks(objects: list[_Object], sources: dict[int, _Source], problems: Problems) -> None:
    """Every mask a valid RLE of its image's size; ``area`` becomes its pixel count."""
    masked = [o for o in objects if o.counts is not None]
    if not masked:
        return
    heights = np.array([sources[o.image_id].entry.height for o in masked])
    widths = np.array([sources[o.image_id].entry.width for o in masked])
    ok, area = check_counts(pa.array([o.counts for o in masked], pa.string()), heights, widths)
    for o, good, pixels in zip(masked, ok.tolist(), area.tolist(), strict=True):
        if good:
            o.area = pixels
        else:
            problems.add(
                f"annotations[{o.row}] (id {o.annotation_id}): segmentation counts are not a "
                f"valid RLE of a {sources[o.image_id].entry.height}x"
                f"{sources[o.image_id].entry.width} mask"
            )


def _max_pixels() -> int:
    return Image.MAX_IMAGE_PIXELS or FALLBACK_MAX_PIXELS


def _read_image(source: _Source, problems: Problems, where: str) -> bytes | None:
    size = source.path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        problems.add(f"{where}: {size:,} bytes, more than the {MAX_IMAGE_BYTES:,} allowed")
        return None
    return source.path.read_bytes()


def _open(data: bytes) -> Image.Image:
    """An image's header, the decompression-bomb limit enforced by us (not a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


def _inspect(sources: dict[int, _Source], problems: Problems, progress: Progress) -> None:
    """Each image's digest, format and size (its header only: nothing decoded yet)."""
    keys: dict[str, int] = {}
    total = len(sources)
    for n, source in enumerate(sources.values()):
        progress("hash images", n, total)
        where = f"image {source.entry.id} ({source.entry.file_name})"
        data = _read_image(source, problems, where)
        if data is None:
            continue
        source.digest = hashlib.sha256(data).hexdigest()
        try:
            image = _open(data)
            fmt, (width, height) = image.format, image.size
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
            problems.add(f"{where}: not an image Vario reads ({str(exc)[:120]})")
            continue
        if fmt not in IMAGE_FORMATS:
            problems.add(f"{where}: {fmt} images are not read (only {', '.join(IMAGE_FORMATS)})")
            continue
        if width * height > _max_pixels():
            problems.add(
                f"{where}: {width}x{height} pixels, more than Pillow's limit {_max_pixels():,}"
            )
            continue
        if (width, height) != (source.entry.width, source.entry.height):
            problems.add(
                f"{where}: {width}x{height} pixels, the file says "
                f"{source.entry.width}x{source.entry.height}"
            )
            continue
        source.ext = IMAGE_FORMATS[fmt]
        source.frame = keys.get(source.key, 0)
        keys[source.key] = source.frame + 1
    progress("hash images", total, total)


def _measure(sources: dict[int, _Source], problems: Problems, progress: Progress) -> None:
    """Decode every image: brightness and contrast as synthetic frames have them."""
    total = len(sources)
    for n, source in enumerate(sources.values()):
        progress("read images", n, total)
        where = f"image {source.entry.id} ({source.entry.file_name})"
        data = _read_image(source, problems, where)
        if data is None:
            continue
        if hashlib.sha256(data).hexdigest() != source.digest:
            problems.add(f"{where}: changed while being ingested")
            continue
        try:
            rgb = np.asarray(_open(data).convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            problems.add(f"{where}: cannot be decoded ({str(exc)[:120]})")
            continue
        source.brightness, source.contrast = image_stats(rgb)
    progress("read images", total, total)


def _copy(store: DataStore, name: str, sources: dict[int, _Source], progress: Progress) -> int:
    """Copy each image not in the dataset's image folder yet (under a temporary name until
    whole, then renamed: an image there is always complete)."""
    folder = store.real_images_dir(name)
    copied, total = 0, len(sources)
    for n, source in enumerate(sources.values()):
        progress("copy images", n, total)
        target = folder / f"{source.key}{source.ext}"
        if target.exists():
            continue
        data = source.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != source.digest:
            raise IngestError([f"image {source.entry.file_name}: changed while being ingested"])
        write_atomic(target, data)
        copied += 1
    progress("copy images", total, total)
    return copied


def _tables(
    store: DataStore, name: str, sources: dict[int, _Source], objects: list[_Object]
) -> tuple[pa.Table, pa.Table]:
    """The version's frames (the file's image order) and objects (by image, then file order)."""
    order = {image_id: n for n, image_id in enumerate(sources)}
    objects = sorted(objects, key=lambda o: (order[o.image_id], o.row))
    counts: dict[int, int] = {}
    for o in objects:
        counts[o.image_id] = counts.get(o.image_id, 0) + 1
    images = store.real_images_dir(name).relative_to(store.root).as_posix()
    s = list(sources.values())
    frames = pa.table(
        {
            "batch_id": [name] * len(s),
            "job_id": [x.key for x in s],
            "frame": [x.frame for x in s],
            "width": [x.entry.width for x in s],
            "height": [x.entry.height for x in s],
            "brightness": [x.brightness for x in s],
            "contrast": [x.contrast for x in s],
            "n_objects": [counts.get(x.entry.id, 0) for x in s],
            "rgb_path": [f"{images}/{x.key}{x.ext}" for x in s],
            "rgb_sha256": [x.digest for x in s],
            "image_id": [x.entry.id for x in s],
            "file_name": [x.entry.file_name for x in s],
        },
        schema=REAL_FRAMES,
    )
    rows = pa.table(
        {
            "batch_id": [name] * len(objects),
            "job_id": [sources[o.image_id].key for o in objects],
            "frame": [sources[o.image_id].frame for o in objects],
            "instance_id": [o.instance_id for o in objects],
            "category": [o.category for o in objects],
            "box_x_min": [o.box[0] for o in objects],
            "box_y_min": [o.box[1] for o in objects],
            "box_x_max": [o.box[2] for o in objects],
            "box_y_max": [o.box[3] for o in objects],
            "visible_pixels": [o.area for o in objects],
            "mask_rle": [o.counts for o in objects],
            "annotation_id": [o.annotation_id for o in objects],
        },
        schema=REAL_OBJECTS,
    )
    return frames, rows
