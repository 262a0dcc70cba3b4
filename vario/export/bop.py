"""BOP: the 6D object pose benchmark's dataset layout, for pose estimation training.

Follows ``docs/bop_datasets_format.md`` of thodan/bop_toolkit (the BOP-scenewise format, JSON
files, as at the toolkit's commit cea62d6 of June 2026), and computes ``scene_gt_info`` as the
toolkit's ``scripts/calc_gt_info.py`` does. The export folder holds::

    models/models_info.json        {obj_id: {diameter, min_x, .., size_z}} in mm
    models/obj_{obj_id:06d}.ply    ASCII PLY with vertex normals, mm, in our object frame
    models/obj_ids.json            {obj_id: {asset_id, category, category_id, scale}} (ours)
    scene_ids.json                 {split: {scene_id: job_id}} (ours)
    camera.json                    {fx, fy, cx, cy, width, height, depth_scale}, only when
                                   every exported frame has the same camera intrinsics
    {split}/{scene_id:06d}/        one scene per job
        rgb/{im_id:06d}.png        the archive's RGB PNG, as stored
        depth/{im_id:06d}.png      the archive's depth PNG, as stored: uint16 mm, depth_scale 1
        mask/{im_id:06d}_{gt_id:06d}.png        the object's whole silhouette (0/255)
        mask_visib/{im_id:06d}_{gt_id:06d}.png  its visible pixels (0/255)
        scene_camera.json          {im_id: {cam_K, depth_scale, cam_R_w2c, cam_t_w2c}}
        scene_gt.json              {im_id: [{obj_id, cam_R_m2c, cam_t_m2c}]}
        scene_gt_info.json         {im_id: [{bbox_obj, bbox_visib, px_count_all,
                                   px_count_valid, px_count_visib, visib_fract}]}

Ids. A scene is one job: scene ids count 0, 1, ... per split in the order ``vario.export.run``
streams jobs (shard by shard, by job id within a shard), so the same export of the same batch
gives the same ids; ``scene_ids.json`` names each scene's job. An image id is our frame
number (sparse when only some frames are kept). ``gt_id`` is the index in the image's
``scene_gt`` list, whose entries are the frame's selected objects in instance order.

Object ids. BOP's ``obj_id`` names one 3D model, and a pose only fits a model of the right
size: the model is the asset's render mesh at the size it was rendered, which is the catalog's
scale times the scene object's own scale (``job.json``'s scene description; ``falling_objects``
draws one per object). An object at the catalog's size (every labelled ``tabletop`` object)
gets its asset's id, ``1 +`` the asset's position in catalog order: stable across exports of
one catalog. An object scaled otherwise gets a model of its own, numbered after the catalog's
ids in the order such models first appear in the export (deterministic for one export, not
across slices of a batch). ``models/obj_ids.json`` maps every obj_id to its asset, category,
COCO category id (``Catalog.category_ids``) and scale. Only models that appear are written,
each once: a batch that scales every object differently (``falling_objects`` with
``scale_min < scale_max``) has a model, and a PLY, per object of every job.

Models. The PLY is the render mesh (vertices merged as ``generators.scene.catalog.mesh_info``
merges them) minus the centre of its axis-aligned box, times the metric scale, in mm: our
object frame (docs/conventions.md), whose origin is that centre, so the BOP model frame and
our pose agree and the origin is the model's box centre as BOP asks. No colour or texture is
written (an object's colour is the scene's choice, not the asset's). ``diameter`` is the
largest distance between two vertices. No symmetries are given (``symmetries_discrete`` and
``symmetries_continuous`` are optional in BOP; the catalog does not know them).

Poses. ``cam_R_m2c``, ``cam_t_m2c`` (mm) map model (= object) coordinates into the OpenCV
camera frame: object-to-world from the ``objects`` pose, world-to-camera from the inverse of
the ``frames`` camera-to-world pose; ``cam_R_w2c``, ``cam_t_w2c`` (mm) are the latter.
``cam_K`` is ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` row-major; our continuous pixel
coordinates (origin at the top-left pixel's corner) are BOP's and OpenCV's.

Masks. ``mask_visib`` is the object's pixels in the segmentation (the ``mask_rle`` of its
``objects`` row), exact rather than estimated from depth as the toolkit does for real
images, so ``px_count_visib`` equals ``visible_pixels``. ``mask`` is BOP's full silhouette,
visible or not: the exported model's triangles in its pose, rasterised at pixel centres (the
pixels a renderer with no other object would give it, docs/conventions.md), joined with
``mask_visib`` so that it always contains it (they differ by at most a pixel's rim where a
renderer's edge rounding differs). Triangles with a corner closer than the near plane are
left out. As in calc_gt_info, ``px_count_all`` counts the silhouette on a canvas three times
the image's size centred on it (parts outside the image count: ``visib_fract`` falls with
truncation as well as occlusion), ``bbox_obj`` is its box there (it may start left of or
above the image), ``px_count_valid`` its in-image pixels with a depth, and boxes are the
toolkit's ``misc.calc_2d_bbox``: ``[x, y, w, h]`` with ``w = last column - first column``
(so an object's ``bbox_visib`` is ``[box_x_min, box_y_min, box_x_max - box_x_min - 1,
box_y_max - box_y_min - 1]`` in the ``objects`` table's exclusive-max edges).

Images are ``frame.image(kind)``: an augmented copy (``vario.export.augment``, photometric
only for BOP, one copy in place of the original) is written under its frame's number; a
second image of one frame is an error.

Option: ``masks`` (default True): write the ``mask`` and ``mask_visib`` PNGs (one of each
per object per frame; ``scene_gt_info`` is computed either way).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from generators.scene.catalog import AssetEntry
from generators.scene.geometry import rotation
from vario.export.frame import ExportContext, ExportFrame

OPTIONS = {"masks": True}
_CHUNK = 512  # hull vertices per block when searching the diameter


def _ids_json(content: dict[int, Any]) -> bytes:
    """A JSON object with integer keys in numeric order, one key per line, as the toolkit's
    ``inout.save_json`` writes it."""
    lines = [f'  "{k}": {json.dumps(content[k], sort_keys=True)}' for k in sorted(content)]
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def _png(mask: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    assert ok
    return data.tobytes()


def _bbox(mask: np.ndarray, x0: int = 0, y0: int = 0) -> list[int]:
    """``misc.calc_2d_bbox`` of the mask's pixels, offset by ``(x0, y0)``; [-1] * 4 if empty."""
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    if not len(cols):
        return [-1, -1, -1, -1]
    return [
        int(cols[0] + x0),
        int(rows[0] + y0),
        int(cols[-1] - cols[0]),
        int(rows[-1] - rows[0]),
    ]


def fill_triangles(uv: np.ndarray, faces: np.ndarray, x0: int, y0: int, h: int, w: int):
    """Pixels of the window ``[x0, x0 + w) x [y0, y0 + h)`` whose centre lies in at least one
    of the triangles ``uv[faces]`` (continuous pixel coordinates, docs/conventions.md): a
    union, whatever the triangles' overlap (an even-odd polygon fill would cut holes where
    the front and back of a mesh overlap). One scanline interval per triangle and row."""
    out = np.zeros((h, w), bool)
    if not len(faces) or h <= 0 or w <= 0:
        return out
    tri = uv[faces] - np.array([x0, y0], float)  # (F, 3, 2) in window coordinates
    ys = tri[..., 1]
    first = np.maximum(np.ceil(ys.min(1) - 0.5), 0).astype(np.int64)
    last = np.minimum(np.floor(ys.max(1) - 0.5), h - 1).astype(np.int64)
    n = np.maximum(last - first + 1, 0)
    if not n.sum():
        return out
    which = np.repeat(np.arange(len(tri)), n)
    rows = first[which] + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    a = tri[which]  # (P, 3, 2): each triangle once per row it spans
    b = np.roll(a, -1, axis=1)
    yc = (rows + 0.5)[:, None]
    dy = b[..., 1] - a[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (yc - a[..., 1]) / dy
    crosses = (dy != 0) & (t >= 0) & (t <= 1)
    x = a[..., 0] + t * (b[..., 0] - a[..., 0])
    left = np.where(crosses, x, np.inf).min(1)
    right = np.where(crosses, x, -np.inf).max(1)
    ok = np.isfinite(left) & np.isfinite(right)
    c0 = np.maximum(np.ceil(left[ok] - 0.5), 0).astype(np.int64)
    c1 = np.minimum(np.floor(right[ok] - 0.5), w - 1).astype(np.int64)
    rows = rows[ok]
    keep = c0 <= c1
    rows, c0, c1 = rows[keep], c0[keep], c1[keep]
    size = h * (w + 1)
    edges = np.bincount(rows * (w + 1) + c0, minlength=size) - np.bincount(
        rows * (w + 1) + c1 + 1, minlength=size
    )
    return np.cumsum(edges.reshape(h, w + 1), axis=1)[:, :w] > 0


@dataclass(frozen=True)
class _Mesh:
    """An asset's render mesh in its object frame at the catalog's size (metres), and the
    vertices of its convex hull (where the diameter's two ends lie, at any scale)."""

    vertices: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3)
    hull: np.ndarray  # (H, 3)


@dataclass(frozen=True)
class _Model:
    obj_id: int
    asset_id: str
    category: str
    scale: tuple[float, float, float]  # the scene object's scale (x catalog)
    info: dict[str, float]  # its models_info entry


def _load_mesh(entry: AssetEntry) -> _Mesh:
    import trimesh
    from scipy.spatial import ConvexHull, QhullError

    mesh = trimesh.load(entry.render_mesh, force="mesh")
    mesh.merge_vertices(merge_tex=True, merge_norm=True)  # as mesh_info loads it
    vertices = (np.asarray(mesh.vertices, float) - entry.mesh.center) * np.asarray(entry.scale)
    try:
        hull = vertices[ConvexHull(vertices).vertices]
    except QhullError:  # flat or degenerate: every vertex
        hull = vertices
    return _Mesh(vertices, np.asarray(mesh.faces, np.int64), hull)


def _diameter(points: np.ndarray) -> float:
    """The largest distance between two of ``points``, a block of rows at a time."""
    best = 0.0
    for start in range(0, len(points), _CHUNK):
        block = points[start : start + _CHUNK]
        d2 = (block**2).sum(1)[:, None] + (points**2).sum(1)[None] - 2 * block @ points.T
        best = max(best, float(d2.max()))
    return float(np.sqrt(best))


def _ply(vertices_mm: np.ndarray, faces: np.ndarray) -> bytes:
    import trimesh

    mesh = trimesh.Trimesh(vertices_mm, faces, process=False)
    return trimesh.exchange.ply.export_ply(
        mesh, encoding="ascii", vertex_normal=True, include_attributes=False
    )


@dataclass
class _Scene:
    split: str
    scene_id: int
    job_id: str
    scales: dict[int, tuple[float, float, float]]  # instance id -> scene object's scale
    camera: dict[int, dict] = field(default_factory=dict)
    gt: dict[int, list] = field(default_factory=dict)
    info: dict[int, list] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        return f"{self.split}/{self.scene_id:06d}"


def _instance_scales(frame: ExportFrame) -> dict[int, tuple[float, float, float]]:
    """Each instance's own scale, from the job's scene description: labelled objects get ids
    1..N in scene order (docs/conventions.md)."""
    scene = json.loads(frame.archive.read("job.json"))["scene"]
    labelled = [o for o in scene["objects"] if o.get("labelled", True)]
    return {
        i + 1: tuple(float(v) for v in o.get("scale", (1, 1, 1))) for i, o in enumerate(labelled)
    }


class BopWriter:
    """Writes the BOP layout described in the module docstring, one job (scene) at a time."""

    def __init__(self, ctx: ExportContext, **options: Any):
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TypeError(
                f"BOP export: unknown option {unknown[0]!r}; options: {', '.join(OPTIONS)}"
            )
        masks = options.get("masks", OPTIONS["masks"])
        if not isinstance(masks, bool):
            raise TypeError(f"BOP export: option 'masks' is true or false, not {masks!r}")
        self.ctx = ctx
        self.masks = masks
        self._asset_obj_ids = {entry.asset_id: i + 1 for i, entry in enumerate(ctx.catalog)}
        self._next_scaled_id = len(self._asset_obj_ids) + 1
        self._meshes: dict[str, _Mesh] = {}  # one per asset: memory bounded by the catalog
        self._models: dict[tuple[str, tuple[float, float, float]], _Model] = {}
        self._scene: _Scene | None = None
        self._jobs_seen: set[str] = set()
        self._scene_ids: dict[str, dict[int, str]] = {}
        self._cameras: set[tuple] = set()
        self._counts = {"images": 0, "instances": 0, "files": 0}
        self._visib_px = 0
        self._visib_outside_model_px = 0

    # -- models -------------------------------------------------------------------------

    def _mesh(self, asset_id: str) -> _Mesh:
        if asset_id not in self._meshes:
            self._meshes[asset_id] = _load_mesh(self.ctx.catalog[asset_id])
        return self._meshes[asset_id]

    def _model(self, asset_id: str, scale: tuple[float, float, float]) -> _Model:
        """The model of ``asset_id`` at the scene object's ``scale``; written when new."""
        key = (asset_id, scale)
        if key in self._models:
            return self._models[key]
        mesh = self._mesh(asset_id)
        if all(v == 1.0 for v in scale):
            obj_id = self._asset_obj_ids[asset_id]
        else:
            obj_id = self._next_scaled_id
            self._next_scaled_id += 1
        mm = mesh.vertices * np.asarray(scale) * 1000.0
        lo, hi = mm.min(0), mm.max(0)
        info = {"diameter": _diameter(mesh.hull * np.asarray(scale) * 1000.0)}
        info |= {f"min_{a}": float(lo[i]) for i, a in enumerate("xyz")}
        info |= {f"size_{a}": float(hi[i] - lo[i]) for i, a in enumerate("xyz")}
        model = _Model(obj_id, asset_id, self.ctx.catalog[asset_id].category, scale, info)
        self._models[key] = model
        self._write(f"models/obj_{obj_id:06d}.ply", _ply(mm, mesh.faces))
        return model

    # -- frames -------------------------------------------------------------------------

    def _write(self, relative: str, data: bytes, sha256: str | None = None) -> None:
        self.ctx.write(Path(relative), data, sha256)
        self._counts["files"] += 1

    def _start_scene(self, frame: ExportFrame) -> _Scene:
        if frame.job_id in self._jobs_seen:
            raise RuntimeError(f"BOP export: job {frame.job_id} streamed in two runs of frames")
        self._jobs_seen.add(frame.job_id)
        ids = self._scene_ids.setdefault(frame.split, {})
        scene_id = len(ids)
        ids[scene_id] = frame.job_id
        return _Scene(frame.split, scene_id, frame.job_id, _instance_scales(frame))

    def _flush_scene(self) -> None:
        scene = self._scene
        if scene is None:
            return
        self._write(f"{scene.folder}/scene_camera.json", _ids_json(scene.camera))
        self._write(f"{scene.folder}/scene_gt.json", _ids_json(scene.gt))
        self._write(f"{scene.folder}/scene_gt_info.json", _ids_json(scene.info))
        self._scene = None

    def add(self, frame: ExportFrame) -> None:
        if self._scene is None or self._scene.job_id != frame.job_id:
            self._flush_scene()
            self._scene = self._start_scene(frame)
        scene = self._scene
        im_id = int(frame.frame)
        if im_id in scene.camera:  # an augmented copy beside its original, say
            raise ValueError(
                f"BOP export: frame {im_id} of job {frame.job_id} given twice (BOP names an "
                "image by its frame number: one image per frame)"
            )
        row = frame.row
        width, height = int(row["width"]), int(row["height"])
        fx, fy, cx, cy = (float(row[k]) for k in ("fx", "fy", "cx", "cy"))
        self._cameras.add((fx, fy, cx, cy, width, height))

        self.ctx.write_image(f"{scene.folder}/rgb/{im_id:06d}.png", frame, "rgb")
        self._counts["files"] += 1
        depth_png = frame.image("depth")
        self._write(f"{scene.folder}/depth/{im_id:06d}.png", depth_png)
        depth = cv2.imdecode(np.frombuffer(depth_png, np.uint8), cv2.IMREAD_UNCHANGED)

        cam_rot = rotation([row[k] for k in ("cam_qw", "cam_qx", "cam_qy", "cam_qz")]).as_matrix()
        cam_pos = np.array([row["cam_x"], row["cam_y"], row["cam_z"]], float)
        r_w2c = cam_rot.T
        t_w2c = -r_w2c @ cam_pos  # metres
        scene.camera[im_id] = {
            "cam_K": [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
            "depth_scale": 1.0,
            "cam_R_w2c": r_w2c.reshape(-1).tolist(),
            "cam_t_w2c": (t_w2c * 1000.0).tolist(),
        }
        near = max(float(row.get("near") or 0.0), 1e-6)
        gts, infos = [], []
        for gt_id, obj in enumerate(frame.objects):
            instance = int(obj["instance_id"])
            model = self._model(obj["asset_id"], scene.scales[instance])
            r_o2w = rotation([obj[k] for k in ("qw", "qx", "qy", "qz")]).as_matrix()
            position = np.array([obj["x"], obj["y"], obj["z"]], float)
            r_m2c = r_w2c @ r_o2w
            t_m2c = r_w2c @ position + t_w2c  # metres
            gts.append(
                {
                    "obj_id": model.obj_id,
                    "cam_R_m2c": r_m2c.reshape(-1).tolist(),
                    "cam_t_m2c": (t_m2c * 1000.0).tolist(),
                }
            )
            rle = {"size": [height, width], "counts": obj["mask_rle"].encode("ascii")}
            visib = mask_utils.decode(rle).astype(bool)
            info, amodal = self._silhouette_info(
                model, r_m2c, t_m2c, near, (fx, fy, cx, cy), visib, depth
            )
            infos.append(info)
            if self.masks:
                stem = f"{im_id:06d}_{gt_id:06d}"
                self._write(f"{scene.folder}/mask/{stem}.png", _png(amodal))
                self._write(f"{scene.folder}/mask_visib/{stem}.png", _png(visib))
        scene.gt[im_id] = gts
        scene.info[im_id] = infos
        self._counts["images"] += 1
        self._counts["instances"] += len(gts)

    def _silhouette_info(self, model, r_m2c, t_m2c, near, intrinsics, visib, depth):
        """``scene_gt_info`` of one object, and its whole silhouette inside the image."""
        height, width = visib.shape
        fx, fy, cx, cy = intrinsics
        mesh = self._mesh(model.asset_id)
        cam = (mesh.vertices * np.asarray(model.scale)) @ r_m2c.T + t_m2c
        faces = mesh.faces[(cam[mesh.faces, 2] > near).all(axis=1)]
        z = cam[:, 2].clip(near)  # vertices behind the near plane are in no face kept
        uv = np.column_stack([fx * cam[:, 0] / z + cx, fy * cam[:, 1] / z + cy])
        # the window of the silhouette on the toolkit's canvas: the image and its size again
        # on every side
        x0, y0, x1, y1 = 0, 0, 0, 0
        if len(faces):
            used = uv[np.unique(faces)]
            x0 = max(-width, int(np.floor(used[:, 0].min())))
            y0 = max(-height, int(np.floor(used[:, 1].min())))
            x1 = max(x0, min(2 * width, int(np.ceil(used[:, 0].max()))))
            y1 = max(y0, min(2 * height, int(np.ceil(used[:, 1].max()))))
        window = fill_triangles(uv, faces, x0, y0, y1 - y0, x1 - x0)
        # the canvas: the window and the image
        lo_x, lo_y = min(x0, 0), min(y0, 0)
        canvas = np.zeros((max(y1, height) - lo_y, max(x1, width) - lo_x), bool)
        canvas[y0 - lo_y : y1 - lo_y, x0 - lo_x : x1 - lo_x] = window
        image = (slice(-lo_y, height - lo_y), slice(-lo_x, width - lo_x))
        self._visib_px += int(visib.sum())
        self._visib_outside_model_px += int((visib & ~canvas[image]).sum())
        canvas[image] |= visib
        amodal = canvas[image]
        px_all = int(canvas.sum())
        px_visib = int(visib.sum())
        info = {
            "bbox_obj": _bbox(canvas, lo_x, lo_y),
            "bbox_visib": _bbox(visib),
            "px_count_all": px_all,
            "px_count_valid": int((amodal & (depth > 0)).sum()),
            "px_count_visib": px_visib,
            "visib_fract": px_visib / px_all if px_all else 0.0,
        }
        return info, amodal

    def close(self) -> dict[str, Any]:
        self._flush_scene()
        models = sorted(self._models.values(), key=lambda m: m.obj_id)
        category_ids = self.ctx.category_ids
        self._write("models/models_info.json", _ids_json({m.obj_id: m.info for m in models}))
        self._write(
            "models/obj_ids.json",
            _ids_json(
                {
                    m.obj_id: {
                        "asset_id": m.asset_id,
                        "category": m.category,
                        "category_id": category_ids[m.category],
                        "scale": list(m.scale),
                    }
                    for m in models
                }
            ),
        )
        scene_ids = {
            split: {str(k): job for k, job in sorted(ids.items())}
            for split, ids in self._scene_ids.items()
        }
        self._write("scene_ids.json", json.dumps(scene_ids, indent=2).encode())
        if len(self._cameras) == 1:
            fx, fy, cx, cy, width, height = next(iter(self._cameras))
            camera = {"cx": cx, "cy": cy, "depth_scale": 1.0, "fx": fx, "fy": fy}
            camera |= {"height": height, "width": width}
            self._write("camera.json", json.dumps(camera, indent=2).encode())
        outside = self._visib_outside_model_px / self._visib_px if self._visib_px else 0.0
        return {
            "scenes": {split: len(ids) for split, ids in self._scene_ids.items()},
            **self._counts,
            "models": len(models),
            # visible pixels the posed model's silhouette misses: about 0 when poses are right
            "visib_outside_model": outside,
        }
