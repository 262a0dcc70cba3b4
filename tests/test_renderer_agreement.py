"""Two renderers, one truth: the fast renderer and Cycles follow the pixel convention of
docs/conventions.md, checked against an independent projection of each object's mesh with
the camera model, and they label the same scene with the same masks."""

from __future__ import annotations

import zipfile

import cv2
import numpy as np
import pytest
import trimesh
from pycocotools import mask as mask_utils
from scipy.spatial.transform import Rotation

from generators.library.tabletop import TabletopGenerator
from generators.scene.catalog import default_catalog

SEEDS = (3, 11)
# two frames of an orbiting camera: each renderer must follow the camera path too
SCENE = {
    "n_objects": 5,
    "n_distractors": 0,
    "n_frames": 2,
    "samples": 4,
    "camera_motion": "orbit",
    "orbit_speed": 120,
}


@pytest.fixture(scope="module", params=[128, 256])
def renders(request, tmp_path_factory):
    """Per seed, the same tabletop job rendered by Cycles and by the fast renderer."""
    gen, out = TabletopGenerator(), tmp_path_factory.mktemp(f"agree{request.param}")
    jobs = []
    for seed in SEEDS:
        pair = {}
        for renderer in ("cycles", "tiny"):
            params = gen.Params(**SCENE, renderer=renderer, resolution=request.param)
            result = gen.run(params, seed, out)
            assert result.status == "ok", result.error
            pair[renderer] = result
        jobs.append((gen.build_scene(gen.Params(**SCENE), seed), pair))
    return jobs


def _silhouette_box(scene, row: dict, frame: dict) -> np.ndarray:
    """The box (x0, y0, x1, y1) of the object's render mesh projected with the pinhole model
    of the conventions: vertices about the mesh box centre, scaled, posed, then projected."""
    obj = [o for o in scene.objects if o.labelled][row["instance_id"] - 1]
    entry = default_catalog()[obj.asset_id]
    mesh = trimesh.load(entry.render_mesh, force="mesh")
    local = (mesh.vertices - mesh.bounds.mean(axis=0)) * entry.scale * np.asarray(obj.scale)
    pose = Rotation.from_quat([row["qw"], row["qx"], row["qy"], row["qz"]], scalar_first=True)
    world = pose.apply(local) + [row["x"], row["y"], row["z"]]
    cam_quat = [frame["cam_qw"], frame["cam_qx"], frame["cam_qy"], frame["cam_qz"]]
    to_world = Rotation.from_quat(cam_quat, scalar_first=True)
    cam = to_world.inv().apply(world - [frame["cam_x"], frame["cam_y"], frame["cam_z"]])
    u = frame["fx"] * cam[:, 0] / cam[:, 2] + frame["cx"]
    v = frame["fy"] * cam[:, 1] / cam[:, 2] + frame["cy"]
    return np.array([u.min(), v.min(), u.max(), v.max()])


def _box(row: dict) -> np.ndarray:
    return np.array([row["box_x_min"], row["box_y_min"], row["box_x_max"], row["box_y_max"]], float)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


@pytest.mark.parametrize("renderer", ["cycles", "tiny"])
def test_unoccluded_boxes_fit_the_projected_silhouette_symmetrically(renders, renderer):
    """A label box edge lies within a pixel-centre's reach of the silhouette's: per edge the
    mean difference is within 0.6 px, and the two edges of an axis move inwards alike (an
    image shifted by half a pixel would move both the same way)."""
    edges = []
    for scene, pair in renders:
        frames = pair[renderer].frames.to_pylist()
        for row in pair[renderer].objects.to_pylist():
            if row["occlusion"] == 0 and row["truncation"] == 0:
                edges.append(_box(row) - _silhouette_box(scene, row, frames[row["frame"]]))
    edges = np.array(edges)
    assert len(edges) >= 4
    mean = edges.mean(axis=0)
    assert np.all(np.abs(mean) <= 0.6), mean
    assert abs(mean[0] + mean[2]) <= 0.3 and abs(mean[1] + mean[3]) <= 0.3, mean


def test_both_renderers_label_the_same_masks_and_boxes(renders):
    """Per object, the Cycles and fast-renderer masks overlap with IoU 0.9 or more; the boxes
    do not shift between them (under 0.2 px on average per axis) and overlap with IoU 0.9."""
    mask_ious, box_ious, shifts = [], [], []
    for _, pair in renders:
        size = [pair["tiny"].frames["height"][0].as_py(), pair["tiny"].frames["width"][0].as_py()]
        rows = {
            r: {(o["frame"], o["instance_id"]): o for o in pair[r].objects.to_pylist()}
            for r in pair
        }
        for key in rows["cycles"].keys() & rows["tiny"].keys():
            a, b = rows["cycles"][key], rows["tiny"][key]
            if min(a["visible_pixels"], b["visible_pixels"]) < 30:
                continue
            ma, mb = (mask_utils.decode({"size": size, "counts": o["mask_rle"]}) for o in (a, b))
            mask_ious.append((ma & mb).sum() / (ma | mb).sum())
            box_ious.append(_iou(_box(a), _box(b)))
            ca, cb = _box(a).reshape(2, 2).mean(0), _box(b).reshape(2, 2).mean(0)
            shifts.append(ca - cb)
    assert len(mask_ious) >= 6
    shift = np.mean(shifts, axis=0)
    assert np.mean(mask_ious) >= 0.9 and np.mean(box_ious) >= 0.9
    assert np.all(np.abs(shift) < 0.2), shift


def _member(archive, name: str) -> np.ndarray:
    with zipfile.ZipFile(archive) as z:
        return cv2.imdecode(np.frombuffer(z.read(name), np.uint8), cv2.IMREAD_UNCHANGED)


def test_the_world_behind_the_table_looks_the_same_in_both(tmp_path):
    """A low camera sees past the table: where neither renderer finds a surface (depth 0),
    both show the scene's background colour."""
    gen = TabletopGenerator()
    low = {"n_objects": 2, "n_frames": 1, "samples": 4, "camera_elevation": 20, "resolution": 64}
    images = {}
    for renderer in ("cycles", "tiny"):
        result = gen.run(gen.Params(**low, renderer=renderer), 1, tmp_path / renderer)
        assert result.status == "ok", result.error
        images[renderer] = (
            _member(result.archive, "rgb/00000.png").astype(float),
            _member(result.archive, "depth/00000.png"),
        )
    world = (images["cycles"][1] == 0) & (images["tiny"][1] == 0)
    assert world.mean() > 0.1, "the camera sees the world beyond the table"
    difference = np.abs(images["cycles"][0] - images["tiny"][0])[world]
    assert difference.mean() < 3, difference.mean()


def test_fast_renderer_textures_do_not_speckle(tmp_path):
    """Jenga blocks and dominoes carry 1024 px textures on objects some 20 px across. Sampled
    texel by texel they break up into isolated dark and bright pixels; pre-filtered, few
    pixels of an object stand out from their 3x3 neighbourhood (Cycles, which filters,
    shows under 10%)."""
    gen = TabletopGenerator()
    params = gen.Params(
        n_objects=6,
        n_distractors=0,
        n_frames=1,
        resolution=128,
        categories=["jenga_block", "domino"],
        camera_distance=0.6,
    )
    shares = []
    for seed in (1, 2):
        result = gen.run(params, seed, tmp_path)
        grey = cv2.cvtColor(_member(result.archive, "rgb/00000.png"), cv2.COLOR_BGR2GRAY)
        segmentation = _member(result.archive, "segmentation/00000.png")
        outliers = np.abs(grey.astype(float) - cv2.medianBlur(grey, 3)) > 40
        for row in result.objects.to_pylist():
            inside = cv2.erode((segmentation == row["instance_id"]).astype(np.uint8), None)
            if inside.sum() > 10:
                shares.append(outliers[inside.astype(bool)].mean())
    assert len(shares) >= 6
    assert np.mean(shares) < 0.1, shares
