"""A model's predictions on a dataset (a synthetic batch or a real dataset), ingested so that
evaluations and ad-hoc queries read them beside the ground truth (views ``predictions`` and
``predictions_all``)::

    predictions/model=M/dataset=D/version=V/predictions.parquet   views.PREDICTIONS rows
    predictions/model=M/dataset=D/version=V/ingest.json           inputs and counts
    predictions/model=M/dataset=D/current                         the current V, written last

Two inputs:

- Parquet with columns ``job_id``, ``frame``, ``category`` (a catalog name), ``score``,
  ``box_x``, ``box_y``, ``box_w``, ``box_h`` (COCO xywh, pixels) and optionally ``mask_rle``
  (compressed COCO RLE counts over the whole frame); other columns are ignored.
- COCO results JSON: a list of ``{image_id, category_id, bbox, score, segmentation?}``. Image
  and category ids resolve through the real dataset's own COCO file (its frames' ``image_id``
  and the categories it was ingested with) or through ``images``: a COCO file whose images
  carry ``vario: {job_id, frame}`` (what a Vario export writes) or, for a real dataset, a
  ``file_name`` of its images; its categories give the names.

Every row is checked (its frame exists in the dataset, a known category, a finite box with
width and height > 0 inside the image give or take ``BOX_TOLERANCE`` pixels, a score in
[0, 1], a valid mask of the frame's size) and nothing is written unless every row passes.
Predictions of a category the real dataset left unmapped are skipped and counted. Rows stream
through in batches (Parquet by row batches, JSON parsed by DuckDB, which reads a JSON array
without holding it), so memory stays bounded whatever the file's length. The version is the
content: SHA-256 over the input's bytes and the options (the ``images`` file's bytes, the real
dataset's version its ids resolved through), so the same file again adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from generators.scene.catalog import default_catalog
from vario.ingest.common import (
    IngestError,
    IngestSummary,
    Problems,
    Progress,
    checked_name,
    file_sha256,
    file_size,
    read_capped,
    read_record,
    set_current,
    version_folder,
    version_of,
    write_record,
)
from vario.ingest.real import dataset_categories
from vario.ingest.rle import check_counts
from vario.store.layout import DataStore
from vario.store.views import PREDICTIONS, connect

MAX_JSON_BYTES = 4 << 30  # a results file; DuckDB streams it, this bounds the work
MAX_IMAGES_BYTES = 512 << 20  # the --images COCO file, parsed whole
MAX_MASK_CHARS = 1 << 20  # one mask's counts string
BATCH_ROWS = 1 << 16
BOX_TOLERANCE = 1.0  # pixels a box may reach past the image's border
JSON_MEMORY = "512MB"  # DuckDB's limit while it parses a results file
_BOX = ("box_x", "box_y", "box_w", "box_h")
_PARQUET = {
    "job_id": pa.string(),
    "frame": pa.int32(),
    "category": pa.string(),
    "score": pa.float64(),
    **dict.fromkeys(_BOX, pa.float64()),
}


@dataclass(frozen=True)
class _Dataset:
    """The frames predictions may name: ``key`` (``job_id/frame``), ``width``, ``height``;
    a real dataset's also ``image_id`` and ``file_name``."""

    name: str
    real_version: str | None
    frames: pa.Table


@dataclass(frozen=True)
class _Ids:
    """How a COCO results file's ids resolve: image id to frame key, category id to name
    (None: a category the real dataset left unmapped)."""

    images: pa.Table  # image_id (int64), key (string)
    categories: pa.Table  # category_id (int64), name (string, nullable)
    unmapped: dict[int, str]  # category id: its COCO name, for the skipped counts


def ingest_predictions(
    store: DataStore,
    model: str,
    dataset: str,
    source: Path,
    *,
    images: Path | None = None,
    on_progress: Progress | None = None,
) -> IngestSummary:
    """Ingest ``model``'s predictions on ``dataset`` from ``source`` (``.parquet`` or a COCO
    results ``.json``; ``images``: the COCO file its ids refer to). Raises ``IngestError``
    for bad input, before anything is written."""
    progress = on_progress or (lambda step, done, total: None)
    model = checked_name(model, "model name")
    dataset = checked_name(dataset, "dataset")
    source = Path(source)
    kind = {".parquet": "parquet", ".json": "json"}.get(source.suffix.lower())
    if kind is None:
        raise IngestError([f"predictions: {source} is neither .parquet nor .json"])
    size = file_size(source, "predictions")
    if kind == "json" and size > MAX_JSON_BYTES:
        raise IngestError(
            [f"predictions: {source} is {size:,} bytes, more than {MAX_JSON_BYTES:,}"]
        )
    target = _dataset(store, dataset)
    ids = _ids(store, target, images) if kind == "json" else None
    if kind == "parquet" and images is not None:
        raise IngestError(["--images resolves a COCO results file's ids; Parquet names frames"])
    options = {  # a real dataset's version: its frames are what the rows were checked against
        "format": kind,
        "images": file_sha256(images) if images is not None else None,
        "dataset_version": target.real_version,
    }
    version = version_of("predictions", {"source": file_sha256(source), **options})
    folder = store.predictions_version_dir(model, dataset, version)
    current_path = store.predictions_current_path(model, dataset)
    name = f"{model} on {dataset}"
    if folder.is_dir():
        was = store.predictions_current(model, dataset)
        if was != version:
            set_current(current_path, version)
        record = read_record(folder)
        return IngestSummary(
            "predictions",
            name,
            version,
            folder,
            was == version,
            record["rows"],
            0,
            record["skipped"],
        )
    problems = Problems()
    skipped: dict[str, int] = {}
    rows = 0
    if kind == "parquet":
        total, batches = _parquet_batches(source)
    else:
        total, batches = None, _json_batches(source, ids)
    with version_folder(folder) as partial:
        writer = pq.ParquetWriter(partial / "predictions.parquet", PREDICTIONS, compression="zstd")
        try:
            for batch, first in batches:
                table = _checked(batch, first, target, ids, problems, skipped)
                if not problems and table.num_rows:
                    writer.write_table(table)
                    rows += table.num_rows
                progress("check predictions", first + batch.num_rows, total)
        finally:
            writer.close()
        problems.check(f"predictions {source}")
        record = {
            "model": model,
            "dataset": dataset,
            "version": version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {"path": str(source.absolute()), "bytes": size},
            "options": options,
            "rows": rows,
            "skipped": skipped,
        }
        write_record(partial, record)
    set_current(current_path, version)
    return IngestSummary("predictions", name, version, folder, False, rows, 0, skipped)


def _dataset(store: DataStore, dataset: str) -> _Dataset:
    """The dataset's frames: a real dataset's current version, or a batch's rendered frames."""
    version = store.real_current(dataset)
    if version is not None:
        frames = pq.read_table(
            store.real_version_dir(dataset, version) / "frames.parquet",
            columns=["job_id", "frame", "width", "height", "image_id", "file_name"],
        )
    elif dataset in store.batches():
        frames = (
            connect(store)
            .sql(
                "SELECT job_id, frame, width, height FROM frames "
                "WHERE batch = $d AND source = 'synthetic' ORDER BY job_id, frame",
                params={"d": dataset},
            )
            .to_arrow_table()
        )
        if not frames.num_rows:
            raise IngestError([f"dataset: batch {dataset!r} has no rendered frames yet"])
    else:
        raise IngestError([f"dataset: no batch or real dataset {dataset!r} in {store.root}"])
    key = _keys(frames["job_id"], frames["frame"])
    frames = frames.append_column("key", key).combine_chunks()
    return _Dataset(dataset, version, frames)


def _keys(job_id: pa.ChunkedArray | pa.Array, frame: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``job_id/frame``: one string that names a frame, for lookups."""
    return pc.binary_join_element_wise(job_id, pc.cast(frame, pa.string()), "/")


def _ids(store: DataStore, target: _Dataset, images: Path | None) -> _Ids:
    """How a COCO results file's image and category ids resolve on this dataset."""
    catalog = set(default_catalog().category_ids())
    if images is None:
        if target.real_version is None:
            raise IngestError(
                [
                    f"COCO results on batch {target.name!r} need --images: the COCO file of the "
                    "export the model saw (its images carry vario.job_id and vario.frame)"
                ]
            )
        categories = dataset_categories(store, target.name, target.real_version)
        frames = target.frames
        image_table = pa.table({"image_id": frames["image_id"], "key": frames["key"]})
        return _category_ids(image_table, categories)
    doc = _images_doc(images)
    problems = Problems()
    ids, keys = [], []
    by_file = (
        dict(
            zip(
                target.frames["file_name"].to_pylist(),
                target.frames["key"].to_pylist(),
                strict=True,
            )
        )
        if target.real_version is not None
        else {}
    )
    for i, entry in enumerate(doc["images"]):
        vario = entry.get("vario") if isinstance(entry, dict) else None
        image_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            problems.add(f"images[{i}]: no integer id")
            continue
        if isinstance(vario, dict) and isinstance(vario.get("job_id"), str):
            frame = vario.get("frame")
            if not isinstance(frame, int) or isinstance(frame, bool):
                problems.add(f"images[{i}] (id {image_id}): vario.frame is not an integer")
                continue
            key = f"{vario['job_id']}/{frame}"
        elif entry.get("file_name") in by_file:
            key = by_file[entry["file_name"]]
        else:
            problems.add(
                f"images[{i}] (id {image_id}): neither vario.job_id/vario.frame nor a file_name "
                f"of {target.name!r}"
            )
            continue
        ids.append(image_id)
        keys.append(key)
    problems.check(f"images {images}")
    real = (
        dataset_categories(store, target.name, target.real_version)
        if target.real_version is not None
        else {}
    )
    mapped = {name: category for name, category in real.values()}
    categories: dict[int, tuple[str, str | None]] = {}
    for i, entry in enumerate(doc["categories"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int):
            problems.add(f"categories[{i}]: no integer id")
            continue
        name = entry.get("name")
        if name in mapped:
            categories[entry["id"]] = (name, mapped[name])
        elif name in catalog:
            categories[entry["id"]] = (name, name)
        else:
            problems.add(f"categories[{i}] (id {entry['id']}): {name!r} is not a catalog category")
    problems.check(f"images {images}")
    image_table = pa.table(
        {"image_id": pa.array(ids, pa.int64()), "key": pa.array(keys, pa.string())}
    )
    if len(set(ids)) != len(ids):
        raise IngestError([f"images {images}: image ids used twice"])
    return _category_ids(image_table, categories)


def _category_ids(image_table: pa.Table, categories: dict[int, tuple[str, str | None]]) -> _Ids:
    ordered = sorted(categories.items())
    category_table = pa.table(
        {
            "category_id": pa.array([i for i, _ in ordered], pa.int64()),
            "name": pa.array([c for _, (_, c) in ordered], pa.string()),
        }
    )
    return _Ids(
        image_table.combine_chunks(),
        category_table,
        {i: n for i, (n, c) in ordered if c is None},
    )


def _array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _images_doc(path: Path) -> dict:
    try:
        doc = json.loads(read_capped(path, MAX_IMAGES_BYTES, "images"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IngestError([f"images: {path} is not valid JSON ({exc})"]) from None
    if not (
        isinstance(doc, dict)
        and isinstance(doc.get("images"), list)
        and isinstance(doc.get("categories"), list)
    ):
        raise IngestError([f"images: {path} is not a COCO file with images and categories"])
    return doc


def _parquet_batches(source: Path) -> tuple[int, Iterator[tuple[pa.RecordBatch, int]]]:
    """The file's row count, and its rows in batches (with each batch's first row number) as
    the columns' types: a column that cannot be read as its type fails the whole file."""
    try:
        file = pq.ParquetFile(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestError([f"predictions: {source} is not a Parquet file ({exc})"]) from None
    names = set(file.schema_arrow.names)
    missing = [c for c in _PARQUET if c not in names]
    if missing:
        raise IngestError([f"predictions: {source} lacks column(s) {', '.join(missing)}"])
    columns = [*_PARQUET, *(["mask_rle"] if "mask_rle" in names else [])]

    def batches() -> Iterator[tuple[pa.RecordBatch, int]]:
        first = 0
        for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            arrays = {}
            for column in columns:
                want = _PARQUET.get(column, pa.string())
                try:
                    arrays[column] = pc.cast(batch.column(column), want)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise IngestError(
                        [f"predictions: column {column} cannot be read as {want} ({exc})"]
                    ) from None
            if "mask_rle" not in arrays:
                arrays["mask_rle"] = pa.nulls(batch.num_rows, pa.string())
            yield pa.RecordBatch.from_pydict(arrays), first
            first += batch.num_rows

    return file.metadata.num_rows, batches()


_JSON_SQL = """
SELECT image_id, category_id, score,
    bbox[1] AS box_x, bbox[2] AS box_y, bbox[3] AS box_w, bbox[4] AS box_h,
    len(bbox) AS bbox_len,
    CASE WHEN json_type(segmentation, '$.counts') = 'VARCHAR'
        THEN segmentation ->> '$.counts' END AS counts,
    TRY_CAST(segmentation ->> '$.size[0]' AS BIGINT) AS mask_h,
    TRY_CAST(segmentation ->> '$.size[1]' AS BIGINT) AS mask_w,
    CASE WHEN segmentation IS NOT NULL AND json_type(segmentation) <> 'NULL'
        AND json_type(segmentation, '$.counts') IS DISTINCT FROM 'VARCHAR'
        THEN segmentation::VARCHAR END AS other_mask
FROM read_json($path, format = 'array', columns = {
    image_id: 'BIGINT', category_id: 'BIGINT', bbox: 'DOUBLE[]', score: 'DOUBLE',
    segmentation: 'JSON'})
"""


def _json_batches(source: Path, ids: _Ids) -> Iterator[tuple[pa.RecordBatch, int]]:
    """A COCO results file's rows in batches, ids resolved to frames and category names.
    DuckDB parses the JSON array as a stream, within ``JSON_MEMORY``."""
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = '{JSON_MEMORY}'")
    con.execute("SET threads = 2")
    try:
        reader = con.sql(_JSON_SQL, params={"path": str(source)}).to_arrow_reader(BATCH_ROWS)
        first = 0
        for batch in reader:
            yield _resolved(batch, ids), first
            first += batch.num_rows
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0]
        raise IngestError(
            [f"predictions: {source} is not a COCO results list ({reason})"]
        ) from None
    finally:
        con.close()


def _resolved(batch: pa.RecordBatch, ids: _Ids) -> pa.RecordBatch:
    """A JSON batch as the Parquet input's columns (``key`` for the frame; ``category`` null
    for an unknown id, ``unmapped`` set for a category left out on purpose)."""
    image = pc.index_in(batch.column("image_id"), value_set=_array(ids.images["image_id"]))
    key = pc.take(_array(ids.images["key"]), image)
    category_id = batch.column("category_id")
    category_ids = _array(ids.categories["category_id"])
    known = pc.is_in(category_id, value_set=category_ids)
    name = pc.take(_array(ids.categories["name"]), pc.index_in(category_id, value_set=category_ids))
    return pa.RecordBatch.from_pydict(
        {
            "key": key,
            "image_id": batch.column("image_id"),
            "category_id": category_id,
            "category_known": pc.fill_null(known, False),
            "category": name,
            "score": batch.column("score"),
            **{c: batch.column(c) for c in _BOX},
            "bbox_len": batch.column("bbox_len"),
            "mask_rle": batch.column("counts"),
            "mask_h": batch.column("mask_h"),
            "mask_w": batch.column("mask_w"),
            "other_mask": batch.column("other_mask"),
        }
    )


def _checked(
    batch: pa.RecordBatch,
    first: int,
    target: _Dataset,
    ids: _Ids | None,
    problems: Problems,
    skipped: dict[str, int],
) -> pa.Table:
    """One batch checked row by row (vectorised); its rows as ``PREDICTIONS`` (empty once
    any row anywhere failed: nothing is written then)."""
    n = batch.num_rows
    frames = target.frames
    if ids is None:
        key = _keys(batch.column("job_id"), batch.column("frame"))
    else:
        key = batch.column("key")
    index = pc.index_in(key, value_set=frames["key"])
    found = pc.is_valid(index).to_numpy(zero_copy_only=False)
    safe = pc.fill_null(index, 0)
    width = pc.take(frames["width"], safe).to_numpy().astype(np.float64)
    height = pc.take(frames["height"], safe).to_numpy().astype(np.float64)
    reasons: list[tuple[np.ndarray, Callable[[int], str]]] = []

    def numbers(column: str) -> np.ndarray:
        return pc.fill_null(pc.cast(batch.column(column), pa.float64()), np.nan).to_numpy(
            zero_copy_only=False
        )

    score = numbers("score")
    x, y, w, h = (numbers(c) for c in _BOX)
    if ids is None:
        missing = ~np.asarray(
            pc.and_(pc.is_valid(batch.column("job_id")), pc.is_valid(batch.column("frame")))
        )
        reasons.append((missing, lambda i: "job_id or frame missing"))
        reasons.append(
            (~found & ~missing, lambda i: f"no frame {key[i].as_py()} in {target.name!r}")
        )
        category = batch.column("category")
        known = pc.fill_null(pc.is_in(category, value_set=_catalog()), False).to_numpy(
            zero_copy_only=False
        )
        reasons.append(
            (~known, lambda i: f"category {category[i].as_py()!r} is not a catalog category")
        )
        keep = np.ones(n, bool)
    else:
        image_id = batch.column("image_id")
        no_image = ~pc.is_valid(image_id).to_numpy(zero_copy_only=False)
        reasons.append((no_image, lambda i: "image_id missing"))
        unknown = ~pc.is_valid(key).to_numpy(zero_copy_only=False) & ~no_image
        reasons.append(
            (
                unknown,
                lambda i: f"image_id {image_id[i].as_py()} is not an image of {target.name!r}",
            )
        )
        reasons.append(
            (
                ~found & ~unknown & ~no_image,
                lambda i: f"frame {key[i].as_py()} is not in {target.name!r}",
            )
        )
        category_id = batch.column("category_id")
        known = batch.column("category_known").to_numpy(zero_copy_only=False)
        reasons.append(
            (~known, lambda i: f"category_id {category_id[i].as_py()} is not a known category")
        )
        category = batch.column("category")
        keep = ~(known & ~pc.is_valid(category).to_numpy(zero_copy_only=False))
        bbox_len = pc.fill_null(batch.column("bbox_len"), 0).to_numpy(zero_copy_only=False)
        reasons.append((bbox_len != 4, lambda i: "bbox is not [x, y, width, height]"))
    reasons.append((~((score >= 0) & (score <= 1)), lambda i: f"score {score[i]} is not in [0, 1]"))
    box = np.stack([x, y, w, h])
    reasons.append(
        (~np.isfinite(box).all(axis=0), lambda i: f"box {box[:, i].tolist()} is not finite")
    )
    reasons.append(
        ((w <= 0) | (h <= 0), lambda i: f"box {box[:, i].tolist()}: width and height must be > 0")
    )
    t = BOX_TOLERANCE
    outside = found & ((x < -t) | (y < -t) | (x + w > width + t) | (y + h > height + t))
    reasons.append(
        (
            outside,
            lambda i: (
                f"box {box[:, i].tolist()} is outside the {int(width[i])}x{int(height[i])} image"
            ),
        )
    )
    masks, mask_bad = _masks(batch, ids, found, width, height)
    reasons.append(
        (
            mask_bad,
            lambda i: (
                f"mask is not a valid RLE (or polygons) of the "
                f"{int(width[i])}x{int(height[i])} frame"
            ),
        )
    )
    bad = np.zeros(n, bool)
    for condition, _ in reasons:
        bad |= np.asarray(condition, bool)
    bad &= keep  # a skipped row (its category left out) is not checked further
    failing = np.flatnonzero(bad)
    shown = [
        f"row {first + i}: {next(say(i) for condition, say in reasons if condition[i])}"
        for i in failing[: problems.room]
    ]
    problems.extend(shown, failing.size)
    if ids is not None and (~keep).any():
        for cid in pc.filter(batch.column("category_id"), pa.array(~keep)).to_pylist():
            reason = f"category {ids.unmapped.get(cid, cid)}"
            skipped[reason] = skipped.get(reason, 0) + 1
    if problems:
        return PREDICTIONS.empty_table()
    rows = np.flatnonzero(keep)
    job_frame = frames.select(["job_id", "frame"]).take(pc.take(safe, pa.array(rows)))
    table = pa.table(
        {
            "prediction_id": pa.array(first + rows, pa.int64()),
            "job_id": job_frame["job_id"],
            "frame": pc.cast(job_frame["frame"], pa.int32()),
            "category": pc.take(category, rows),
            "score": score[rows],
            **{c: v[rows] for c, v in zip(_BOX, (x, y, w, h), strict=True)},
            "mask_rle": pc.take(masks, rows),
        },
        schema=PREDICTIONS,
    )
    return table


def _catalog() -> pa.Array:
    return pa.array(sorted(default_catalog().category_ids()), pa.string())


def _masks(
    batch: pa.RecordBatch,
    ids: _Ids | None,
    found: np.ndarray,
    width: np.ndarray,
    height: np.ndarray,
) -> tuple[pa.Array, np.ndarray]:
    """The rows' masks as compressed counts (null: none) and which rows' masks are bad:
    not a valid RLE of their frame's size (checked for every mask, before anything decodes
    one), a JSON segmentation of another size, or one that is neither RLE nor polygons."""
    n = batch.num_rows
    counts = batch.column("mask_rle")
    bad = np.zeros(n, bool)
    if ids is not None:
        mask_h = pc.fill_null(batch.column("mask_h"), -1).to_numpy(zero_copy_only=False)
        mask_w = pc.fill_null(batch.column("mask_w"), -1).to_numpy(zero_copy_only=False)
        given = pc.is_valid(counts).to_numpy(zero_copy_only=False)
        bad |= given & ((mask_h != height) | (mask_w != width))
        other = batch.column("other_mask")
        if other.null_count < n:  # polygons or uncompressed RLE: converted one by one
            values = counts.to_pylist()
            for i in np.flatnonzero(pc.is_valid(other).to_numpy(zero_copy_only=False)):
                if not found[i]:
                    continue
                values[i] = _convert(other[i].as_py(), int(height[i]), int(width[i]))
                bad[i] = values[i] is None
            counts = pa.array(values, pa.string())
    present = pc.is_valid(counts).to_numpy(zero_copy_only=False) & found & ~bad
    if present.any():
        rows = np.flatnonzero(present)
        strings = pc.take(counts, rows)
        long = pc.greater(pc.utf8_length(strings), MAX_MASK_CHARS).to_numpy(zero_copy_only=False)
        ok = np.zeros(rows.size, bool)
        short = ~long
        if short.any():
            ok[short], _ = check_counts(
                pc.filter(strings, pa.array(short)), height[rows][short], width[rows][short]
            )
        bad[rows[~ok]] = True
    return counts, bad


def _convert(text: str, height: int, width: int) -> str | None:
    """A JSON segmentation that is not a counts string (polygons, uncompressed RLE) as
    compressed counts, None if it is neither."""
    try:
        segmentation = json.loads(text)
        if isinstance(segmentation, list):
            ok = all(
                isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segmentation
            ) and all(np.isfinite(np.asarray(p, np.float64)).all() for p in segmentation)
            if not segmentation or not ok:
                return None
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            runs = segmentation["counts"]
            if segmentation.get("size") != [height, width] or not all(
                isinstance(c, int) and c >= 0 for c in runs
            ):
                return None
            if sum(runs) != height * width:
                return None
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            return None
    except (ValueError, TypeError):
        return None
    return rle["counts"].decode("ascii")
