"""The conventions of docs/conventions.md hold across tables: camera pose and intrinsics in
``frames``, object poses, 2D and 3D boxes in ``objects``."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def _project(points, frame):
    cam_to_world = Rotation.from_quat(
        [frame["cam_qw"], frame["cam_qx"], frame["cam_qy"], frame["cam_qz"]], scalar_first=True
    )
    cam = cam_to_world.inv().apply(
        np.asarray(points) - [frame["cam_x"], frame["cam_y"], frame["cam_z"]]
    )
    assert (cam[:, 2] > 0).all()  # z forward: everything labelled is in front
    return np.column_stack(
        [
            frame["fx"] * cam[:, 0] / cam[:, 2] + frame["cx"],
            frame["fy"] * cam[:, 1] / cam[:, 2] + frame["cy"],
        ]
    )


def test_object_positions_project_into_their_boxes(tabletop_job):
    frames = {f["frame"]: f for f in tabletop_job.frames.to_pylist()}
    checked = 0
    for o in tabletop_job.objects.to_pylist():
        if o["occlusion"] > 0.3 or o["truncation"] > 0:
            continue  # a hidden centre may fall outside the visible part's box
        ((u, v),) = _project([[o["x"], o["y"], o["z"]]], frames[o["frame"]])
        assert o["box_x_min"] - 1 <= u <= o["box_x_max"] + 1
        assert o["box_y_min"] - 1 <= v <= o["box_y_max"] + 1
        checked += 1
    assert checked >= 5


def test_projected_3d_boxes_contain_the_2d_boxes(tabletop_job):
    frames = {f["frame"]: f for f in tabletop_job.frames.to_pylist()}
    for o in tabletop_job.objects.to_pylist():
        uv = _project(o["box3d"], frames[o["frame"]])
        assert uv[:, 0].min() - 1 <= o["box_x_min"] and o["box_x_max"] <= uv[:, 0].max() + 1
        assert uv[:, 1].min() - 1 <= o["box_y_min"] and o["box_y_max"] <= uv[:, 1].max() + 1


def test_camera_looks_at_the_table_with_z_forward_and_y_down(tabletop_job):
    f = tabletop_job.frames.to_pylist()[0]
    rot = Rotation.from_quat(
        [f["cam_qw"], f["cam_qx"], f["cam_qy"], f["cam_qz"]], scalar_first=True
    )
    forward, down = rot.apply([0, 0, 1]), rot.apply([0, 1, 0])
    to_table = -np.array([f["cam_x"], f["cam_y"], f["cam_z"]])
    assert np.dot(forward, to_table / np.linalg.norm(to_table)) > 0.99
    assert down[2] < 0  # image rows go down in the world
    ((u, v),) = _project([[0.0, 0.0, 0.03]], f)  # the look-at target is the image centre
    assert abs(u - f["width"] / 2) < 0.5 and abs(v - f["height"] / 2) < 0.5
