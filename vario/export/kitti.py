"""The KITTI export: the KITTI 3D object benchmark's layout and label format.

Follows the object development kit of the KITTI Vision Benchmark Suite (``devkit_object``,
its ``readme.txt``: label and calibration files as its ``readLabels.m`` and
``computeBox3D.m`` read them), one folder per split::

    {split}/image_2/{stem}.png    the frame's 8-bit RGB PNG, as in the job archive
    {split}/label_2/{stem}.txt    one line per object; empty for a frame without objects
    {split}/calib/{stem}.txt      P0 P1 P2 P3 R0_rect Tr_velo_to_cam Tr_imu_to_velo
    ImageSets/{split}.txt         the split's stems, one a line (as OpenPCDet and mmdet3d read)

Every label line has KITTI's 15 space-separated fields:

1. ``type``: the object's category (whitespace in a user category's name becomes ``_``).
2. ``truncated``: the row's ``truncation`` (0..1), the share of the amodal silhouette
   outside the image, as KITTI defines it.
3. ``occluded``: 0 (fully visible) where the row's ``occlusion`` share is below 0.1,
   1 (partly occluded) below 0.5, 2 (largely occluded) from 0.5 up; 3 (unknown) never.
4. ``alpha``: the observation angle, ``rotation_y - atan2(x, z)`` of the location,
   wrapped to [-pi, pi).
5-8. ``bbox``: left, top, right, bottom in pixels: the row's box edges (pixel-edge
   coordinates, right and bottom exclusive: docs/conventions.md).
9-11. ``dimensions``: height, width, length in metres: the sides of the object's box
   (its mesh box times its scale, measured on the ``box3d`` corners).
12-14. ``location``: x, y, z in metres of the bottom centre of the KITTI box in the camera
   frame (x right, y down, z forward: the same axes as ours and OpenCV's), that is, the 3D
   box's centre moved down (+y) by half its height.
15. ``rotation_y``: the box's rotation around the camera's y axis, [-pi, pi].

A KITTI box turns only about the camera's y axis; our objects' boxes turn freely, and the
camera looks down at the scene rather than level, so the KITTI box is an approximation
(exact only when one of the object's box axes is parallel to the camera's y axis):

- ``height`` is the side of the object's box axis most nearly parallel to the camera's y
  axis (the largest |y| component in the camera frame; the first such mesh axis on a tie);
- ``length`` is the side of the first other mesh axis (x before y before z), the box's
  forward axis, and ``width`` the remaining one;
- ``rotation_y`` is the angle of the forward axis projected on the camera's x-z plane,
  ``atan2(-d_z, d_x)`` (so that KITTI's ``R_y(rotation_y)`` maps the box's x axis onto it);
  that projection is at least 1/sqrt(2) long, since the height axis is the one nearest y;
- the KITTI box keeps the object box's centre and sides: it is the object's box turned
  about its centre by the smallest rotation that makes its height axis vertical.

Calibration: every projection matrix is ``[K | 0]`` with K the frame's intrinsics (one
camera, no stereo baseline: P0 = P1 = P2 = P3), R0_rect the 3x3 identity (the image is
already rectified), and Tr_velo_to_cam and Tr_imu_to_velo ``[I | 0]`` (there is no lidar:
KITTI tools that ask for a velodyne frame get the camera's). A point of a label's box in
the camera frame projects to the image through P2, as in the devkit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from generators.scene.geometry import rotation
from vario.export.frame import SPLITS, ExportContext, ExportFrame, check_options

KITTI_VERSION = "KITTI 3D object benchmark devkit (devkit_object) label and calib format"
OPTIONS: tuple[str, ...] = ()
OCCLUDED_BELOW = (0.1, 0.5)  # occlusion share below 0.1: 0; below 0.5: 1; else 2
CALIB_KEYS = ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo")


def wrap_angle(angle: float) -> float:
    """``angle`` in [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def occluded_state(occlusion: float) -> int:
    return sum(occlusion >= threshold for threshold in OCCLUDED_BELOW)


def camera_pose(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The camera's position and camera-to-world rotation matrix."""
    position = np.array([row["cam_x"], row["cam_y"], row["cam_z"]], float)
    quaternion = [row["cam_qw"], row["cam_qx"], row["cam_qy"], row["cam_qz"]]
    return position, rotation(quaternion).as_matrix()


def kitti_box(obj: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """``dimensions`` (h, w, l), ``location`` (x, y, z) and ``rotation_y`` of an object's
    KITTI box in the frame's camera frame (the module's docstring says how)."""
    position, cam_to_world = camera_pose(row)
    corners = (np.asarray(obj["box3d"], float) - position) @ cam_to_world  # camera frame
    sides = np.linalg.norm(corners[[1, 2, 4]] - corners[0], axis=1)  # mesh x, y, z sides
    object_to_world = rotation([obj["qw"], obj["qx"], obj["qy"], obj["qz"]]).as_matrix()
    axes = cam_to_world.T @ object_to_world  # columns: the box's axes in the camera frame
    up = int(np.argmax(np.abs(axes[1])))
    forward, across = (k for k in range(3) if k != up)
    d = axes[:, forward]
    rotation_y = math.atan2(-d[2], d[0])
    height = float(sides[up])
    location = corners.mean(axis=0) + np.array([0.0, height / 2, 0.0])
    return {
        "dimensions": (height, float(sides[across]), float(sides[forward])),
        "location": tuple(float(v) for v in location),
        "rotation_y": rotation_y,
        "alpha": wrap_angle(rotation_y - math.atan2(location[0], location[2])),
    }


def label_line(obj: dict[str, Any], row: dict[str, Any]) -> str:
    box = kitti_box(obj, row)
    kind = "_".join(str(obj["category"]).split())
    truncated = min(max(float(obj["truncation"]), 0.0), 1.0)
    bbox = [float(obj[f"box_{k}"]) for k in ("x_min", "y_min", "x_max", "y_max")]
    fields = [
        kind,
        f"{truncated:.4f}",
        str(occluded_state(float(obj["occlusion"]))),
        f"{box['alpha']:.6f}",
        *(f"{v:.2f}" for v in bbox),
        *(f"{v:.6f}" for v in box["dimensions"]),
        *(f"{v:.6f}" for v in box["location"]),
        f"{box['rotation_y']:.6f}",
    ]
    return " ".join(fields)


def calib_text(row: dict[str, Any]) -> str:
    projection = np.zeros((3, 4))
    projection[:3, :3] = [[row["fx"], 0, row["cx"]], [0, row["fy"], row["cy"]], [0, 0, 1]]
    identity = np.hstack([np.eye(3), np.zeros((3, 1))])
    matrices = {
        **dict.fromkeys(("P0", "P1", "P2", "P3"), projection),
        "R0_rect": np.eye(3),
        "Tr_velo_to_cam": identity,
        "Tr_imu_to_velo": identity,
    }
    return "".join(
        f"{key}: {' '.join(f'{v:.12e}' for v in matrices[key].reshape(-1))}\n" for key in CALIB_KEYS
    )


class KittiWriter:
    """Image, label and calibration files per frame as they come; the image sets at the end."""

    def __init__(self, ctx: ExportContext, **options: Any):
        check_options("kitti", options, OPTIONS)
        self.ctx = ctx
        self.stems: dict[str, list[str]] = {}
        self.objects = 0

    def add(self, frame: ExportFrame) -> None:
        folder = Path(frame.split)
        lines = "".join(f"{label_line(obj, frame.row)}\n" for obj in frame.objects)
        image = folder / "image_2" / f"{frame.stem}.png"
        self.ctx.write_image(image, frame, "rgb")
        self.ctx.write(folder / "label_2" / f"{frame.stem}.txt", lines.encode())
        self.ctx.write(folder / "calib" / f"{frame.stem}.txt", calib_text(frame.row).encode())
        self.stems.setdefault(frame.split, []).append(frame.stem)
        self.objects += len(frame.objects)

    def close(self) -> dict[str, Any]:
        for split in (s for s in SPLITS if s in self.stems):
            text = "".join(f"{stem}\n" for stem in self.stems[split])
            self.ctx.write(Path("ImageSets", f"{split}.txt"), text.encode())
        return {
            "format": KITTI_VERSION,
            "frames": {split: len(stems) for split, stems in self.stems.items()},
            "objects": self.objects,
            "occluded_below": list(OCCLUDED_BELOW),
        }
