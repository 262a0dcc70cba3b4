"""The Hugging Face export: an object-detection dataset in the Hub's Parquet layout.

::

    README.md                                   dataset card: YAML front matter, then the facts
    data/{split}-NNNNN-of-MMMMM.parquet         a split's rows in shards (zstd)

``datasets.load_dataset("parquet", data_dir=FOLDER)`` and ``load_dataset(FOLDER)`` (which
reads the card's ``configs``) both give the splits, and ``push_to_hub``-style uploads of the
folder work as they are. One row per frame:

- ``image``: the frame's RGB PNG (``Image`` feature: ``{bytes, path}``),
- ``job_id``, ``frame``, ``width``, ``height``,
- ``objects``: a ``Sequence`` of objects (a struct of lists, as Hub detection datasets use):
  ``id`` (unique in the export), ``instance_id``, ``category`` (a ``ClassLabel``: index =
  COCO category id - 1, names in catalog id order), ``bbox`` ``[x, y, width, height]`` float
  pixels (COCO's box format, from the box's pixel edges), ``area`` (the mask's pixels),
  ``segmentation`` (the mask as a compressed COCO RLE counts string over the whole
  ``[height, width]`` image, column-major: ``pycocotools.mask.decode({"size": [height,
  width], "counts": ...})``), ``occlusion``, ``truncation``,
- on request (option ``extra``): ``depth`` (16-bit PNG, millimetres along the optical axis),
  ``segmentation`` (16-bit PNG of instance ids), ``camera`` (``fx, fy, cx, cy`` columns).

Each shard's Parquet schema carries the ``huggingface`` metadata key (``info.features``) so
that ``datasets`` types the columns (``Image``, ``Sequence``, ``ClassLabel``) without being
told. This process builds the labels, ``row_group_rows`` rows of a split at a time (images
are large; ``datasets`` itself uses 100 for image datasets), and names each image's archive
member. The shards are written by a second process (``vario.export.hf_shards``), which
reads the images: a shard is closed once it passes ``shard_bytes`` of image data. Shards
are written in a temporary folder and named ``-of-MMMMM`` when ``close`` knows how many
there are.
"""

from __future__ import annotations

import json
import shutil
from typing import Any, ClassVar

import pyarrow as pa
import yaml

from vario.export.coco import coco_bbox
from vario.export.frame import BOX, SPLITS, ExportContext, ExportFrame, check_options
from vario.export.hf_shards import ARCHIVE, IMAGE, ShardWriter, member_column

PARTS = ".hf-parts"  # shards being written, inside the export's folder
OPTIONS = ("extra", "row_group_rows", "shard_bytes", "license", "license_name", "pretty_name")
EXTRAS = ("depth", "segmentation", "camera")
CAMERA = ("fx", "fy", "cx", "cy")
ROW_GROUP_ROWS = 100
SHARD_BYTES = 500 * 2**20  # as push_to_hub's default max_shard_size

OBJECT_FIELDS: list[tuple[str, pa.DataType, dict[str, Any]]] = [
    ("id", pa.int64(), {"dtype": "int64", "_type": "Value"}),
    ("instance_id", pa.int32(), {"dtype": "int32", "_type": "Value"}),
    ("category", pa.int64(), {}),  # ClassLabel: its names are the export's
    (
        "bbox",
        pa.list_(pa.float32(), 4),
        {"feature": {"dtype": "float32", "_type": "Value"}, "length": 4, "_type": "Sequence"},
    ),
    ("area", pa.int64(), {"dtype": "int64", "_type": "Value"}),
    ("segmentation", pa.string(), {"dtype": "string", "_type": "Value"}),
    ("occlusion", pa.float32(), {"dtype": "float32", "_type": "Value"}),
    ("truncation", pa.float32(), {"dtype": "float32", "_type": "Value"}),
]


def _value(dtype: str) -> dict[str, str]:
    return {"dtype": dtype, "_type": "Value"}


def schema(category_names: list[str], extra: tuple[str, ...]) -> pa.Schema:
    """The Arrow schema of every shard, with the ``huggingface`` metadata that types it."""
    objects = pa.struct([pa.field(name, pa.list_(t)) for name, t, _ in OBJECT_FIELDS])
    object_features = {
        name: feature or {"names": category_names, "_type": "ClassLabel"}
        for name, _, feature in OBJECT_FIELDS
    }
    fields = [
        ("image", IMAGE, {"_type": "Image"}),
        ("job_id", pa.string(), _value("string")),
        ("frame", pa.int32(), _value("int32")),
        ("width", pa.int32(), _value("int32")),
        ("height", pa.int32(), _value("int32")),
        ("objects", objects, {"feature": object_features, "_type": "Sequence"}),
    ]
    for kind in ("depth", "segmentation"):
        if kind in extra:
            fields.append((kind, IMAGE, {"_type": "Image"}))
    if "camera" in extra:
        fields += [(k, pa.float64(), _value("float64")) for k in CAMERA]
    features = {name: feature for name, _, feature in fields}
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema([pa.field(n, t) for n, t, _ in fields], metadata=metadata)


def _flat(values: list[Any], list_type: pa.DataType) -> pa.Array:
    """The values of a list column's lists, one after the other; a fixed-size list's
    (``bbox``) come flat, ``list_size`` at a time."""
    item = list_type.value_type
    if isinstance(item, pa.FixedSizeListType):
        return pa.FixedSizeListArray.from_arrays(pa.array(values, item.value_type), item.list_size)
    return pa.array(values, item)


class _Split:
    """One split's rows, buffered up to a row group (labels built, images named), then sent
    to the shard-writing process."""

    def __init__(self, writer: HuggingFaceWriter, name: str):
        self.owner = writer
        self.name = name
        self.columns: dict[str, list[Any]] = {}  # the stream's columns but ``objects``
        self.objects: dict[str, list[Any]] = {name: [] for name, _, _ in OBJECT_FIELDS}
        self.offsets = [0]  # where each row's objects start in ``objects``
        self.n_rows = 0
        self.n_objects = 0
        self.per_category: dict[str, int] = {}

    def append(self, row: dict[str, Any], objects: dict[str, list[Any]]) -> None:
        """One frame: its columns in ``row`` (by the stream's field names; an image column's
        value a ``{bytes, path}`` dict), its objects' fields in ``objects`` (``bbox`` flat,
        four numbers an object)."""
        for name, value in row.items():
            self.columns.setdefault(name, []).append(value)
        for name, values in objects.items():
            self.objects[name].extend(values)
        self.offsets.append(len(self.objects["id"]))
        self.n_rows += 1
        if len(self.offsets) > self.owner.row_group_rows:
            self.flush()

    def flush(self) -> None:
        if len(self.offsets) > 1:
            self.owner.shards.write(self.name, self._columns())
            self.columns = {}
            self.objects = {name: [] for name in self.objects}
            self.offsets = [0]

    def _columns(self) -> list[pa.Array]:
        """The buffered rows as Arrow columns, each built from one flat list: converting
        nested rows (``Table.from_pylist``) cost a fifth of the export."""
        columns = []
        for field in self.owner.shards.schema:
            if field.name == "objects":
                offsets = pa.array(self.offsets, pa.int32())
                children = [
                    pa.ListArray.from_arrays(offsets, _flat(self.objects[f.name], f.type), f.type)
                    for f in field.type
                ]
                columns.append(pa.StructArray.from_arrays(children, fields=list(field.type)))
            elif field.type == IMAGE:
                images = self.columns[field.name]
                parts = [
                    pa.array([image["bytes"] for image in images], pa.binary()),
                    pa.array([image["path"] for image in images], pa.string()),
                ]
                columns.append(pa.StructArray.from_arrays(parts, fields=list(IMAGE)))
            else:
                columns.append(pa.array(self.columns[field.name], field.type))
        return columns


class HuggingFaceWriter:
    """A Hugging Face ``datasets`` Parquet dataset with its card. Options: ``extra`` (among
    ``depth``, ``segmentation``, ``camera``), ``row_group_rows`` (default 100),
    ``shard_bytes`` (image bytes per shard, default 500 MiB), ``license`` (the card's,
    default ``other``), ``license_name`` (named on the card with ``license: other``),
    ``pretty_name``."""

    COLUMNS: ClassVar[dict[str, tuple[str, ...]]] = {
        "frames": ("width", "height", "rgb_path", "depth_path", "segmentation_path", *CAMERA),
        "objects": (
            "category",
            "instance_id",
            *BOX,
            "visible_pixels",
            "mask_rle",
            "occlusion",
            "truncation",
        ),
    }

    def __init__(self, ctx: ExportContext, **options: Any):
        check_options("hf", options, OPTIONS)
        extra = options.get("extra") or ()
        extra = tuple(extra.split(",")) if isinstance(extra, str) else tuple(extra)
        wrong = sorted(set(extra) - set(EXTRAS))
        if wrong:
            raise ValueError(f"hf: extra {wrong} unknown; extras: {', '.join(EXTRAS)}")
        self.extra = tuple(e for e in EXTRAS if e in extra)
        self.row_group_rows = int(options.get("row_group_rows", ROW_GROUP_ROWS))
        self.shard_size = int(options.get("shard_bytes", SHARD_BYTES))
        if self.row_group_rows < 1 or self.shard_size < 1:
            raise ValueError("hf: row_group_rows and shard_bytes are at least 1")
        self.license = str(options.get("license") or "other")
        self.license_name = options.get("license_name")
        self.pretty_name = options.get("pretty_name") or f"Vario {ctx.batch}"
        self.ctx = ctx
        self.ids = ctx.category_ids
        self.names = [n for n, _ in sorted(self.ids.items(), key=lambda item: item[1])]
        if [self.ids[n] for n in self.names] != list(range(1, len(self.names) + 1)):
            raise ValueError("hf: category ids are not 1..N, so not ClassLabel indices")
        self.parts_dir = ctx.out / PARTS
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.splits: dict[str, _Split] = {}
        self.next_object = 1
        self.shards = ShardWriter(self.parts_dir, schema(self.names, self.extra), self.shard_size)

    def __enter__(self) -> HuggingFaceWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.shards.__exit__(*exc)  # left on an error: the shard-writing process killed

    def add(self, frame: ExportFrame) -> None:
        if frame.split not in self.ctx.splits:
            raise ValueError(f"frame {frame.stem}: split {frame.split!r} not in the export's")
        split = self.splits.get(frame.split)
        if split is None:
            split = self.splits[frame.split] = _Split(self, frame.split)
        columns: dict[str, list[Any]] = {name: [] for name, _, _ in OBJECT_FIELDS}
        for obj in frame.objects:
            category = obj["category"]
            if category not in self.ids:
                raise ValueError(f"frame {frame.stem}: category {category!r} not in the catalog")
            columns["id"].append(self.next_object)
            self.next_object += 1
            columns["instance_id"].append(obj["instance_id"])
            columns["category"].append(self.ids[category] - 1)
            columns["bbox"].extend(float(v) for v in coco_bbox(obj))
            columns["area"].append(obj["visible_pixels"])
            columns["segmentation"].append(obj["mask_rle"])
            columns["occlusion"].append(obj["occlusion"])
            columns["truncation"].append(obj["truncation"])
            split.per_category[category] = split.per_category.get(category, 0) + 1
        split.n_objects += len(frame.objects)
        row = {
            "job_id": frame.job_id,
            "frame": frame.frame,
            "width": frame.row["width"],
            "height": frame.row["height"],
            ARCHIVE: frame.archive.filename,
        }
        self._image(row, "image", frame, "rgb", f"{frame.stem}.png")
        for kind in ("depth", "segmentation"):
            if kind in self.extra:
                self._image(row, kind, frame, kind, f"{frame.stem}_{kind}.png")
        if "camera" in self.extra:
            row.update({k: frame.row[k] for k in CAMERA})
        split.append(row, columns)

    @staticmethod
    def _image(row: dict[str, Any], column: str, frame: ExportFrame, kind: str, path: str) -> None:
        """The frame's image of ``kind`` in ``row``: named when it is the archive's as stored
        (the shard-writing process reads it), its bytes otherwise."""
        member = frame.member(kind)
        row[column] = {"bytes": None if member else frame.image(kind), "path": path}
        row[member_column(column)] = member

    def close(self) -> dict[str, Any]:
        """Every split's shards named and moved into ``data/``; the card written."""
        for split in self.splits.values():
            split.flush()
        shards = self.shards.finish()
        (self.ctx.out / "data").mkdir(parents=True, exist_ok=True)
        files: dict[str, list[str]] = {}
        for name in SPLITS:  # a split that got no frame has no shard: datasets refuses
            if name in shards:  # a split of no rows
                files[name] = []
                for n, (part, sha256) in enumerate(shards[name]):
                    path = f"data/{name}-{n:05d}-of-{len(shards[name]):05d}.parquet"
                    (self.parts_dir / part).rename(self.ctx.out / path)
                    if self.ctx.made is not None:
                        self.ctx.made(path, sha256)
                    files[name].append(path)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        self.ctx.write("README.md", self.card(files).encode())
        return {
            "format": "hf",
            "files": [*(f for names in files.values() for f in names), "README.md"],
            "rows": {name: self.splits[name].n_rows for name in files},
            "empty_splits": [s for s in self.ctx.splits if s not in files],
            "objects": {name: self.splits[name].n_objects for name in files},
        }

    def card(self, files: dict[str, list[str]]) -> str:
        """The dataset card: YAML front matter the Hub and ``load_dataset`` read, then the
        generator, batch, counts per split and per category, and the columns' meaning."""
        total = sum(self.splits[s].n_rows for s in files)
        front: dict[str, Any] = {
            "pretty_name": self.pretty_name,
            "license": self.license,
        }
        if self.license_name:
            front["license_name"] = self.license_name
        front.update(
            {
                "task_categories": ["object-detection"],
                "tags": ["synthetic", "vario", "instance-segmentation"],
                "size_categories": [_size_category(total)],
                "configs": [
                    {
                        "config_name": "default",
                        "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in files],
                    }
                ],
            }
        )
        lines = ["---", _yaml(front).rstrip(), "---", "", f"# {self.pretty_name}", ""]
        lines += [
            f"Synthetic object-detection data rendered by Vario: batch `{self.ctx.batch}`, "
            f"generator {', '.join(f'`{g}`' for g in self.ctx.generators) or '(none)'}.",
            "",
            "## Splits",
            "",
            "| split | frames | objects | shards |",
            "|---|---:|---:|---:|",
        ]
        for s in files:
            sp = self.splits[s]
            lines.append(f"| {s} | {sp.n_rows} | {sp.n_objects} | {len(files[s])} |")
        empty = [s for s in self.ctx.splits if s not in files]
        if empty:
            lines += ["", f"Splits that got no frame (not in the data): {', '.join(empty)}."]
        lines += ["", "## Objects per category", ""]
        lines.append("| category | label | " + " | ".join(files) + " |")
        lines.append("|---|---:|" + "---:|" * len(files))
        for label, name in enumerate(self.names):
            counts = [self.splits[s].per_category.get(name, 0) for s in files]
            if any(counts):
                lines.append(f"| {name} | {label} | " + " | ".join(map(str, counts)) + " |")
        lines += [
            "",
            "## Columns",
            "",
            "- `image`: the RGB frame (PNG); `job_id`, `frame`: where it comes from; "
            "`width`, `height` in pixels.",
            "- `objects`: per visible object: `id` (unique in the dataset), `instance_id` "
            "(in its job), `category` (ClassLabel: index = COCO category id - 1), `bbox` "
            "`[x, y, width, height]` in pixels (COCO format, tight box of the visible mask), "
            "`area` (visible pixels), `segmentation` (COCO compressed RLE counts over the "
            "`[height, width]` image), `occlusion` and `truncation` (shares in [0, 1]).",
        ]
        if "depth" in self.extra:
            lines.append("- `depth`: 16-bit PNG, millimetres along the optical axis; 0 = none.")
        if "segmentation" in self.extra:
            lines.append("- `segmentation`: 16-bit PNG of instance ids (0 = background).")
        if "camera" in self.extra:
            lines.append("- `fx`, `fy`, `cx`, `cy`: pinhole intrinsics in pixels.")
        lines += [
            "",
            'Load it with `datasets.load_dataset("parquet", data_dir=...)` or '
            "`datasets.load_dataset(<this folder>)`.",
            "",
        ]
        return "\n".join(lines)


def _size_category(n: int) -> str:
    for bound, name in ((10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K")):
        if n < bound:
            return name
    return "100K<n<1M" if n < 10**6 else "n>1M"


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
