"""Augmentations on request (``vario.export.augment``), on a real small batch: seeded and
byte-stable, labels transformed with the pixels (checked against independently computed
flips, the masks' own areas and the scene's 3D points), refused where they cannot hold."""

from __future__ import annotations

import json
import zipfile
from contextlib import closing

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import build_batch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from scipy.spatial.transform import Rotation

from vario.export import run
from vario.export.augment import Augmenter, AugmentSpecError, _intrinsics, load_spec
from vario.export.select import ExportRequestError, Selection
from vario.run import shard as sh
from vario.store import sandbox

SPEC = {
    "name": "aug",
    "generator": "tabletop",
    "seed": 5,
    "shard_size": 2,
    "fixed": {"resolution": 64, "n_frames": 2, "n_objects": 4, "n_distractors": 1},
    "sampler": {"kind": "random", "count": 3, "ranges": {"light_azimuth": [0, 360]}},
}
SPLIT = {"train": 1.0}
MIXED = {
    "seed": 1,
    "copies": 2,
    "transforms": {
        "hflip": {"p": 0.5},
        "crop": {"side": 0.75, "p": 0.7},
        "scale": {"range": [0.75, 1.5], "p": 0.7},
        "brightness": {"limit": 0.3, "p": 0.9},
        "contrast": {},
        "blur": {"p": 0.3},
        "noise": {"std": [0.01, 0.05]},
        "jpeg": {"quality": [40, 90]},
    },
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A rendered batch: 3 jobs of 2 frames in 2 shards."""
    return build_batch(tmp_path_factory.mktemp("augment"), SPEC)


def _spec(tmp_path, content: dict, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return path


def _export(batch, tmp_path, name: str, spec: dict | None, fmt: str = "coco", **kw):
    augment = _spec(tmp_path, spec, f"{name}.yaml") if spec is not None else None
    out = tmp_path / name
    summary = run.export_batch(batch.store, "aug", fmt, out, split=SPLIT, augment=augment, **kw)
    return out, summary


def _coco(out) -> dict:
    return json.loads((out / "annotations" / "instances_train.json").read_text())


def _content(out) -> dict[str, bytes]:
    """Every file of a COCO export but its dates: the images, and the JSON without ``info``."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.png")}
    data = _coco(out)
    del data["info"]
    files["annotations"] = json.dumps(data, sort_keys=True).encode()
    return files


def _originals(batch) -> tuple[dict, dict]:
    """The batch's frames by (job, frame) and objects by (job, frame, instance), as rendered."""
    con = sandbox.connection(batch.store)
    frames = con.sql("SELECT * FROM frames WHERE batch = 'aug'").to_arrow_table()
    objects = con.sql("SELECT * FROM objects WHERE batch = 'aug'").to_arrow_table()
    by_frame = {(r["job_id"], r["frame"]): r for r in frames.to_pylist()}
    by_object = {(r["job_id"], r["frame"], r["instance_id"]): r for r in objects.to_pylist()}
    return by_frame, by_object


def _archive_png(batch, job_id: str, member: str) -> np.ndarray:
    path = sh.archive_path(batch.store.archive_dir("aug"), job_id)
    with zipfile.ZipFile(path) as archive:
        data = archive.read(member)
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def _decode(rle: str, height: int, width: int) -> np.ndarray:
    return mask_utils.decode({"size": [height, width], "counts": rle.encode()}).astype(bool)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_differs(batch, tmp_path):
    first, summary = _export(batch, tmp_path, "first", MIXED)
    second, _ = _export(batch, tmp_path, "second", MIXED)
    other, _ = _export(batch, tmp_path, "other", {**MIXED, "seed": 2})
    assert summary.frames == {"train": 6 * 3}  # each frame and its 2 copies
    stems = {p.stem for p in (first / "images" / "train").iterdir()}
    assert {s[-3:] for s in stems if "_a" in s} == {"_a0", "_a1"} and len(stems) == 18
    assert _content(first) == _content(second)
    a, b = _content(first), _content(other)
    assert a.keys() == b.keys()
    changed = [k for k in a if a[k] != b[k]]
    assert all("_a" in k for k in changed if k != "annotations") and len(changed) > 6
    # the request holds the spec's content, not its path
    recorded = json.loads((first / "export.json").read_text())["request"]["augment"]
    assert recorded["seed"] == 1 and recorded["copies"] == 2 and recorded["keep_original"]
    assert recorded["transforms"]["crop"] == {"p": 0.7, "side": 0.75}
    assert "first.yaml" not in json.dumps(recorded)


def test_a_horizontal_flip_mirrors_image_boxes_masks_and_principal_point(batch, tmp_path):
    spec = {"copies": 1, "keep_original": False, "transforms": {"hflip": {"p": 1.0}}}
    out, summary = _export(batch, tmp_path, "flip", spec)
    frames, objects = _originals(batch)
    data = _coco(out)
    assert len(data["images"]) == len(frames) == 6
    images = {i["id"]: i for i in data["images"]}
    seen = 0
    for image in data["images"]:
        job, frame = image["vario"]["job_id"], image["vario"]["frame"]
        row = frames[(job, frame)]
        w, h = row["width"], row["height"]
        assert (image["width"], image["height"]) == (w, h)
        assert image["file_name"] == f"{job}_{frame:05d}_a0.png"
        assert image["vario"]["cx"] == w - row["cx"] and image["vario"]["fx"] == row["fx"]
        flipped = cv2.imread(str(out / "images" / "train" / image["file_name"]))
        rendered = _archive_png(batch, job, row["rgb_path"])
        assert np.array_equal(flipped, rendered[:, ::-1])
    for ann in data["annotations"]:
        image = images[ann["image_id"]]
        job, frame = image["vario"]["job_id"], image["vario"]["frame"]
        before = objects[(job, frame, ann["instance_id"])]
        w, h = image["width"], image["height"]
        x0, y0, x1, y1 = (before[f"box_{k}"] for k in ("x_min", "y_min", "x_max", "y_max"))
        assert ann["bbox"] == [w - x1, y0, x1 - x0, y1 - y0]
        expected = _decode(before["mask_rle"], h, w)[:, ::-1]
        assert np.array_equal(_decode(ann["segmentation"]["counts"], h, w), expected)
        assert ann["area"] == before["visible_pixels"]
        seen += 1
    assert seen == len(objects)


def test_brightness_alone_leaves_boxes_and_masks_as_they_were(batch, tmp_path):
    plain, _ = _export(batch, tmp_path, "plain", None)
    spec = {"copies": 1, "keep_original": False, "transforms": {"brightness": {"p": 1.0}}}
    bright, _ = _export(batch, tmp_path, "bright", spec)
    before, after = _coco(plain), _coco(bright)
    assert after["annotations"] == before["annotations"]
    assert [{**i, "file_name": None} for i in after["images"]] == [
        {**i, "file_name": None} for i in before["images"]
    ]
    pairs = [
        (
            cv2.imread(str(plain / "images/train" / a["file_name"])).astype(int),
            cv2.imread(str(bright / "images/train" / b["file_name"])).astype(int),
        )
        for a, b in zip(before["images"], after["images"], strict=True)
    ]
    assert all(np.abs(x - y).max() > 0 for x, y in pairs)


def _project(row: dict, point: np.ndarray, camera: dict) -> np.ndarray:
    """Continuous pixel coordinates of a world point through the row's pose and ``camera``."""
    q = [row["cam_qx"], row["cam_qy"], row["cam_qz"], row["cam_qw"]]
    c2w = Rotation.from_quat(q).as_matrix()
    x, y, z = c2w.T @ (point - np.array([row["cam_x"], row["cam_y"], row["cam_z"]]))
    return np.array([camera["fx"] * x / z + camera["cx"], camera["fy"] * y / z + camera["cy"]])


def _centroid(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean() + 0.5, rows.mean() + 0.5])


def test_geometric_copies_load_in_pycocotools_with_consistent_masks_and_intrinsics(batch, tmp_path):
    spec = {
        "seed": 3,
        "copies": 3,
        "keep_original": False,
        "transforms": {"crop": {"side": 0.7, "p": 1.0}, "scale": {"range": [1.2, 1.8], "p": 1.0}},
    }
    out, summary = _export(batch, tmp_path, "geo", spec)
    coco = COCO(str(out / "annotations" / "instances_train.json"))
    frames, objects = _originals(batch)
    assert len(coco.imgs) == 18 and coco.anns
    sizes = set()
    for image in coco.imgs.values():
        png = cv2.imread(str(out / "images" / "train" / image["file_name"]))
        assert png.shape[:2] == (image["height"], image["width"])
        sizes.add(png.shape[:2])
    assert len(sizes) > 1 and all(h < 64 * 1.8 * 0.7 + 1 for h, _ in sizes)
    dropped = sum(len(objects) for _ in range(3)) - len(coco.anns)
    assert dropped > 0  # some objects were cropped away, and their rows went with them
    checked = 0
    for ann in coco.anns.values():
        mask = coco.annToMask(ann).astype(bool)
        assert mask.sum() == ann["area"] > 0
        rows, cols = np.nonzero(mask)
        x, y = int(cols.min()), int(rows.min())
        assert ann["bbox"] == [x, y, int(cols.max()) + 1 - x, int(rows.max()) + 1 - y]
        # the new intrinsics and the new mask moved together: the object's 3D centre projects
        # to the same place relative to its mask, scaled by the zoom, as before
        image = coco.imgs[ann["image_id"]]
        key = (image["vario"]["job_id"], image["vario"]["frame"])
        row, before = frames[key], objects[(*key, ann["instance_id"])]
        centre = np.array([before["x"], before["y"], before["z"]])
        old_mask = _decode(before["mask_rle"], row["height"], row["width"])
        if _touches_edge(old_mask) or _touches_edge(mask) or mask.sum() < 30:
            continue  # a mask cut by an edge moves its centroid
        zoom = image["vario"]["fx"] / row["fx"]
        assert image["vario"]["fy"] / row["fy"] == pytest.approx(zoom, rel=0.05)
        was = _project(row, centre, row) - _centroid(old_mask)
        now = _project(row, centre, image["vario"]) - _centroid(mask)
        assert np.allclose(now, zoom * was, atol=1.0), (now, zoom * was)
        checked += 1
    assert checked >= 5


def _touches_edge(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_intrinsics_follow_flips_crops_and_scales_in_order():
    # rendered frames have the principal point at the centre, where a flip leaves it: an
    # off-centre one shows that flips mirror it
    row = {"fx": 50.0, "fy": 40.0, "cx": 10.0, "cy": 12.0}
    applied = [
        ("HorizontalFlip", {"shape": (60, 80, 3)}),
        ("VerticalFlip", {"shape": (60, 80, 3)}),
        ("GaussNoise", {"shape": (60, 80, 3)}),
        ("RandomCrop", {"shape": (60, 80, 3), "crop_coords": (5, 6, 69, 54)}),
        ("RandomScale", {"shape": (48, 64, 3), "scale": 1.5}),
    ]
    camera = _intrinsics(row, applied, (72, 96))
    assert camera == {"fx": 75.0, "fy": 60.0, "cx": (80 - 10 - 5) * 1.5, "cy": (60 - 12 - 6) * 1.5}


def test_an_augmented_frame_has_depth_only_when_no_pixel_moved(batch, tmp_path):
    con = sandbox.connection(batch.store)
    jobs, _ = run._rendered_jobs(con, "aug")
    splits = dict.fromkeys(jobs, "train")
    stream = run._frames(batch.store, con, "aug", Selection(), splits, len(jobs), None)
    with closing(stream):  # the archive stays open while the stream is held
        frame = next(stream)
        photometric = load_spec(_spec(tmp_path, {"transforms": {"noise": {"p": 1.0}}}, "p.yaml"))
        copy = Augmenter(photometric).apply(frame, 0)
        assert copy.image("depth") == frame.image("depth") and copy.stem == f"{frame.stem}_a0"
        assert copy.image("rgb") != frame.image("rgb")
        geometric = load_spec(_spec(tmp_path, {"transforms": {"vflip": {"p": 0.0}}}, "g0.yaml"))
        assert Augmenter(geometric).apply(frame, 0).image("depth") == frame.image("depth")
        geometric = load_spec(_spec(tmp_path, {"transforms": {"vflip": {"p": 0.5}}}, "g.yaml"))
        for n in range(2):
            with pytest.raises(ValueError, match="no depth image: a geometric augmentation"):
                Augmenter(geometric).apply(frame, n).image("depth")


@pytest.mark.parametrize(
    ("fmt", "options", "spec", "message"),
    [
        ("kitti", {}, {"transforms": {"hflip": {}}}, "geometric transforms \\(hflip\\)"),
        ("bop", {}, {"transforms": {"crop": {}, "noise": {}}}, "bop's 3D labels"),
        ("hf", {"extra": "depth"}, {"transforms": {"scale": {}}}, "with depth images"),
        ("bop", {}, {"transforms": {"noise": {}}}, "copies: 1, keep_original: false"),
    ],
)
def test_what_cannot_hold_is_refused_before_any_work(batch, tmp_path, fmt, options, spec, message):
    augment = _spec(tmp_path, spec)
    with pytest.raises(ExportRequestError, match=message):
        run.export_batch(batch.store, "aug", fmt, tmp_path / "x", augment=augment, options=options)
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]


def test_photometric_augmentation_feeds_kitti(batch, tmp_path):
    spec = {"copies": 2, "transforms": {"contrast": {"p": 1.0}, "jpeg": {"p": 1.0}}}
    out, summary = _export(batch, tmp_path, "kitti", spec, fmt="kitti")
    assert summary.frames == {"train": 18}
    assert len(list(out.rglob("image_2/*_a1.png"))) == 6


def test_augmented_copies_go_into_hf_shards_beside_the_archives_images(batch, tmp_path):
    """An augmented copy's image is not in any archive: its bytes go to the shard-writing
    process with the row group, beside originals that it reads from the archives."""
    spec = {"copies": 1, "transforms": {"noise": {"p": 1.0}}}
    out, summary = _export(batch, tmp_path, "hf", spec, fmt="hf", options={"extra": "depth"})
    assert summary.frames == {"train": 12}
    [shard] = (out / "data").iterdir()
    records = {r["image"]["path"]: r for r in pq.read_table(shard).to_pylist()}
    copies = [path for path in records if path.endswith("_a0.png")]
    assert len(copies) == 6 and len(records) == 12
    for path in copies:
        copy, original = records[path], records[path.replace("_a0", "")]
        assert copy["depth"]["bytes"] == original["depth"]["bytes"]  # no pixel moved
        pixels = [
            cv2.imdecode(np.frombuffer(r["image"]["bytes"], np.uint8), 1) for r in (copy, original)
        ]
        assert (
            pixels[0].shape == pixels[1].shape
            and np.abs(pixels[0].astype(int) - pixels[1]).max() > 0
        )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"transforms": {"rotate": {"p": 1}}},
            "transforms: Value error, unknown transform\\(s\\) 'rotate'; transforms: hflip, vflip",
        ),
        ({"transforms": {"brightness": {"limit": 3}}}, "transforms.brightness.limit: Input"),
        ({"transforms": {"scale": {"range": [1.5, 0.9]}}}, "transforms.scale: Value error, range"),
        ({"transforms": {"jpeg": {"quality": [0, 90]}}}, "transforms.jpeg.quality.0"),
        ({"transforms": {"hflip": {"p": 1.5}}}, "transforms.hflip.p: Input should be less"),
        ({"copies": 17, "transforms": {"hflip": {}}}, "copies: Input should be less than"),
        ({"transforms": {}}, "transforms: Value error, at least one transform"),
        ({"seed": 1}, "transforms: Field required"),
    ],
)
def test_a_bad_spec_is_refused_with_the_field(batch, tmp_path, content, message):
    augment = _spec(tmp_path, content)
    with pytest.raises(AugmentSpecError, match=message) as caught:
        run.export_batch(batch.store, "aug", "coco", tmp_path / "x", augment=augment)
    assert str(caught.value).startswith("--augment: ")
    assert isinstance(caught.value, ExportRequestError)
    assert not (tmp_path / "x").exists()


def test_a_huge_or_missing_spec_is_refused(batch, tmp_path):
    huge = tmp_path / "huge.yaml"
    huge.write_text("seed: 1\n" + "# padding\n" * (1 << 17))
    with pytest.raises(AugmentSpecError, match="larger than 1,048,576 bytes"):
        run.export_batch(batch.store, "aug", "coco", tmp_path / "x", augment=huge)
    with pytest.raises(AugmentSpecError, match="--augment: .*nope.yaml: No such file"):
        run.export_batch(batch.store, "aug", "coco", tmp_path / "x", augment=tmp_path / "nope.yaml")
    assert not (tmp_path / "x").exists()
