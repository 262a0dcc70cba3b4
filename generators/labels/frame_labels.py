"""Per-frame labels from rendered images and simulated poses: one frame row and one row per
visible object, in the conventions of docs/conventions.md.

Occlusion and truncation need each object's *amodal* silhouette (the whole object, ignoring
others). It is rasterised from the asset's silhouette mesh projected through the camera, and
only where it can matter: when another object's pixels fall inside the projected box
(occlusion) or the box crosses the image border (truncation). Elsewhere both are exactly 0.
Occluded pixels are other objects' pixels at least one pixel inside the silhouette and nearer
than its far side; occlusion = occluded / (visible + occluded).
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from generators.render.base import FrameImages
from generators.scene.catalog import AssetEntry, Catalog
from generators.scene.description import Camera, Material, Scene
from generators.scene.geometry import box_corners, project, rotation, world_to_camera
from generators.sim.physics import Trajectory

_SUBPIXEL_BITS = 4  # cv2 fixed-point polygon vertices: 1/16 px
_RIM = np.ones((3, 3), np.uint8)


def image_stats(rgb: np.ndarray) -> tuple[float, float]:
    """Mean brightness and RMS contrast of the luma, both in [0, 1]."""
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    return float(luma.mean()), float(luma.std())


def image_hash(rgb: np.ndarray) -> int:
    """The frame's 64-bit perceptual hash (imagehash's pHash of the luma) as a signed int64:
    frames that look alike have hashes a few bits apart, identical frames equal hashes."""
    import imagehash
    from PIL import Image

    value = int(str(imagehash.phash(Image.fromarray(rgb))), 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def encode_masks(instances: np.ndarray, ids: list[int]) -> list[dict]:
    """COCO RLEs (compressed counts, as ``str``) of each id's pixels, in ``ids`` order."""
    if not ids:
        return []
    # (N, W, H) in C order is (H, W, N) in Fortran order, the layout pycocotools wants
    ids_col = np.asarray(ids, instances.dtype)[:, None, None]
    stack = np.equal(instances.T[None], ids_col, order="C").view(np.uint8)
    rles = mask_utils.encode(stack.transpose(2, 1, 0))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _rasterise(uv: np.ndarray, faces: np.ndarray, convex: bool, origin, shape) -> np.ndarray:
    """Silhouette of projected vertices ``uv`` on a canvas whose pixel (0, 0) is ``origin``."""
    canvas = np.zeros(shape, np.uint8)
    pts = np.rint((uv - 0.5 - np.asarray(origin)) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    if convex and len(pts) >= 3:
        hull = cv2.convexHull(pts)
        cv2.fillConvexPoly(canvas, hull, 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    elif not convex and len(faces):
        # the union of the faces, one at a time: one fillPoly of them all fills by parity,
        # leaving holes wherever the mesh's front and back faces overlap
        for triangle in pts[faces]:
            cv2.fillConvexPoly(canvas, triangle, 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return canvas.view(bool)


class _Projected:
    """An object's silhouette mesh in camera coordinates and pixels."""

    def __init__(self, entry: AssetEntry, metric_scale, position, rot, camera: Camera, cam_rot):
        mesh = entry.mesh
        world = (mesh.silhouette_vertices * metric_scale) @ rot.T + position
        cam = world_to_camera(world, camera.position, cam_rot)
        faces = mesh.silhouette_faces
        in_front = cam[:, 2] > camera.near
        if not in_front.all():  # drop geometry behind the camera rather than fold it over
            if mesh.convex:
                cam = cam[in_front]
            else:
                faces = faces[in_front[faces].all(axis=1)]
        self.convex = mesh.convex
        self.faces = faces
        self.far_z = float(cam[:, 2].max()) if len(cam) else 0.0
        self.uv = project(cam, *camera.intrinsics) if len(cam) else np.empty((0, 2))
        if len(self.uv):
            lo, hi = np.floor(self.uv.min(0)).astype(int), np.ceil(self.uv.max(0)).astype(int)
        else:
            lo = hi = np.zeros(2, int)
        self.lo, self.hi = lo, hi

    def mask(self, lo, hi) -> np.ndarray:
        """Amodal silhouette cropped to pixel columns/rows ``[lo, hi)``."""
        shape = (int(hi[1] - lo[1]), int(hi[0] - lo[0]))
        if not len(self.uv) or min(shape) <= 0:
            return np.zeros((max(shape[0], 0), max(shape[1], 0)), bool)
        return _rasterise(self.uv, self.faces, self.convex, lo, shape)


def occlusion_and_truncation(
    proj: _Projected, instance: int, images: FrameImages, visible: int
) -> tuple[float, float]:
    height, width = images.instances.shape
    lo_img = np.maximum(proj.lo, 0)
    hi_img = np.minimum(proj.hi, [width, height])
    truncation = 0.0
    if (proj.lo < 0).any() or (proj.hi > [width, height]).any():
        # the part of the silhouette outside the image, on a canvas at most 3x the image
        lo = np.maximum(proj.lo, [-width, -height])
        hi = np.minimum(proj.hi, [2 * width, 2 * height])
        amodal = proj.mask(lo, hi)
        inside = amodal[
            lo_img[1] - lo[1] : hi_img[1] - lo[1], lo_img[0] - lo[0] : hi_img[0] - lo[0]
        ].sum()
        total = amodal.sum()
        truncation = float(1 - inside / total) if total else 0.0
    occlusion = 0.0
    region = (slice(lo_img[1], hi_img[1]), slice(lo_img[0], hi_img[0]))
    ids = images.instances[region]
    others = (ids != 0) & (ids != instance) & (images.depth[region] < proj.far_z)
    if others.any():
        # cv2 fills pixels on polygon edges, the renderer does not: a one-pixel rim of the
        # silhouette may hold a neighbour that only touches the object, so it does not count
        inner = cv2.erode(proj.mask(lo_img, hi_img).view(np.uint8), _RIM).view(bool)
        occluded = int((inner & others).sum())
        occlusion = occluded / (visible + occluded)
    return occlusion, truncation


def frame_labels(
    scene: Scene,
    catalog: Catalog,
    trajectory: Trajectory,
    frame: int,
    images: FrameImages,
) -> tuple[dict, list[dict]]:
    """The frame's row (without ids and paths) and its visible objects' rows (without ids)."""
    cam = scene.camera_at(frame)
    fx, fy, cx, cy = cam.intrinsics
    brightness, contrast = image_stats(images.rgb)
    counts = np.bincount(images.instances.ravel(), minlength=len(scene.labelled_objects) + 1)
    scene_index = [i for i, o in enumerate(scene.objects) if o.labelled]
    visible_ids = [k + 1 for k in range(len(scene_index)) if counts[k + 1] > 0]
    rles = encode_masks(images.instances, visible_ids)
    boxes = mask_utils.toBbox(rles) if rles else []
    rotations = rotation(trajectory.quaternions[frame]).as_matrix()  # one call for all objects
    cam_rot = rotation(cam.quaternion).as_matrix()
    rows = []
    for instance, rle, (bx, by, bw, bh) in zip(visible_ids, rles, boxes, strict=True):
        i = scene_index[instance - 1]
        obj = scene.objects[i]
        entry = catalog[obj.asset_id]
        position, quat = trajectory.positions[frame, i], trajectory.quaternions[frame, i]
        metric_scale = entry.scale * np.asarray(obj.scale)
        half = entry.mesh.half_extents * metric_scale
        corners = box_corners(half, np.zeros(3)) @ rotations[i].T + position
        proj = _Projected(entry, metric_scale, position, rotations[i], cam, cam_rot)
        visible = int(counts[instance])
        occlusion, truncation = occlusion_and_truncation(proj, instance, images, visible)
        rows.append(
            {
                "instance_id": instance,
                "category": obj.category,
                "asset_id": obj.asset_id,
                "box_x_min": int(bx),
                "box_y_min": int(by),
                "box_x_max": int(bx + bw),
                "box_y_max": int(by + bh),
                "box3d": corners.tolist(),
                "x": position[0],
                "y": position[1],
                "z": position[2],
                "qw": quat[0],
                "qx": quat[1],
                "qy": quat[2],
                "qz": quat[3],
                "vx": trajectory.linear_velocities[frame, i, 0],
                "vy": trajectory.linear_velocities[frame, i, 1],
                "vz": trajectory.linear_velocities[frame, i, 2],
                "wx": trajectory.angular_velocities[frame, i, 0],
                "wy": trajectory.angular_velocities[frame, i, 1],
                "wz": trajectory.angular_velocities[frame, i, 2],
                "visible_pixels": visible,
                "occlusion": occlusion,
                "truncation": truncation,
                "mask_rle": rle["counts"],
                **looks(obj.material),
            }
        )
    frame_row = {
        "frame": frame,
        "time": scene.frame_time(frame),
        "width": cam.width,
        "height": cam.height,
        "fx": fx,
        "fy": fy,
        "cx": cx,
        "cy": cy,
        "near": cam.near,
        "far": cam.far,
        "cam_x": cam.position[0],
        "cam_y": cam.position[1],
        "cam_z": cam.position[2],
        "cam_qw": cam.quaternion[0],
        "cam_qx": cam.quaternion[1],
        "cam_qy": cam.quaternion[2],
        "cam_qz": cam.quaternion[3],
        "brightness": brightness,
        "contrast": contrast,
        "image_hash": image_hash(images.rgb),
        "n_objects": len(rows),
    }
    return frame_row, rows


def looks(material: Material) -> dict:
    """The ``objects`` columns that say how an object looks (docs/conventions.md)."""
    red, green, blue = material.color[:3]
    hue = colorsys.rgb_to_hsv(red, green, blue)[0] * 360
    hexa = "#" + "".join(f"{round(min(max(c, 0.0), 1.0) * 255):02x}" for c in (red, green, blue))
    return {
        "texture_kind": material.texture_kind,
        "color": hexa,
        "hue": hue,
        "roughness": material.roughness,
        "metallic": material.metallic,
    }
