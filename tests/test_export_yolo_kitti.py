"""The YOLO (Ultralytics) and KITTI exports: read back by strict readers written here, and
their boxes checked against the label tables, the catalog and an independent projection."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import build_batch
from PIL import Image
from pycocotools import mask as mask_utils
from scipy.spatial.transform import Rotation

from generators.labels import archive as arc
from generators.scene.catalog import default_catalog
from vario.export.frame import SPLITS, ExportContext, ExportFrame
from vario.export.kitti import KittiWriter, calib_text, label_line
from vario.export.run import export_batch
from vario.export.yolo import YoloWriter, polygon

# ---------------------------------------------------------------------------------------------
# Frames of a real job, written through the writers without run.py


@pytest.fixture(scope="module")
def job_frames(tabletop_job):
    """The tabletop job's frames as the export streams them: frame k in split k (train, val,
    test), each with its ``frames`` row and its ``objects`` rows in instance order."""
    archive = zipfile.ZipFile(tabletop_job.archive)
    tables = arc.read_tables(tabletop_job.archive)
    frames, objects = tables["frames"].to_pylist(), tables["objects"].to_pylist()
    result = []
    for row in frames:
        mine = sorted(
            (o for o in objects if o["frame"] == row["frame"]), key=lambda o: o["instance_id"]
        )
        split = SPLITS[row["frame"] % len(SPLITS)]
        result.append(ExportFrame(split, row["job_id"], row["frame"], row, mine, archive))
    assert sum(len(f.objects) for f in result) >= 9  # enough objects to check
    yield result
    archive.close()


def _context(out: Path) -> ExportContext:
    out.mkdir(parents=True)

    def write(path, data: bytes, sha256: str | None = None) -> None:
        target = out / path
        assert not target.exists(), f"{path} written twice"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    return ExportContext(out, "adhoc", SPLITS, default_catalog(), write)


def _export(cls, frames: list[ExportFrame], out: Path, **options) -> dict:
    writer = cls(_context(out), **options)
    for frame in frames:
        writer.add(frame)
    return writer.close()


# ---------------------------------------------------------------------------------------------
# A strict reader of the Ultralytics dataset layout


def _unit(text: str) -> float:
    value = float(text)
    assert 0.0 <= value <= 1.0, f"{text} is not normalised to [0, 1]"
    return value


def read_ultralytics(data_yaml: Path, task: str) -> tuple[dict, dict]:
    """``data.yaml`` and every label file, checked as Ultralytics reads them; returns the
    YAML and ``{split: {stem: [(class, values), ...]}}``."""
    data = yaml.safe_load(data_yaml.read_text())
    assert set(data) <= {"path", "train", "val", "test", "names"}, data.keys()
    root = Path(data["path"])
    assert root.is_absolute() and root == data_yaml.parent
    names = data["names"]
    assert isinstance(names, dict) and list(names) == list(range(len(names)))
    assert all(isinstance(n, str) and n for n in names.values())
    splits = [s for s in SPLITS if s in data]
    assert "train" in splits
    labels: dict[str, dict] = {}
    for split in splits:
        images = root / data[split]
        assert data[split] == f"images/{split}" and images.is_dir()
        label_dir = root / "labels" / split
        assert label_dir.is_dir()
        image_stems = {p.stem for p in images.iterdir()}
        label_files = sorted(label_dir.iterdir())
        assert all(p.suffix == ".txt" for p in label_files)
        assert {p.stem for p in label_files} == image_stems  # every label has its image
        labels[split] = {}
        for path in label_files:
            lines = []
            for line in path.read_text().splitlines():
                fields = line.split(" ")
                assert fields[0].isdigit() and int(fields[0]) in names, line
                if task == "detect":
                    assert len(fields) == 5, line
                else:
                    assert len(fields) >= 7 and len(fields) % 2 == 1, line
                lines.append((int(fields[0]), [_unit(v) for v in fields[1:]]))
            labels[split][path.stem] = lines
    assert sorted(p.name for p in (root / "labels").iterdir()) == sorted(splits)
    used = {c for split in labels.values() for lines in split.values() for c, _ in lines}
    assert used <= set(names)
    return data, labels


def _decode(obj: dict, row: dict) -> np.ndarray:
    rle = {"size": [row["height"], row["width"]], "counts": obj["mask_rle"].encode()}
    return mask_utils.decode(rle).astype(bool)


# ---------------------------------------------------------------------------------------------
# YOLO


def test_yolo_detect_labels_round_trip_to_the_tables_boxes(job_frames, tmp_path):
    out = tmp_path / "yolo"
    reported = _export(YoloWriter, job_frames, out)
    data, labels = read_ultralytics(out / "data.yaml", "detect")
    ids = default_catalog().category_ids()
    assert data["names"][0] == "bunny"  # category id 1 (docs/conventions.md)
    assert all(ids[name] == index + 1 for index, name in data["names"].items())
    assert set(data["names"].values()) == set(ids)
    for frame in job_frames:
        width, height = frame.row["width"], frame.row["height"]
        image = out / "images" / frame.split / f"{frame.stem}.png"
        assert image.read_bytes() == frame.image("rgb")
        assert Image.open(image).size == (width, height)
        lines = labels[frame.split][frame.stem]
        assert len(lines) == len(frame.objects)
        for (cls, (cx, cy, w, h)), obj in zip(lines, frame.objects, strict=True):
            assert data["names"][cls] == obj["category"]
            edges = [(cx - w / 2) * width, (cy - h / 2) * height]
            edges += [(cx + w / 2) * width, (cy + h / 2) * height]
            expected = [obj[f"box_{k}"] for k in ("x_min", "y_min", "x_max", "y_max")]
            assert np.allclose(edges, expected, atol=0.01), (edges, expected)
    assert reported["label_lines"] == sum(len(f.objects) for f in job_frames)


class _Renumbered:
    """A catalog whose category ids run against the names' order (as a user category
    sorting before built-in ones would make them), so names must follow the ids."""

    def __init__(self, names):
        self.names = sorted(names, reverse=True)

    def category_ids(self) -> dict[str, int]:
        return {name: i + 1 for i, name in enumerate(self.names)}


def test_yolo_classes_follow_the_catalogs_category_ids(job_frames, tmp_path):
    catalog = _Renumbered(default_catalog().category_ids())
    out = tmp_path / "yolo"
    ctx = _context(out)
    writer = YoloWriter(ExportContext(out, "adhoc", SPLITS, catalog, ctx.write))
    for frame in job_frames:
        writer.add(frame)
    writer.close()
    data, labels = read_ultralytics(out / "data.yaml", "detect")
    assert list(data["names"].values()) == catalog.names
    for frame in job_frames:
        classes = [c for c, _ in labels[frame.split][frame.stem]]
        assert classes == [catalog.names.index(o["category"]) for o in frame.objects]


def test_yolo_gives_a_frame_without_objects_an_empty_label_file(job_frames, tmp_path):
    empty = ExportFrame("train", "0" * 16, 0, job_frames[0].row, [], job_frames[0].archive)
    out = tmp_path / "yolo"
    _export(YoloWriter, [empty, *job_frames[1:2]], out)
    data, labels = read_ultralytics(out / "data.yaml", "detect")
    assert (out / "labels" / "train" / f"{empty.stem}.txt").read_bytes() == b""
    assert labels["train"][empty.stem] == []
    assert [s for s in SPLITS if s in data] == ["train", "val"]  # only the splits present
    assert not (out / "images" / "test").exists()


def _redraw(values: list[float], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A label polygon drawn back as Ultralytics does (``cv2.fillPoly`` on pixel indices)."""
    points = np.asarray(values).reshape(-1, 2) * [width, height]
    drawn = np.zeros((height, width), np.uint8)
    cv2.fillPoly(drawn, [np.round(points).astype(np.int32)], 1)
    return drawn.astype(bool), points


def test_yolo_segment_polygons_outline_the_masks(job_frames, tmp_path):
    out = tmp_path / "yolo"
    _export(YoloWriter, job_frames, out, task="segment")
    data, labels = read_ultralytics(out / "data.yaml", "segment")
    for frame in job_frames:
        width, height = frame.row["width"], frame.row["height"]
        lines = labels[frame.split][frame.stem]
        assert len(lines) == len(frame.objects)
        for (cls, values), obj in zip(lines, frame.objects, strict=True):
            assert data["names"][cls] == obj["category"]
            mask = _decode(obj, frame.row)
            drawn, points = _redraw(values, width, height)
            assert drawn[mask].all()  # every pixel of the mask is inside the polygon
            assert (drawn & ~mask).sum() <= 0.5 * mask.sum() + 4  # holes and bridges only
            # vertices at boundary pixels' indices: the polygon spans the box's pixels
            lo, hi = points.min(axis=0), points.max(axis=0)
            assert np.allclose(lo, [obj["box_x_min"], obj["box_y_min"]], atol=0.01)
            assert np.allclose(hi, [obj["box_x_max"] - 1, obj["box_y_max"] - 1], atol=0.01)


def test_yolo_joins_a_mask_of_several_parts_into_one_polygon():
    width, height = 40, 30
    mask = np.zeros((height, width), np.uint8)
    mask[2:10, 3:12] = 1  # the largest part
    mask[15:25, 30:33] = 1
    mask[27, 5] = 1  # a single pixel
    mask[20, 10:16] = 1  # a one-pixel-wide line
    rle = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
    values = polygon({"mask_rle": rle}, width, height)
    drawn, points = _redraw(values, width, height)
    assert drawn[mask.astype(bool)].all()  # every part is in the one polygon
    assert (drawn & ~mask.astype(bool)).sum() <= 3 * (width + height)  # only the bridges
    assert points.min(axis=0).tolist() == [3, 2] and points.max(axis=0).tolist() == [32, 27]
    assert points[0].tolist() == points[-1].tolist()  # closed where it starts


def test_writers_name_an_unknown_option_and_refuse_a_bad_task(tmp_path):
    with pytest.raises(TypeError, match="'tasks'"):
        YoloWriter(_context(tmp_path / "a"), tasks="segment")
    with pytest.raises(ValueError, match="detect, segment"):
        YoloWriter(_context(tmp_path / "b"), task="pose")
    with pytest.raises(TypeError, match="'task'"):
        KittiWriter(_context(tmp_path / "c"), task="detect")


# ---------------------------------------------------------------------------------------------
# A strict reader of KITTI's label and calibration files


def _angle(text: str) -> float:
    value = float(text)
    assert -math.pi <= value <= math.pi, text
    return value


def read_kitti_labels(path: Path) -> list[dict]:
    return parse_kitti_labels(path.read_text())


def parse_kitti_labels(text: str) -> list[dict]:
    objects = []
    for line in text.splitlines():
        fields = line.split(" ")
        assert len(fields) == 15, line
        kind, numbers = fields[0], [float(v) for v in fields[1:]]  # every other field a number
        assert kind and not kind.replace(".", "").replace("-", "").isdigit()
        truncated, occluded = numbers[0], int(fields[2])  # int(): "1.0" is no occlusion state
        assert 0.0 <= truncated <= 1.0 and occluded in (0, 1, 2, 3)
        left, top, right, bottom = numbers[3:7]
        assert left < right and top < bottom
        dimensions = numbers[7:10]
        assert all(d > 0 for d in dimensions)
        objects.append(
            {
                "type": kind,
                "truncated": truncated,
                "occluded": occluded,
                "alpha": _angle(fields[3]),
                "bbox": [left, top, right, bottom],
                "dimensions": dimensions,  # h, w, l
                "location": np.array(numbers[10:13]),
                "rotation_y": _angle(fields[14]),
            }
        )
    return objects


CALIB_SIZES = {
    "P0": 12,
    "P1": 12,
    "P2": 12,
    "P3": 12,
    "R0_rect": 9,
    "Tr_velo_to_cam": 12,
    "Tr_imu_to_velo": 12,
}


def read_kitti_calib(path: Path) -> dict[str, np.ndarray]:
    return parse_kitti_calib(path.read_text())


def parse_kitti_calib(text: str) -> dict[str, np.ndarray]:
    calib = {}
    for line in text.splitlines():
        key, sep, values = line.partition(": ")
        assert sep and key in CALIB_SIZES and key not in calib, line
        numbers = np.array([float(v) for v in values.split(" ")])
        assert len(numbers) == CALIB_SIZES[key], line
        calib[key] = numbers.reshape(3, -1)
    assert set(calib) == set(CALIB_SIZES)
    return calib


def devkit_corners(label: dict) -> np.ndarray:
    """The 8 corners of a KITTI box in the camera frame, as the devkit's computeBox3D."""
    h, w, l = label["dimensions"]  # noqa: E741
    ry = label["rotation_y"]
    turn = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    x = [l / 2, l / 2, -l / 2, -l / 2, l / 2, l / 2, -l / 2, -l / 2]
    y = [0, 0, 0, 0, -h, -h, -h, -h]
    z = [w / 2, -w / 2, -w / 2, w / 2, w / 2, -w / 2, -w / 2, w / 2]
    return (turn @ np.array([x, y, z])).T + label["location"]


def _scipy(q_wxyz) -> np.ndarray:
    """A rotation matrix from a scalar-first quaternion, through scipy's scalar-last API."""
    w, x, y, z = q_wxyz
    return Rotation.from_quat([x, y, z, w]).as_matrix()


def _camera(row: dict) -> tuple[np.ndarray, np.ndarray]:
    position = np.array([row["cam_x"], row["cam_y"], row["cam_z"]])
    return position, _scipy([row[f"cam_q{k}"] for k in "wxyz"])


def _expected_sides(obj: dict, row: dict, sides: np.ndarray) -> list[float]:
    """(h, w, l) by the documented rule from the object's and camera's quaternions: height
    on the box axis nearest the camera's y axis, length on the first other mesh axis."""
    _, camera = _camera(row)
    axes = camera.T @ _scipy([obj[f"q{k}"] for k in "wxyz"])
    up = int(np.argmax(np.abs(axes[1])))
    forward, across = [k for k in range(3) if k != up]
    return [sides[up], sides[across], sides[forward]]


def _iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


# ---------------------------------------------------------------------------------------------
# KITTI


def test_kitti_labels_match_the_tables_the_catalog_and_the_camera(
    job_frames, tabletop_job, tmp_path
):
    out = tmp_path / "kitti"
    reported = _export(KittiWriter, job_frames, out)
    manifest = json.loads(zipfile.ZipFile(tabletop_job.archive).read("job.json"))
    labelled = [o for o in manifest["scene"]["objects"] if o["labelled"]]
    catalog = default_catalog()
    projected_ious = []
    for frame in job_frames:
        folder = out / frame.split
        assert (folder / "image_2" / f"{frame.stem}.png").read_bytes() == frame.image("rgb")
        labels = read_kitti_labels(folder / "label_2" / f"{frame.stem}.txt")
        calib = read_kitti_calib(folder / "calib" / f"{frame.stem}.txt")
        assert len(labels) == len(frame.objects)
        position, camera = _camera(frame.row)
        for label, obj in zip(labels, frame.objects, strict=True):
            assert label["type"] == obj["category"]
            assert label["truncated"] == pytest.approx(obj["truncation"], abs=1e-4)
            occlusion = obj["occlusion"]
            assert label["occluded"] == (0 if occlusion < 0.1 else 1 if occlusion < 0.5 else 2)
            box = [obj[f"box_{k}"] for k in ("x_min", "y_min", "x_max", "y_max")]
            assert label["bbox"] == box
            # dimensions: the catalog asset's sides times the object's scale
            scene_object = labelled[obj["instance_id"] - 1]
            assert scene_object["asset_id"] == obj["asset_id"]
            sides = np.multiply(catalog[obj["asset_id"]].dimensions, scene_object["scale"])
            expected = _expected_sides(obj, frame.row, sides)
            assert np.allclose(label["dimensions"], expected, atol=2e-6), obj["category"]
            # location: the bottom centre below the 3D box's centre, in the camera frame
            h = label["dimensions"][0]
            centre = camera.T @ (np.mean(obj["box3d"], axis=0) - position)
            assert np.allclose(label["location"] - [0, h / 2, 0], centre, atol=2e-6)
            # rotation_y: the box's length axis along the forward axis' x-z projection
            corners = devkit_corners(label)
            length_axis = (corners[0] - corners[3]) / label["dimensions"][2]
            axes = camera.T @ _scipy([obj[f"q{k}"] for k in "wxyz"])
            up = int(np.argmax(np.abs(axes[1])))
            forward = axes[:, min(k for k in range(3) if k != up)] * [1, 0, 1]
            assert length_axis @ forward / np.linalg.norm(forward) > 1 - 1e-6
            x, _, z = label["location"]
            alpha = label["rotation_y"] - math.atan2(x, z)
            assert math.cos(label["alpha"] - alpha) > 1 - 1e-9  # equal up to a whole turn
            # the KITTI box through P2 covers the object's 2D box, roughly
            points = np.hstack([corners, np.ones((8, 1))]) @ calib["P2"].T
            pixels = points[:, :2] / points[:, 2:]
            drawn = [*pixels.min(axis=0), *pixels.max(axis=0)]
            if obj["truncation"] == 0 and occlusion < 0.1:
                centre_2d = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]
                assert drawn[0] < centre_2d[0] < drawn[2] and drawn[1] < centre_2d[1] < drawn[3]
                projected_ious.append(_iou(drawn, box))
        fx, fy, cx, cy = (frame.row[k] for k in ("fx", "fy", "cx", "cy"))
        k = np.array([[fx, 0, cx, 0], [0, fy, cy, 0], [0, 0, 1, 0]])
        for key in ("P0", "P1", "P2", "P3"):
            assert np.allclose(calib[key], k)
        assert np.array_equal(calib["R0_rect"], np.eye(3))
        for key in ("Tr_velo_to_cam", "Tr_imu_to_velo"):
            assert np.array_equal(calib[key], np.eye(3, 4))
    assert len(projected_ious) >= 6 and min(projected_ious) > 0.4, projected_ious
    for split in SPLITS:
        stems = [f.stem for f in job_frames if f.split == split]
        assert (out / "ImageSets" / f"{split}.txt").read_text().split() == stems
    assert reported["objects"] == sum(len(f.objects) for f in job_frames)


def _level_camera_row(width: int = 64, height: int = 48) -> dict:
    """A camera at (-1, 0, 0.1) looking level along world +x: x right = world -y,
    y down = world -z, z forward = world +x."""
    cam_to_world = np.column_stack([[0, -1, 0], [0, 0, -1], [1, 0, 0]]).astype(float)
    x, y, z, w = Rotation.from_matrix(cam_to_world).as_quat()
    return {
        "width": width,
        "height": height,
        "fx": 50.0,
        "fy": 50.0,
        "cx": width / 2,
        "cy": height / 2,
        **dict(zip(("cam_x", "cam_y", "cam_z"), (-1.0, 0.0, 0.1), strict=True)),
        **dict(zip(("cam_qw", "cam_qx", "cam_qy", "cam_qz"), (w, x, y, z), strict=True)),
    }


@pytest.mark.parametrize(
    ("turn", "expected_hwl"),
    [
        (Rotation.from_euler("z", 30, degrees=True), (0.2, 0.1, 0.3)),  # upright, yawed
        (Rotation.from_euler("yz", [-90, -50], degrees=True), (0.3, 0.2, 0.1)),  # x up
    ],
)
def test_kitti_box_is_the_object_box_for_an_upright_box_and_a_level_camera(turn, expected_hwl):
    """Where the object's box has an axis along the camera's y axis, the KITTI box the
    devkit builds from the label is exactly the object's box, corner for corner."""
    row = _level_camera_row()
    sides = np.array([0.3, 0.1, 0.2])  # mesh x, y, z
    centre = np.array([1.0, 0.2, 0.15])
    signs = np.array([[sx, sy, sz] for sz in (-1, 1) for sy in (-1, 1) for sx in (-1, 1)])
    box3d = centre + (signs * sides / 2) @ turn.as_matrix().T
    x, y, z, w = turn.as_quat()
    obj = {
        "category": "cube",
        "box3d": box3d.tolist(),
        **dict(zip(("qw", "qx", "qy", "qz"), (w, x, y, z), strict=True)),
        **dict(
            zip(("box_x_min", "box_y_min", "box_x_max", "box_y_max"), (1, 2, 30, 40), strict=True)
        ),
        "truncation": 0.0,
        "occlusion": 0.3,
    }
    (label,) = parse_kitti_labels(label_line(obj, row))
    assert label["occluded"] == 1 and label["type"] == "cube"
    assert np.allclose(label["dimensions"], expected_hwl, atol=1e-6)
    position, camera = _camera(row)
    truth = (box3d - position) @ camera
    corners = devkit_corners(label)
    distances = np.linalg.norm(corners[:, None] - truth[None], axis=-1)
    assert np.all(distances.min(axis=1) < 1e-5), distances.min(axis=1)  # the same 8 corners
    # and the calibration projects them where the frame's camera does (a wide image: cx != cy)
    calib = parse_kitti_calib(calib_text(row))
    points = np.hstack([corners, np.ones((8, 1))]) @ calib["P2"].T
    fx, fy, cx, cy = (row[k] for k in ("fx", "fy", "cx", "cy"))
    expected = np.column_stack(
        [fx * truth[:, 0] / truth[:, 2] + cx, fy * truth[:, 1] / truth[:, 2] + cy]
    )
    gaps = np.linalg.norm((points[:, :2] / points[:, 2:])[:, None] - expected[None], axis=-1)
    assert np.all(gaps.min(axis=1) < 1e-6), gaps.min(axis=1)


@pytest.mark.parametrize(
    ("occlusion", "state"), [(0.0, 0), (0.099, 0), (0.1, 1), (0.49, 1), (0.5, 2), (1.0, 2)]
)
def test_kitti_occluded_states_follow_the_documented_thresholds(occlusion, state):
    row = _level_camera_row()
    signs = np.array([[sx, sy, sz] for sz in (-1, 1) for sy in (-1, 1) for sx in (-1, 1)])
    obj = {
        "category": "my mug",
        "box3d": ([1.0, 0.0, 0.1] + signs * 0.05).tolist(),
        **dict(zip(("qw", "qx", "qy", "qz"), (1.0, 0.0, 0.0, 0.0), strict=True)),
        **dict(
            zip(("box_x_min", "box_y_min", "box_x_max", "box_y_max"), (1, 2, 30, 40), strict=True)
        ),
        "truncation": 0.25,
        "occlusion": occlusion,
    }
    (label,) = parse_kitti_labels(label_line(obj, row))
    assert label["occluded"] == state
    assert label["type"] == "my_mug" and label["truncated"] == 0.25


# ---------------------------------------------------------------------------------------------
# End to end through export_batch


@pytest.fixture(scope="module")
def small_batch(tmp_path_factory):
    spec = {
        "name": "exports",
        "generator": "tabletop",
        "shard_size": 2,
        "fixed": {
            "resolution": 64,
            "n_objects": 3,
            "n_distractors": 1,
            "n_frames": 2,
            "start_time": 0.5,
        },
        "jobs": [{"light_azimuth": a} for a in (0, 90, 180, 270)],
    }
    return build_batch(tmp_path_factory.mktemp("exports"), spec).store


def _batch_objects(store) -> list[dict]:
    path = store.root / "tables" / "objects" / "batch=exports"
    return pq.ParquetDataset(path).read().to_pylist()


def test_export_batch_writes_a_yolo_dataset_ultralytics_reads(small_batch, tmp_path):
    out = tmp_path / "yolo-seg"
    split = {"train": 0.5, "val": 0.25, "test": 0.25}
    summary = export_batch(
        small_batch, "exports", "yolo", out, split=split, options={"task": "segment"}
    )
    data, labels = read_ultralytics(out / "data.yaml", "segment")
    assert Path(data["path"]) == out.absolute()
    assert {s: len(stems) for s, stems in labels.items()} == summary.frames
    assert sum(summary.frames.values()) == 8  # 4 jobs of 2 frames
    lines = {s: sum(len(v) for v in stems.values()) for s, stems in labels.items()}
    assert lines == {s: summary.objects.get(s, 0) for s in labels}
    assert sum(lines.values()) == len(_batch_objects(small_batch))
    assert summary.writer["task"] == "segment"


def test_export_batch_writes_kitti_a_devkit_reads(small_batch, tmp_path):
    out = tmp_path / "kitti"
    summary = export_batch(small_batch, "exports", "kitti", out, where="occlusion < 0.5")
    kept = [o for o in _batch_objects(small_batch) if o["occlusion"] < 0.5]
    total = 0
    for split, count in summary.frames.items():
        stems = (out / "ImageSets" / f"{split}.txt").read_text().split()
        assert len(stems) == count
        for stem in stems:
            assert (out / split / "image_2" / f"{stem}.png").is_file()
            read_kitti_calib(out / split / "calib" / f"{stem}.txt")
            labels = read_kitti_labels(out / split / "label_2" / f"{stem}.txt")
            assert all(label["occluded"] < 2 for label in labels)  # the slice's objects
            total += len(labels)
    assert total == len(kept) == sum(summary.objects.values())
