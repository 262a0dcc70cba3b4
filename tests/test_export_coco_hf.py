"""The COCO and Hugging Face exports, read back with their consumers' own libraries:
pycocotools (``COCO``, ``COCOeval``) and ``datasets.load_dataset`` (offline)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import zipfile
from pathlib import Path

os.environ["HF_DATASETS_OFFLINE"] = "1"  # before datasets is imported: nothing from the Hub
os.environ["HF_HUB_OFFLINE"] = "1"

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from conftest import build_batch  # noqa: E402
from PIL import Image  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from generators.labels import archive as arc  # noqa: E402
from generators.scene.catalog import default_catalog  # noqa: E402
from vario.export.coco import CocoWriter  # noqa: E402
from vario.export.frame import ExportContext, ExportFrame  # noqa: E402
from vario.export.hf import HuggingFaceWriter  # noqa: E402

# the job fixture has 3 frames; frames 0 and 1 go to train, 2 to val, and test is a split of
# the export that gets no frame (as a slice can leave one)
ASSIGN = {0: "train", 1: "train", 2: "val"}
SPLITS = ("train", "val", "test")
LIST_TYPES = tuple(t for t in (getattr(datasets, "List", None), datasets.Sequence) if t)


def _table_rows(archive: Path, name: str) -> list[dict]:
    return arc.read_tables(archive)[name].to_pylist()


@pytest.fixture(scope="module")
def job(tabletop_job):
    frames = _table_rows(tabletop_job.archive, "frames")
    objects = _table_rows(tabletop_job.archive, "objects")
    assert len(frames) == 3 and objects
    return tabletop_job.archive, frames, objects


def _export(job, out: Path, cls, **options) -> dict:
    """The job's frames through a writer, as ``vario.export.run`` streams them."""
    archive_path, frames, objects = job

    def write(path, data: bytes, sha256: str | None = None) -> None:
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    out.mkdir(parents=True)
    generators = ("tabletop 1.0.0",)  # as the export reads them from the jobs table
    ctx = ExportContext(out, "unit", SPLITS, default_catalog(), write, generators=generators)
    writer = cls(ctx, **options)
    with zipfile.ZipFile(archive_path) as archive:
        for row in frames:
            mine = [o for o in objects if o["frame"] == row["frame"]]
            split = ASSIGN[row["frame"]]
            writer.add(ExportFrame(split, row["job_id"], row["frame"], row, mine, archive))
    return writer.close()


def _by_split(frames, objects) -> dict[str, tuple[list, list]]:
    return {
        s: (
            [f for f in frames if ASSIGN[f["frame"]] == s],
            [o for o in objects if ASSIGN[o["frame"]] == s],
        )
        for s in SPLITS
    }


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def _edges_bbox(o: dict) -> list[int]:
    return [
        o["box_x_min"],
        o["box_y_min"],
        o["box_x_max"] - o["box_x_min"],
        o["box_y_max"] - o["box_y_min"],
    ]


# --- COCO -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_export(job, tmp_path_factory):
    out = tmp_path_factory.mktemp("coco") / "export"
    return out, _export(job, out, CocoWriter, supercategories={"duck": "animal"})


def test_coco_splits_load_in_pycocotools_with_every_frame_and_object(job, coco_export):
    _, frames, objects = job
    out, report = coco_export
    assert report["images"] == {"train": 2, "val": 1, "test": 0}
    assert sorted(p.name for p in out.iterdir()) == ["annotations", "images"]  # no temp parts
    ids = default_catalog().category_ids()
    image_ids = set()
    for split, (rows, objs) in _by_split(frames, objects).items():
        coco = _quiet(COCO, str(out / "annotations" / f"instances_{split}.json"))
        assert len(coco.imgs) == len(rows) and len(coco.anns) == len(objs)
        assert not image_ids & set(coco.imgs)  # unique in the whole export
        image_ids |= set(coco.imgs)
        assert {c["id"]: c["name"] for c in coco.cats.values()} == {i: n for n, i in ids.items()}
        assert coco.cats[ids["duck"]]["supercategory"] == "animal"
        assert coco.cats[ids["mug"]]["supercategory"] == "object"
        info = coco.dataset["info"]
        assert info["batch"] == "unit" and info["version"] and info["date_created"]
        assert info["generators"] == ["tabletop 1.0.0"]
        by_stem = {img["file_name"]: img for img in coco.imgs.values()}
        for row in rows:
            stem = f"{row['job_id']}_{row['frame']:05d}"
            img = by_stem[f"{stem}.png"]
            assert (img["width"], img["height"]) == (row["width"], row["height"])
            extension = img["vario"]
            assert (extension["job_id"], extension["frame"]) == (row["job_id"], row["frame"])
            assert [extension[k] for k in ("fx", "fy", "cx", "cy")] == [
                row[k] for k in ("fx", "fy", "cx", "cy")
            ]
            with Image.open(out / "images" / split / img["file_name"]) as png:
                assert png.size == (row["width"], row["height"]) and png.mode == "RGB"
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
            expected = [o for o in objs if o["frame"] == row["frame"]]
            assert len(anns) == len(expected)
            for ann, o in zip(sorted(anns, key=lambda a: a["id"]), expected, strict=True):
                assert ann["category_id"] == ids[o["category"]] and ann["iscrowd"] == 0
                assert ann["bbox"] == _edges_bbox(o)
                assert ann["area"] == o["visible_pixels"]
                assert ann["segmentation"]["size"] == [row["height"], row["width"]]
                mask = coco.annToMask(ann)
                assert mask.sum() == o["visible_pixels"]
                ys, xs = np.nonzero(mask)  # the box is the mask's tight box
                assert ann["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
    assert sorted(image_ids) == list(range(1, len(frames) + 1))


def _evaluate(coco: COCO, predictions: list[dict], iou_type: str) -> float:
    result = _quiet(coco.loadRes, predictions)
    evaluation = COCOeval(coco, result, iou_type)
    _quiet(evaluation.evaluate)
    _quiet(evaluation.accumulate)
    _quiet(evaluation.summarize)
    return float(evaluation.stats[0])


def test_coco_eval_of_the_ground_truth_as_predictions_is_perfect(coco_export):
    out, _ = coco_export
    coco = _quiet(COCO, str(out / "annotations" / "instances_train.json"))
    anns = list(coco.anns.values())
    boxes = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"]}
        for a in anns
    ]
    masks = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "segmentation": a["segmentation"],
        }
        for a in anns
    ]
    for p in boxes + masks:
        p["score"] = 1.0
    assert _evaluate(coco, copy.deepcopy(boxes), "bbox") == pytest.approx(1.0)
    assert _evaluate(coco, copy.deepcopy(masks), "segm") == pytest.approx(1.0)
    # and the evaluation can tell: boxes moved by their own width score lower
    moved = copy.deepcopy(boxes)
    for p in moved:
        p["bbox"][0] += p["bbox"][2]
    assert _evaluate(coco, moved, "bbox") < 0.5


def test_coco_writes_every_split_as_one_document_in_coco_key_order(coco_export):
    """The JSON assembled from the streamed lines parses as one document per split, an
    empty split (no frame) included."""
    out, report = coco_export
    assert report["files"] == [f"annotations/instances_{s}.json" for s in SPLITS]
    for split in SPLITS:
        document = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        assert list(document) == ["info", "licenses", "images", "annotations", "categories"]
    empty = json.loads((out / "annotations" / "instances_test.json").read_text())
    assert empty["images"] == [] and empty["annotations"] == [] and empty["categories"]


# --- Hugging Face ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_export(job, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "export"
    # a row group and a shard per row: the bounds are honoured, and shards named -of-
    report = _export(
        job,
        out,
        HuggingFaceWriter,
        extra=("depth",),
        row_group_rows=1,
        shard_bytes=1,
        license_name="vario-synthetic",
    )
    return out, report


def _load(out: Path, cache: Path, **kwargs):
    return datasets.load_dataset("parquet", data_dir=str(out), cache_dir=str(cache), **kwargs)


def test_hf_export_loads_with_datasets_typed_and_complete(job, hf_export, tmp_path):
    _, frames, objects = job
    out, report = hf_export
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data"]  # no temp parts
    assert sorted(p.name for p in (out / "data").iterdir()) == [  # no empty test split:
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
        "val-00000-of-00001.parquet",
    ]
    for shard in (out / "data").iterdir():
        metadata = pq.read_metadata(shard)
        assert all(metadata.row_group(i).num_rows <= 1 for i in range(metadata.num_row_groups))
    loaded = _load(out, tmp_path / "cache")  # datasets refuses a split of no rows
    assert set(loaded) == {"train", "val"} and report["empty_splits"] == ["test"]
    features = loaded["train"].features
    assert isinstance(features["image"], datasets.Image)
    assert isinstance(features["depth"], datasets.Image)
    objects_feature = features["objects"]
    if isinstance(objects_feature, LIST_TYPES):  # datasets 3: Sequence of a dict
        objects_feature = objects_feature.feature
    assert isinstance(objects_feature["bbox"], LIST_TYPES)
    label = objects_feature["category"]
    label = label.feature if isinstance(label, LIST_TYPES) else label
    assert isinstance(label, datasets.ClassLabel)
    ids = default_catalog().category_ids()
    assert label.names == sorted(ids, key=ids.get)
    assert report["rows"] == {"train": 2, "val": 1}
    for split, (rows, objs) in _by_split(frames, objects).items():
        if not rows:
            continue
        ds = loaded[split]
        assert ds.num_rows == len(rows)
        assert sum(len(r["objects"]["id"]) for r in ds) == len(objs)
        for record, row in zip(ds, rows, strict=True):
            assert (record["job_id"], record["frame"]) == (row["job_id"], row["frame"])
            image = record["image"]
            assert (
                image.size == (row["width"], row["height"]) == (record["width"], record["height"])
            )
            assert image.mode == "RGB"
            assert record["depth"].size == image.size
            assert np.asarray(record["depth"]).max() > 1000  # millimetres, 16-bit
            expected = [o for o in objs if o["frame"] == row["frame"]]
            got = record["objects"]
            assert got["bbox"] == [[float(v) for v in _edges_bbox(o)] for o in expected]
            assert [label.int2str(c) for c in got["category"]] == [o["category"] for o in expected]
            assert got["area"] == [o["visible_pixels"] for o in expected]
            for counts, area in zip(got["segmentation"], got["area"], strict=True):
                rle = {"size": [row["height"], row["width"]], "counts": counts.encode()}
                assert mask_utils.decode(rle).sum() == area
    all_ids = [i for s in loaded for r in loaded[s] for i in r["objects"]["id"]]
    assert sorted(all_ids) == list(range(1, len(objects) + 1))


def test_hf_images_are_the_archives_png_files_byte_for_byte(job, hf_export):
    """Images are read into buffers that row groups take turns with (one read while the one
    before is written), a buffer per image column: none may hold another's bytes."""
    archive_path, frames, _ = job
    out, _ = hf_export
    rows = {row["frame"]: row for row in frames}
    seen = []
    with zipfile.ZipFile(archive_path) as archive:
        for shard in sorted((out / "data").iterdir()):
            for record in pq.read_table(shard).to_pylist():
                row = rows[record["frame"]]
                assert record["image"]["bytes"] == archive.read(row["rgb_path"])
                assert record["depth"]["bytes"] == archive.read(row["depth_path"])
                seen.append(record["frame"])
    assert sorted(seen) == sorted(rows)


def test_hf_card_front_matter_configs_load_and_counts(job, hf_export, tmp_path):
    _, frames, objects = job
    out, _ = hf_export
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["task_categories"] == ["object-detection"]
    assert front["license"] == "other" and front["license_name"] == "vario-synthetic"
    [config] = front["configs"]
    assert config["data_files"] == [
        {"split": s, "path": f"data/{s}-*.parquet"} for s in ("train", "val")
    ]
    body = text.split("---\n", 2)[2]
    assert "tabletop" in body and "`unit`" in body and "no frame (not in the data): test" in body
    for split, (rows, objs) in _by_split(frames, objects).items():
        if rows:
            assert f"| {split} | {len(rows)} | {len(objs)} |" in body
    ids = default_catalog().category_ids()
    split_objects = _by_split(frames, objects)
    for category in {o["category"] for o in objects}:
        counts = [sum(o["category"] == category for o in split_objects[s][1]) for s in SPLITS]
        line = f"| {category} | {ids[category] - 1} | {counts[0]} | {counts[1]} |"
        assert line in body.splitlines()
    # the folder itself loads through the card's configs
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert {s: loaded[s].num_rows for s in loaded} == {"train": 2, "val": 1}


def test_hf_default_export_has_one_shard_per_split_and_no_extras(job, tmp_path):
    report = _export(job, tmp_path / "out", HuggingFaceWriter)
    assert report["files"] == [
        "data/train-00000-of-00001.parquet",
        "data/val-00000-of-00001.parquet",
        "README.md",
    ]
    schema = pq.read_schema(tmp_path / "out" / report["files"][0])
    assert "depth" not in schema.names
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}
    assert datasets.Features.from_dict(features).arrow_schema.types == schema.types


@pytest.mark.parametrize("cls", [CocoWriter, HuggingFaceWriter])
def test_an_unknown_option_is_a_type_error_naming_it(job, tmp_path, cls):
    with pytest.raises(TypeError, match="colour_depth"):
        _export(job, tmp_path / "out", cls, colour_depth=8)


def test_an_unknown_extra_is_refused(job, tmp_path):
    with pytest.raises(ValueError, match="normals"):
        _export(job, tmp_path / "out", HuggingFaceWriter, extra=("normals",))


# --- end to end through export_batch ----------------------------------------------------


@pytest.fixture(scope="module")
def small_batch(tmp_path_factory):
    spec = {
        "name": "exp",
        "generator": "tabletop",
        "seed": 5,
        "shard_size": 4,
        "fixed": {
            "resolution": 64,
            "n_distractors": 0,
            "n_objects": 3,
            "n_frames": 2,
            "start_time": 0.5,
            "categories": ["duck", "cube", "mug"],
        },
        "sampler": {"kind": "random", "count": 5, "ranges": {"camera_azimuth": [0, 360]}},
    }
    return build_batch(tmp_path_factory.mktemp("export"), spec)


def test_export_batch_writes_coco_and_hf_that_load(small_batch, tmp_path):
    from vario.export.run import export_batch
    from vario.store.views import connect

    store = small_batch.store
    con = connect(store)
    n_frames, n_objects = con.execute(
        "SELECT (SELECT count(*) FROM frames WHERE batch = 'exp'),"
        " (SELECT count(*) FROM objects WHERE batch = 'exp')"
    ).fetchone()
    split = {"train": 0.6, "val": 0.2, "test": 0.2}
    coco = export_batch(store, "exp", "coco", tmp_path / "coco", split=split)
    hf = export_batch(store, "exp", "hf", tmp_path / "hf", split=split)
    assert sum(coco.frames.values()) == n_frames and sum(coco.objects.values()) == n_objects
    seen_images = seen_anns = 0
    for name in coco.frames:
        gt = _quiet(COCO, str(tmp_path / "coco" / "annotations" / f"instances_{name}.json"))
        assert len(gt.imgs) == coco.frames[name] and len(gt.anns) == coco.objects[name]
        seen_images += len(gt.imgs)
        seen_anns += len(gt.anns)
        for img in gt.imgs.values():
            assert (tmp_path / "coco" / "images" / name / img["file_name"]).is_file()
    assert (seen_images, seen_anns) == (n_frames, n_objects)
    loaded = _load(tmp_path / "hf", tmp_path / "cache")
    assert {s: loaded[s].num_rows for s in loaded} == hf.frames
    assert sum(len(r["objects"]["id"]) for s in loaded for r in loaded[s]) == n_objects
    assert loaded["train"][0]["image"].size == (64, 64)


def test_hf_extras_camera_and_instance_map(job, tmp_path):
    _, frames, objects = job
    report = _export(job, tmp_path / "out", HuggingFaceWriter, extra="segmentation,camera")
    table = pq.read_table(tmp_path / "out" / report["files"][0])
    assert "depth" not in table.column_names
    rows = [f for f in frames if ASSIGN[f["frame"]] == "train"]
    for k in ("fx", "fy", "cx", "cy"):
        assert table[k].to_pylist() == [r[k] for r in rows]
    for record, row in zip(table.to_pylist(), rows, strict=True):
        with Image.open(io.BytesIO(record["segmentation"]["bytes"])) as png:
            ids = np.unique(np.asarray(png))
        visible = [o["instance_id"] for o in objects if o["frame"] == row["frame"]]
        assert set(ids) - {0} == set(visible) == set(record["objects"]["instance_id"])
