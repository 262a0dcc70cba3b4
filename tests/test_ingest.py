"""Ingestion, on real parts: a tiny rendered batch, exported as COCO and ingested back as a
real dataset, whose rows must equal the synthetic ones; predictions made from the ground truth;
hostile inputs that each give their error and leave nothing behind; the CLI's exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import build_batch

from dagster_project import cli
from vario.batch.spec import BatchSpec, SpecError
from vario.export.run import export_batch
from vario.ingest.common import IngestError
from vario.ingest.predictions import ingest_predictions
from vario.ingest.real import ingest_coco_dataset
from vario.store import sandbox

SPEC = {
    "name": "tiny",
    "generator": "tabletop",
    "seed": 7,
    "shard_size": 8,
    "fixed": {"resolution": 64, "n_frames": 2, "n_objects": 4, "n_distractors": 0},
    "sampler": {"kind": "sobol", "count": 3, "ranges": {"camera_azimuth": [0, 360]}},
}
BOX = ["box_x_min", "box_y_min", "box_x_max", "box_y_max"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The rendered batch and its COCO export (one split holding every frame)."""
    root = tmp_path_factory.mktemp("ingest")
    storage = build_batch(root, SPEC)
    out = root / "coco"
    export_batch(storage.store, "tiny", "coco", out, split={"train": 1.0})
    return storage.store, out / "annotations" / "instances_train.json", out / "images" / "train"


@pytest.fixture
def coco(rendered, tmp_path):
    """A private copy of the export (annotations and images), to edit or spoil."""
    store, annotations, images = rendered
    folder = tmp_path / "coco"
    shutil.copytree(images, folder / "images")
    shutil.copy(annotations, folder / "instances.json")
    return folder / "instances.json", folder / "images"


def _rows(store, sql: str, **params) -> list[tuple]:
    return sandbox.connection(store).execute(sql, params).fetchall()


def _count(store, view: str, batch: str) -> int:
    return _rows(store, f"SELECT count(*) FROM {view} WHERE batch = $b", b=batch)[0][0]


def test_an_exported_batch_ingests_back_to_the_same_rows(rendered):
    store, annotations, images = rendered
    summary = ingest_coco_dataset(store, "tiny_real", annotations, images)
    assert not summary.up_to_date and summary.rows == 6 and summary.skipped == {}
    synthetic = _rows(
        store,
        f"SELECT f.job_id, f.frame, o.instance_id, o.category, {', '.join(BOX)}, o.visible_pixels, "
        "o.mask_rle FROM objects o JOIN frames f USING (batch, job_id, frame) "
        "WHERE o.batch = 'tiny' ORDER BY 1, 2, 3",
    )
    assert synthetic and summary.objects == len(synthetic)
    assert {s[0] for s in _rows(store, "SELECT source FROM frames WHERE batch = 'tiny'")} == {
        "synthetic"
    }
    coco = json.loads(annotations.read_text())
    origin = {i["file_name"]: (i["vario"]["job_id"], i["vario"]["frame"]) for i in coco["images"]}
    real = _rows(
        store,
        f"SELECT f.file_name, o.instance_id, o.category, {', '.join(BOX)}, o.visible_pixels, "
        "o.mask_rle, o.source, f.source, o.version = f.version FROM objects o "
        "JOIN frames f USING (batch, job_id, frame) WHERE o.batch = 'tiny_real'",
    )
    assert {r[-3:] for r in real} == {("real", "real", True)}
    as_synthetic = sorted((*origin[r[0]], *r[1:-3]) for r in real)
    assert as_synthetic == synthetic  # boxes, masks, pixel counts, instance ids: all equal
    stats = "brightness, contrast, width, height, rgb_sha256"
    synthetic_frames = {
        (r[0], r[1]): r[2:]
        for r in _rows(store, f"SELECT job_id, frame, {stats} FROM frames WHERE batch = 'tiny'")
    }
    real_frames = _rows(
        store, f"SELECT file_name, {stats}, rgb_path FROM frames WHERE batch = 'tiny_real'"
    )
    assert len(real_frames) == len(synthetic_frames) == 6
    for file_name, *values, rgb_path in real_frames:
        expected = synthetic_frames[origin[file_name]]
        assert values == pytest.approx(list(expected))  # brightness, contrast as rendered
        assert (store.root / rgb_path).is_file()


def test_the_same_files_again_add_nothing_and_an_edit_makes_a_new_version(rendered, coco):
    store = rendered[0]
    annotations, images = coco
    first = ingest_coco_dataset(store, "edited", annotations, images)
    again = ingest_coco_dataset(store, "edited", annotations, images)
    assert again.up_to_date and again.version == first.version
    assert _count(store, "frames", "edited") == first.rows
    assert _count(store, "real_frames", "edited") == first.rows
    doc = json.loads(annotations.read_text())
    dropped = doc["annotations"].pop()
    annotations.write_text(json.dumps(doc))
    second = ingest_coco_dataset(store, "edited", annotations, images)
    assert second.version != first.version and not second.up_to_date
    assert second.images_copied == 0  # content-addressed: no image twice
    assert _count(store, "objects", "edited") == first.objects - 1
    versions = dict(
        _rows(
            store,
            "SELECT version, count(*) FROM real_objects WHERE dataset = 'edited' GROUP BY 1",
        )
    )
    assert versions == {first.version: first.objects, second.version: first.objects - 1}
    gone = _rows(
        store,
        "SELECT count(*) FROM objects WHERE batch = 'edited' AND annotation_id = $a",
        a=dropped["id"],
    )
    assert gone == [(0,)]


def _spoil(annotations: Path, change) -> None:
    doc = json.loads(annotations.read_text())
    change(doc)
    annotations.write_text(json.dumps(doc))  # NaN stays NaN: Python's JSON writes it


def _first_box(value):
    return lambda doc: doc["annotations"][0].__setitem__("bbox", value)


HOSTILE = {
    "climbs out": lambda doc: doc["images"][0].__setitem__("file_name", "../outside.png"),
    "is an absolute path": lambda doc: doc["images"][0].__setitem__("file_name", "/etc/hostname"),
    "no such image file": lambda doc: doc["images"][0].__setitem__("file_name", "missing.png"),
    "is not an image of the file": lambda doc: doc["annotations"][0].__setitem__("image_id", 999),
    "finite number": _first_box([1.0, float("nan"), 3.0, 4.0]),
    "outside the 64x64 image": _first_box([60.0, 10.0, 8.0, 4.0]),
    "width and height must be > 0": _first_box([1.0, 1.0, 0.0, 4.0]),
    "not a valid RLE": lambda doc: doc["annotations"][0]["segmentation"].__setitem__(
        "counts", "0000"
    ),
    "is not a category of the file": lambda doc: doc["annotations"][0].__setitem__(
        "category_id", 404
    ),
}


@pytest.mark.parametrize("expected", sorted(HOSTILE))
def test_a_hostile_dataset_is_refused_with_its_error_and_leaves_nothing(rendered, coco, expected):
    store = rendered[0]
    annotations, images = coco
    _spoil(annotations, HOSTILE[expected])
    with pytest.raises(IngestError, match=expected):
        ingest_coco_dataset(store, "hostile", annotations, images)
    assert not store.real_dir("hostile").exists()
    assert _count(store, "frames", "hostile") == 0


def test_bad_files_and_names_are_refused(rendered, coco, tmp_path):
    store = rendered[0]
    annotations, images = coco
    annotations.write_text('{"images": [')
    with pytest.raises(IngestError, match="not valid JSON"):
        ingest_coco_dataset(store, "broken", annotations, images)
    _, original, _ = rendered
    with pytest.raises(IngestError, match="is a batch"):
        ingest_coco_dataset(store, "tiny", original, images)
    with pytest.raises(IngestError, match="not a batch name"):
        ingest_coco_dataset(store, "../up", original, images)
    outside = tmp_path / "outside.png"
    shutil.copy(next(images.glob("*.png")), outside)
    (images / "link.png").symlink_to(outside)
    shutil.copy(original, annotations)
    _spoil(annotations, lambda doc: doc["images"][0].__setitem__("file_name", "link.png"))
    with pytest.raises(IngestError, match="resolves outside"):
        ingest_coco_dataset(store, "linked", annotations, images)
    assert not any(store.real_dir(n).exists() for n in ("broken", "linked"))


def test_many_bad_rows_list_the_first_twenty_and_count_the_rest(rendered, coco):
    store = rendered[0]
    annotations, images = coco
    _spoil(annotations, lambda doc: [a.__setitem__("image_id", 999) for a in doc["annotations"]])
    with pytest.raises(IngestError) as caught:
        ingest_coco_dataset(store, "many", annotations, images)
    n = len(json.loads(annotations.read_text())["annotations"])
    assert caught.value.count == n > 20 and len(caught.value.messages) == 20
    assert f"... and {n - 20} more" in str(caught.value)


def test_categories_map_by_name_or_through_the_map_and_unmapped_ones_are_counted(rendered):
    store, annotations, images = rendered
    doc = json.loads(annotations.read_text())
    ids = {c["name"]: c["id"] for c in doc["categories"]}
    present = sorted(
        {c for (c,) in _rows(store, "SELECT DISTINCT category FROM objects WHERE batch = 'tiny'")}
    )
    left_out, renamed = present[0], present[-1]
    mapping = {left_out: None, renamed: "teddy"}
    summary = ingest_coco_dataset(store, "mapped", annotations, images, category_map=mapping)
    n_left_out = sum(a["category_id"] == ids[left_out] for a in doc["annotations"])
    n_renamed = sum(a["category_id"] == ids[renamed] for a in doc["annotations"])
    assert summary.skipped == {f"category {left_out}": n_left_out}
    got = dict(
        _rows(store, "SELECT category, count(*) FROM objects WHERE batch = 'mapped' GROUP BY 1")
    )
    assert left_out not in got and got.get("teddy", 0) >= n_renamed > 0
    with pytest.raises(IngestError, match="not in the catalog"):
        ingest_coco_dataset(store, "mapped2", annotations, images, category_map={"x": "unicorn"})
    results = annotations.parent.parent / "results-mapped.json"
    results.write_text(json.dumps(_results(annotations)))
    predictions = ingest_predictions(store, "mapper", "mapped", results)
    assert predictions.skipped == {f"category {left_out}": n_left_out}
    assert predictions.rows == len(doc["annotations"]) - n_left_out
    teddies = _rows(
        store, "SELECT count(*) FROM predictions WHERE model = 'mapper' AND category = 'teddy'"
    )
    assert teddies == [(n_renamed,)]


def test_polygons_and_fractional_boxes_follow_the_tables_conventions(tmp_path):
    """A hand-made dataset: a polygon becomes an RLE (pycocotools), an uncompressed RLE is
    compressed, a box of fractions of a pixel becomes the edges floor(x)..ceil(x + w)."""
    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    from vario.store.layout import DataStore

    store = DataStore(tmp_path / "data")
    (tmp_path / "img").mkdir()
    Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(tmp_path / "img" / "a.png")
    square = [[2.0, 3.0, 12.0, 3.0, 12.0, 9.0, 2.0, 9.0]]
    runs = mask_utils.frPyObjects(square, 20, 30)[0]
    plain = [0] * 0
    decoded = mask_utils.decode(mask_utils.frPyObjects(square, 20, 30))[..., 0]
    flat = decoded.flatten(order="F")
    value, length = 0, 0
    for pixel in flat:  # the uncompressed RLE of the same square
        if pixel != value:
            plain.append(length)
            value, length = pixel, 0
        length += 1
    plain.append(length)
    doc = {
        "images": [{"id": 7, "file_name": "a.png", "width": 30, "height": 20}],
        "categories": [{"id": 3, "name": "cube"}, {"id": 4, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [1.5, 2.25, 10.0, 6.5],
             "segmentation": square, "area": 60.0, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [2, 3, 10, 6],
             "segmentation": {"size": [20, 30], "counts": plain}},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 5.5, 5], "area": 27.4},
            {"id": 4, "image_id": 7, "category_id": 4, "bbox": [0, 0, 5, 5]},
            {"id": 5, "image_id": 7, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1},
        ],
    }  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(doc))
    summary = ingest_coco_dataset(store, "hand", tmp_path / "a.json", tmp_path / "img")
    assert summary.skipped == {"category person": 1, "crowd": 1}
    rows = _rows(
        store,
        f"SELECT instance_id, {', '.join(BOX)}, visible_pixels, mask_rle, annotation_id, "
        "image_id, frame FROM objects JOIN frames USING (batch, job_id, frame) "
        "WHERE batch = 'hand' ORDER BY instance_id",
    )
    counts = runs["counts"].decode()
    area = int(decoded.sum())
    assert rows == [
        (1, 1, 2, 12, 9, area, counts, 1, 7, 0),
        (2, 2, 3, 12, 9, area, counts, 2, 7, 0),
        (3, 0, 0, 6, 5, 27, None, 3, 7, 0),
    ]
    frame = _rows(store, "SELECT brightness, contrast, n_objects FROM frames WHERE batch = 'hand'")
    assert frame == [(pytest.approx(128 / 255), pytest.approx(0.0), 3)]


def test_a_batch_cannot_take_a_real_datasets_name(rendered):
    store, annotations, images = rendered
    ingest_coco_dataset(store, "taken", annotations, images)
    spec = BatchSpec.model_validate({**SPEC, "name": "taken"})
    with pytest.raises(SpecError, match="real dataset"):
        store.recorded(spec)


def _ground_truth(store, batch: str, path: Path, extra: str = "") -> Path:
    rows = (
        sandbox.connection(store)
        .sql(
            "SELECT job_id, frame, category, 0.9 AS score, box_x_min::DOUBLE AS box_x, "
            "box_y_min::DOUBLE AS box_y, (box_x_max - box_x_min)::DOUBLE AS box_w, "
            f"(box_y_max - box_y_min)::DOUBLE AS box_h, mask_rle {extra} FROM objects "
            "WHERE batch = $b ORDER BY job_id, frame, instance_id",
            params={"b": batch},
        )
        .to_arrow_table()
    )
    pq.write_table(rows, path)
    return path


def test_predictions_from_ground_truth_ingest_and_are_queryable(rendered, tmp_path):
    store = rendered[0]
    source = _ground_truth(store, "tiny", tmp_path / "p.parquet")
    summary = ingest_predictions(store, "oracle", "tiny", source)
    n = _count(store, "objects", "tiny")
    assert summary.rows == n and not summary.up_to_date
    matched = _rows(
        store,
        "SELECT count(*) FROM predictions p JOIN objects o ON o.batch = p.dataset "
        "AND o.job_id = p.job_id AND o.frame = p.frame AND o.category = p.category "
        "AND o.box_x_min = p.box_x AND o.box_y_max = p.box_y + p.box_h "
        "AND o.mask_rle = p.mask_rle WHERE p.model = 'oracle' AND p.dataset = 'tiny'",
    )
    assert matched == [(n,)]
    again = ingest_predictions(store, "oracle", "tiny", source)
    assert again.up_to_date and again.version == summary.version
    assert _rows(store, "SELECT count(*) FROM predictions WHERE model = 'oracle'") == [(n,)]
    fewer = pq.read_table(source).slice(1)
    pq.write_table(fewer, tmp_path / "q.parquet")
    newer = ingest_predictions(store, "oracle", "tiny", tmp_path / "q.parquet")
    assert newer.version != summary.version
    assert _rows(store, "SELECT count(*) FROM predictions WHERE model = 'oracle'") == [(n - 1,)]
    versions = dict(
        _rows(
            store, "SELECT version, count(*) FROM predictions_all WHERE model = 'oracle' GROUP BY 1"
        )
    )
    assert versions == {summary.version: n, newer.version: n - 1}


def _results(annotations: Path) -> list[dict]:
    """The export's annotations as COCO results (score 0.8)."""
    doc = json.loads(annotations.read_text())
    return [
        {k: a[k] for k in ("image_id", "category_id", "bbox", "segmentation")} | {"score": 0.8}
        for a in doc["annotations"]
    ]


def test_coco_results_resolve_through_the_export_or_the_real_dataset(rendered, tmp_path):
    store, annotations, images = rendered
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results(annotations)))
    n = len(json.loads(results.read_text()))
    with pytest.raises(IngestError, match="need --images"):
        ingest_predictions(store, "coco_model", "tiny", results)
    on_batch = ingest_predictions(store, "coco_model", "tiny", results, images=annotations)
    assert on_batch.rows == n
    same = _rows(
        store,
        "SELECT count(*) FROM predictions p JOIN objects o ON o.batch = p.dataset "
        "AND o.job_id = p.job_id AND o.frame = p.frame AND o.mask_rle = p.mask_rle "
        "AND o.box_x_min = p.box_x WHERE p.model = 'coco_model' AND p.dataset = 'tiny'",
    )
    assert same == [(n,)]
    ingest_coco_dataset(store, "results_real", annotations, images)
    on_real = ingest_predictions(store, "coco_model", "results_real", results)
    assert on_real.rows == n
    joined = _rows(
        store,
        "SELECT count(*) FROM predictions p JOIN objects o ON o.batch = p.dataset "
        "AND o.job_id = p.job_id AND o.frame = p.frame AND o.mask_rle = p.mask_rle "
        "WHERE p.model = 'coco_model' AND p.dataset = 'results_real'",
    )
    assert joined == [(n,)]


def _spoiled_predictions(store, tmp_path, column: str, value) -> Path:
    table = pq.read_table(_ground_truth(store, "tiny", tmp_path / "gt.parquet"))
    score = table.schema.get_field_index("score")  # DECIMAL from DuckDB's 0.9
    table = table.set_column(score, "score", table["score"].cast(pa.float64()))
    values = table[column].to_pylist()
    values[3] = value
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values))
    path = tmp_path / f"bad-{column}.parquet"
    pq.write_table(table, path)
    return path


BAD_PREDICTIONS = {
    "score 1.5 is not in": ("score", 1.5),
    "is not finite": ("box_w", float("nan")),
    "is outside the 64x64 image": ("box_x", 70.0),
    "width and height must be > 0": ("box_h", 0.0),
    "is not a catalog category": ("category", "unicorn"),
    "no frame nojob/0": ("job_id", "nojob"),
    "mask is not a valid RLE .or polygons. of the 64x64 frame": ("mask_rle", "0a"),
}


@pytest.mark.parametrize("expected", sorted(BAD_PREDICTIONS))
def test_a_bad_prediction_is_refused_with_its_row_and_leaves_nothing(rendered, tmp_path, expected):
    store = rendered[0]
    column, value = BAD_PREDICTIONS[expected]
    if column == "job_id":
        source = _ground_truth(store, "tiny", tmp_path / "gt.parquet")
        table = pq.read_table(source)
        jobs = table["job_id"].to_pylist()
        frames = table["frame"].to_pylist()
        jobs[3], frames[3] = "nojob", 0
        table = table.set_column(0, "job_id", pa.array(jobs)).set_column(
            1, "frame", pa.array(frames, pa.int32())
        )
        pq.write_table(table, source)
    else:
        source = _spoiled_predictions(store, tmp_path, column, value)
    with pytest.raises(IngestError, match=f"row 3: .*{expected}"):
        ingest_predictions(store, "spoiled", "tiny", source)
    assert not (store.predictions_root / "model=spoiled").exists()
    assert _rows(store, "SELECT count(*) FROM predictions_all WHERE model = 'spoiled'") == [(0,)]


def test_bad_prediction_files_are_refused(rendered, tmp_path):
    store, annotations, _ = rendered
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(IngestError, match="not a COCO results list"):
        ingest_predictions(store, "m", "tiny", bad, images=annotations)
    results = _results(annotations)
    results[2]["score"] = 1.5
    results[4]["image_id"] = 12345
    bad.write_text(json.dumps(results))
    with pytest.raises(IngestError, match="2 problems") as caught:
        ingest_predictions(store, "m", "tiny", bad, images=annotations)
    assert "row 2: score 1.5" in str(caught.value)
    assert "row 4: image_id 12345 is not an image" in str(caught.value)
    with pytest.raises(IngestError, match="no batch or real dataset"):
        ingest_predictions(store, "m", "nothing", bad)
    plain = tmp_path / "p.csv"
    plain.write_text("x")
    with pytest.raises(IngestError, match="neither .parquet nor .json"):
        ingest_predictions(store, "m", "tiny", plain)
    fake = tmp_path / "fake.parquet"
    fake.write_text("x")
    with pytest.raises(IngestError, match="not a Parquet file"):
        ingest_predictions(store, "m", "tiny", fake)
    pq.write_table(pa.table({"job_id": ["a"], "frame": [0]}), fake)
    with pytest.raises(IngestError, match="lacks column.*category"):
        ingest_predictions(store, "m", "tiny", fake)
    assert not (store.predictions_root / "model=m").exists()


def test_every_view_exists_on_an_empty_data_folder(tmp_path):
    from vario.store.layout import DataStore

    con = sandbox.connection(DataStore(tmp_path / "empty"))
    for view in (
        "frames",
        "objects",
        "real_frames",
        "real_objects",
        "predictions",
        "predictions_all",
    ):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
    columns = {r[0] for r in con.execute("DESCRIBE frames").fetchall()}
    assert {"source", "batch", "image_id", "file_name", "version", "brightness"} <= columns
    columns = {r[0] for r in con.execute("DESCRIBE predictions").fetchall()}
    assert {"model", "dataset", "version", "prediction_id", "score", "box_w", "mask_rle"} <= columns


def test_the_cli_ingests_and_exits_2_on_bad_input(rendered, coco, tmp_path):
    store = rendered[0]
    annotations, images = coco
    env = {"VARIO_DATA_DIR": str(store.root), "COLUMNS": "200"}
    run = CliRunner().invoke
    args = [
        "ingest",
        "dataset",
        "cli_real",
        "--annotations",
        str(annotations),
        "--images",
        str(images),
    ]
    done = run(cli.main, args, env=env)
    assert done.exit_code == 0, done.output
    assert "dataset cli_real version" in done.output and "ingested" in done.output
    again = run(cli.main, args, env=env)
    assert again.exit_code == 0 and "up to date" in again.output
    mapping = tmp_path / "map.yaml"
    mapping.write_text("cube: unicorn\n")
    refused = run(cli.main, [*args, "--map", str(mapping)], env=env)
    assert refused.exit_code == 2 and "not in the catalog" in refused.output
    _spoil(annotations, HOSTILE["climbs out"])
    refused = run(cli.main, [*args[:2], "cli_bad", *args[3:]], env=env)
    assert refused.exit_code == 2 and "climbs out" in refused.output
    source = _ground_truth(store, "cli_real", tmp_path / "p.parquet")
    done = run(cli.main, ["ingest", "predictions", "cli_model", "cli_real", str(source)], env=env)
    assert done.exit_code == 0, done.output
    assert "predictions cli_model on cli_real" in done.output
    bad = _spoiled_predictions(store, tmp_path, "score", 1.5)
    refused = run(cli.main, ["ingest", "predictions", "cli_model", "tiny", str(bad)], env=env)
    assert refused.exit_code == 2 and "row 3: score 1.5" in refused.output
