"""Two renderers, one truth: the fast renderer and Cycles follow the pixel convention of
docs/conventions.md, checked against an independent projection of each object's mesh with
the camera model, and they label the same scene with the same masks."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from pycocotools import mask as mask_utils
from scipy.spatial.transform import Rotation

from generators.library.tabletop import TabletopGenerator
from generators.scene.catalog import default_catalog

SEEDS = (3, 11)
SCENE = {"n_objects": 5, "n_distractors": 0, "n_frames": 1, "samples": 4}


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
