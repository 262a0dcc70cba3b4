"""Frames, rotations and the pinhole camera, in the conventions of docs/conventions.md.

World: right-handed, Z up, metres. Quaternions are scalar-first ``(w, x, y, z)`` everywhere in
Vario (as in Kubric and Blender); PyBullet's ``(x, y, z, w)`` is converted only at its boundary.
Camera frame: OpenCV (x right, y down, z forward).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.random import Generator
    from scipy.spatial.transform import Rotation

Quat = tuple[float, float, float, float]
Vec3 = tuple[float, float, float]

# OpenCV camera axes expressed in OpenGL camera axes (x right, y up, looking down -z).
_CV_TO_GL = np.diag([1.0, -1.0, -1.0])


def _rotation_class() -> type[Rotation]:
    """scipy's ``Rotation``, imported on first use: scipy takes a while to import, and
    inspecting generators (``vario generators list``) needs none of it."""
    from scipy.spatial.transform import Rotation

    return Rotation


def rotation(quat_wxyz: Quat | np.ndarray) -> Rotation:
    return _rotation_class().from_quat(np.asarray(quat_wxyz, dtype=float), scalar_first=True)


def quat_wxyz(rot: Rotation) -> Quat:
    return tuple(float(v) for v in rot.as_quat(canonical=True, scalar_first=True))


def to_pybullet_quat(q: Quat | np.ndarray) -> Quat:
    w, x, y, z = q
    return (x, y, z, w)


def from_pybullet_quat(q: Quat | np.ndarray) -> Quat:
    x, y, z, w = q
    return quat_wxyz(_rotation_class().from_quat([x, y, z, w]))


def look_at(eye: np.ndarray, target: np.ndarray, up: Vec3 = (0.0, 0.0, 1.0)) -> Rotation:
    """Camera-to-world rotation of an OpenCV camera at ``eye`` looking at ``target``."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight down/up: any right vector will do
        right = np.cross(forward, (0.0, 1.0, 0.0))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return _rotation_class().from_matrix(np.column_stack([right, down, forward]))


def random_rotation(rng: Generator) -> Rotation:
    """A rotation drawn uniformly from the given random stream."""
    return _rotation_class().random(rng=rng)


def spherical_to_cartesian(distance: float, azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Point at ``distance`` from the origin; azimuth from +X towards +Y, elevation above XY."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return distance * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def world_to_camera(points: np.ndarray, cam_position: Vec3, cam_rotation: np.ndarray) -> np.ndarray:
    """Points (N, 3) in the world frame to the OpenCV camera frame; ``cam_rotation`` is the
    camera-to-world rotation matrix."""
    return (np.asarray(points, float) - np.asarray(cam_position)) @ cam_rotation


def project(points_cam: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Camera-frame points (N, 3) to continuous pixel coordinates (N, 2); see conventions."""
    z = points_cam[:, 2]
    return np.column_stack([fx * points_cam[:, 0] / z + cx, fy * points_cam[:, 1] / z + cy])


def opengl_view_matrix(cam_position: Vec3, cam_quat: Quat) -> list[float]:
    """Column-major 4x4 world-to-camera matrix in OpenGL axes, as PyBullet expects."""
    cam_to_world = rotation(cam_quat).as_matrix() @ _CV_TO_GL
    view = np.eye(4)
    view[:3, :3] = cam_to_world.T
    view[:3, 3] = -cam_to_world.T @ np.asarray(cam_position, float)
    return view.T.reshape(-1).tolist()


def box_corners(half_extents: np.ndarray, center: np.ndarray) -> np.ndarray:
    """The 8 corners (8, 3) of an axis-aligned box, in a fixed order (x fastest, then y, z)."""
    signs = np.array([[sx, sy, sz] for sz in (-1, 1) for sy in (-1, 1) for sx in (-1, 1)], float)
    return center + signs * half_extents
