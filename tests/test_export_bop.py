"""The BOP export (vario/export/bop.py) held to the BOP format (thodan/bop_toolkit,
docs/bop_datasets_format.md) and to the jobs' own archives and label tables, with checks
that do not share the writer's arithmetic: the model's box carried back into the world
must be the table's 3D box, the PLY's vertices projected with cam_K, cam_R_m2c and
cam_t_m2c must land on the object's pixels, masks must be the segmentation's pixels."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import build_batch

from generators.labels import archive as arc
from generators.library.falling_objects import FallingObjectsGenerator
from generators.scene.catalog import default_catalog
from vario.export.bop import BopWriter, fill_triangles
from vario.export.frame import ExportContext, ExportFrame

CAMERA_KEYS = {"cam_K", "depth_scale", "cam_R_w2c", "cam_t_w2c"}
GT_KEYS = {"obj_id", "cam_R_m2c", "cam_t_m2c"}
INFO_KEYS = {
    "bbox_obj",
    "bbox_visib",
    "px_count_all",
    "px_count_valid",
    "px_count_visib",
    "visib_fract",
}
MODEL_KEYS = {"diameter", "min_x", "min_y", "min_z", "size_x", "size_y", "size_z"}
SCALE = 2.0  # every falling object twice its catalog size


def _tables(z: zipfile.ZipFile) -> tuple[list[dict], list[dict]]:
    tables = arc.read_tables(Path(z.filename))
    frames, objects = (tables[name].to_pylist() for name in ("frames", "objects"))
    return frames, objects


def _context(out: Path, splits: tuple[str, ...]) -> ExportContext:
    out.mkdir()

    def write(path: Path, data: bytes, sha256: str | None = None) -> None:
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        assert not target.exists(), f"{path} written twice"
        target.write_bytes(data)

    return ExportContext(out=out, batch="t", splits=splits, catalog=default_catalog(), write=write)


def export(out: Path, archives: list[tuple[str, Path]], **options) -> dict:
    """The writer fed as run.py feeds it: job by job, frame by frame, objects by instance."""
    writer = BopWriter(_context(out, tuple(dict.fromkeys(s for s, _ in archives))), **options)
    for split, archive in archives:
        with zipfile.ZipFile(archive) as z:
            frames, objects = _tables(z)
            for row in sorted(frames, key=lambda r: r["frame"]):
                mine = [o for o in objects if o["frame"] == row["frame"]]
                mine.sort(key=lambda o: o["instance_id"])
                writer.add(ExportFrame(split, row["job_id"], row["frame"], row, mine, z))
    return writer.close()


@pytest.fixture(scope="module")
def falling_job(tmp_path_factory):
    gen = FallingObjectsGenerator()
    params = gen.Params(
        resolution=96,
        n_frames=2,
        n_objects=4,
        scale_min=SCALE,
        scale_max=SCALE,
        camera_radius_min=1.5,
        camera_radius_max=1.5,
    )
    return gen.run(params, 5, tmp_path_factory.mktemp("falling"))


@pytest.fixture(scope="module")
def bop(tmp_path_factory, tabletop_job, falling_job):
    out = tmp_path_factory.mktemp("bop") / "export"
    jobs = [("train", tabletop_job.archive), ("test", falling_job.archive)]
    return out, jobs, export(out, jobs)


def _json(path: Path):
    return json.loads(path.read_text())


def _png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def _walk(bop):
    """(scene folder, archive, frames row, gt_id, objects row, gt, gt_info, camera) for every
    object the export holds."""
    out, jobs, _ = bop
    scene_ids = _json(out / "scene_ids.json")
    for split, archive in jobs:
        with zipfile.ZipFile(archive) as z:
            frames, objects = _tables(z)
            job_id = frames[0]["job_id"]
            (scene_id,) = [int(k) for k, v in scene_ids[split].items() if v == job_id]
            folder = out / split / f"{scene_id:06d}"
            cameras = _json(folder / "scene_camera.json")
            gts, infos = _json(folder / "scene_gt.json"), _json(folder / "scene_gt_info.json")
            for row in frames:
                im = str(row["frame"])
                mine = sorted(
                    (o for o in objects if o["frame"] == row["frame"]),
                    key=lambda o: o["instance_id"],
                )
                assert len(gts[im]) == len(infos[im]) == len(mine)
                for gt_id, obj in enumerate(mine):
                    yield folder, z, row, gt_id, obj, gts[im][gt_id], infos[im][gt_id], cameras[im]


def _floats(value, n: int) -> bool:
    return isinstance(value, list) and len(value) == n and all(type(v) is float for v in value)


def test_the_layout_and_every_json_follow_the_bop_format(bop):
    out, jobs, summary = bop
    scene_ids = _json(out / "scene_ids.json")
    assert list(scene_ids) == ["train", "test"]
    assert all(list(ids) == ["0"] for ids in scene_ids.values())  # one job, scene 0, per split
    models_info = _json(out / "models" / "models_info.json")
    obj_ids = _json(out / "models" / "obj_ids.json")
    assert set(models_info) == set(obj_ids)
    for obj_id, info in models_info.items():
        assert set(info) == MODEL_KEYS and all(type(v) is float for v in info.values())
        assert (out / "models" / f"obj_{int(obj_id):06d}.ply").is_file()
    used, n_objects = set(), 0
    for split, archive in jobs:
        with zipfile.ZipFile(archive) as z:
            frames, _ = _tables(z)
        folder = out / split / "000000"
        ims = sorted(r["frame"] for r in frames)
        cameras, gts, infos = (
            _json(folder / f"scene_{n}.json") for n in ("camera", "gt", "gt_info")
        )
        for content in (cameras, gts, infos):
            assert sorted(int(k) for k in content) == ims  # image ids are our frame numbers
        masks = set()
        for im in ims:
            camera = cameras[str(im)]
            assert set(camera) == CAMERA_KEYS
            assert _floats(camera["cam_K"], 9) and _floats(camera["cam_R_w2c"], 9)
            assert _floats(camera["cam_t_w2c"], 3) and camera["depth_scale"] == 1.0
            for name in ("rgb", "depth"):
                assert (folder / name / f"{im:06d}.png").is_file()
            for gt_id, (gt, info) in enumerate(zip(gts[str(im)], infos[str(im)], strict=True)):
                assert set(gt) == GT_KEYS and type(gt["obj_id"]) is int
                assert _floats(gt["cam_R_m2c"], 9) and _floats(gt["cam_t_m2c"], 3)
                used.add(str(gt["obj_id"]))
                assert set(info) == INFO_KEYS
                for key in ("bbox_obj", "bbox_visib"):
                    assert len(info[key]) == 4 and all(type(v) is int for v in info[key])
                counts = [info[f"px_count_{k}"] for k in ("all", "valid", "visib")]
                assert all(type(v) is int for v in counts)
                assert 0 < info["px_count_visib"] <= info["px_count_all"]
                assert info["px_count_valid"] <= info["px_count_all"]
                assert type(info["visib_fract"]) is float and 0 < info["visib_fract"] <= 1
                masks.add(f"{im:06d}_{gt_id:06d}.png")
                n_objects += 1
        for kind in ("mask", "mask_visib"):  # exactly one of each per scene_gt entry
            assert {p.name for p in (folder / kind).iterdir()} == masks
    assert used == set(models_info)  # a model for every obj_id used, and no other
    assert summary["instances"] == n_objects and summary["models"] == len(models_info)


def _orthonormal(r: np.ndarray) -> bool:
    return np.allclose(r @ r.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(r), 1)


def test_cameras_and_poses_are_in_mm_and_carry_the_model_onto_the_tables_3d_box(bop):
    out = bop[0]
    models_info = _json(out / "models" / "models_info.json")
    for _, _, row, _, obj, gt, _, camera in _walk(bop):
        k = np.reshape(camera["cam_K"], (3, 3))
        assert np.allclose(k, [[row["fx"], 0, row["cx"]], [0, row["fy"], row["cy"]], [0, 0, 1]])
        r_w2c, t_w2c = np.reshape(camera["cam_R_w2c"], (3, 3)), np.array(camera["cam_t_w2c"])
        r_m2c, t_m2c = np.reshape(gt["cam_R_m2c"], (3, 3)), np.array(gt["cam_t_m2c"])
        assert _orthonormal(r_w2c) and _orthonormal(r_m2c)
        # units: the camera's centre and the object's distance from it, in the table's metres
        cam_centre = -r_w2c.T @ t_w2c / 1000
        assert np.allclose(cam_centre, [row["cam_x"], row["cam_y"], row["cam_z"]], atol=1e-9)
        distance = np.linalg.norm(np.subtract([obj["x"], obj["y"], obj["z"]], cam_centre))
        assert np.linalg.norm(t_m2c) / 1000 == pytest.approx(distance, rel=1e-9)
        assert t_m2c[2] > 0  # in front of the camera
        # the model's box (models_info, mm) through model -> camera -> world is the 3D box
        info = models_info[str(gt["obj_id"])]
        lo = np.array([info["min_x"], info["min_y"], info["min_z"]])
        size = np.array([info["size_x"], info["size_y"], info["size_z"]])
        signs = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)])
        corners = lo + signs * size  # the box3d order: x fastest, then y, z
        world = (r_w2c.T @ (r_m2c @ corners.T + t_m2c[:, None] - t_w2c[:, None])).T / 1000
        assert np.allclose(world, obj["box3d"], atol=1e-6), (obj["asset_id"], world, obj["box3d"])


def test_masks_are_the_segmentation_and_the_counts_the_tables(bop):
    n_hidden = n_cut = 0
    for folder, z, row, gt_id, obj, _, info, _ in _walk(bop):
        stem = f"{row['frame']:06d}_{gt_id:06d}.png"
        visib, whole = (_png(folder / kind / stem) for kind in ("mask_visib", "mask"))
        assert visib.dtype == whole.dtype == np.uint8 and set(np.unique(visib)) <= {0, 255}
        segmentation = cv2.imdecode(
            np.frombuffer(z.read(row["segmentation_path"]), np.uint8), cv2.IMREAD_UNCHANGED
        )
        assert np.array_equal(visib > 0, segmentation == obj["instance_id"])
        assert (visib > 0).sum() == info["px_count_visib"] == obj["visible_pixels"]
        x0, y0, x1, y1 = (obj[f"box_{k}"] for k in ("x_min", "y_min", "x_max", "y_max"))
        assert info["bbox_visib"] == [x0, y0, x1 - x0 - 1, y1 - y0 - 1]  # calc_2d_bbox's w, h
        assert not (visib & ~whole).any()  # the whole silhouette holds the visible part
        depth = cv2.imdecode(np.frombuffer(z.read(row["depth_path"]), np.uint8), -1)
        assert info["px_count_valid"] == ((whole > 0) & (depth > 0)).sum()
        assert (whole > 0).sum() <= info["px_count_all"]
        assert info["visib_fract"] == pytest.approx(info["px_count_visib"] / info["px_count_all"])
        bx, by, bw, bh = info["bbox_obj"]
        ys, xs = np.nonzero(whole)
        assert bx <= xs.min() and xs.max() <= bx + bw and by <= ys.min() and ys.max() <= by + bh
        if obj["occlusion"] == 0 and obj["truncation"] == 0:  # nothing hides it: all is seen
            assert info["px_count_all"] <= info["px_count_visib"] * 1.1 + 2
        if obj["occlusion"] > 0.1 or obj["truncation"] > 0.1:  # hidden or cut: more than seen
            assert info["px_count_all"] > info["px_count_visib"]
        # the share of the silhouette outside the image is the table's truncation (which
        # projects a coarser silhouette mesh)
        outside = 1 - (whole > 0).sum() / info["px_count_all"]
        assert outside == pytest.approx(obj["truncation"], abs=0.05), obj["asset_id"]
        # and the share of its in-image silhouette that others hide is the table's occlusion
        # (which leaves out a one-pixel rim)
        hidden = 1 - info["px_count_visib"] / (whole > 0).sum()
        assert hidden == pytest.approx(obj["occlusion"], abs=0.1), obj["asset_id"]
        n_hidden += obj["occlusion"] > 0.1
        n_cut += obj["truncation"] > 0.1
    assert n_hidden and n_cut  # some falling objects are hidden, some leave the image


def test_valid_pixels_are_the_silhouettes_pixels_with_a_depth(tmp_path, tabletop_job):
    """Rendered objects have a depth everywhere; a depth image with a hole shows the count."""
    archive = tmp_path / "holed.zip"
    with zipfile.ZipFile(tabletop_job.archive) as z, zipfile.ZipFile(archive, "w") as holed:
        frames, _ = _tables(z)
        for name in z.namelist():
            data = z.read(name)
            if name == frames[0]["depth_path"]:
                depth = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                depth[:, : depth.shape[1] // 2] = 0
                data = cv2.imencode(".png", depth)[1].tobytes()
            holed.writestr(name, data)
    out = tmp_path / "out"
    export(out, [("train", archive)])
    infos = _json(out / "train" / "000000" / "scene_gt_info.json")
    n_cut = 0
    for gt_id, info in enumerate(infos[str(frames[0]["frame"])]):
        whole = _png(out / "train" / "000000" / "mask" / f"000000_{gt_id:06d}.png") > 0
        assert info["px_count_valid"] == whole[:, whole.shape[1] // 2 :].sum()
        n_cut += info["px_count_valid"] < whole.sum()
    assert n_cut


def test_images_are_the_archives_images(bop):
    seen = set()
    for folder, z, row, *_ in _walk(bop):
        if (folder, row["frame"]) in seen:
            continue
        seen.add((folder, row["frame"]))
        name = f"{row['frame']:06d}.png"
        depth = _png(folder / "depth" / name)
        stored = cv2.imdecode(np.frombuffer(z.read(row["depth_path"]), np.uint8), -1)
        assert depth.dtype == np.uint16 and np.array_equal(depth, stored) and depth.any()
        assert (folder / "rgb" / name).read_bytes() == z.read(row["rgb_path"])
    assert len(seen) == 5


def _ply_vertices(path: Path) -> np.ndarray:
    """The vertices of an ASCII PLY, read here (not with the library that wrote it)."""
    lines = path.read_text().splitlines()
    assert lines[:2] == ["ply", "format ascii 1.0"]
    count = next(int(n.split()[-1]) for n in lines if n.startswith("element vertex"))
    start = lines.index("end_header") + 1
    return np.array([[float(v) for v in n.split()[:3]] for n in lines[start : start + count]])


def test_the_ply_projected_with_the_pose_lands_on_the_object(bop):
    out = bop[0]
    models = {p.stem: _ply_vertices(p) for p in (out / "models").glob("obj_*.ply")}
    for folder, _, row, gt_id, obj, gt, info, camera in _walk(bop):
        vertices = models[f"obj_{gt['obj_id']:06d}"]
        k = np.reshape(camera["cam_K"], (3, 3))
        cam = vertices @ np.reshape(gt["cam_R_m2c"], (3, 3)).T + gt["cam_t_m2c"]
        uvw = cam @ k.T
        uv = uvw[:, :2] / uvw[:, 2:]
        # bbox_obj: [x, y, w, h], w = last - first column: its pixels' edges are x and
        # x + w + 1; a silhouette's edge is within a pixel of its pixels' (pixel centres)
        bx, by, bw, bh = info["bbox_obj"]
        lo, hi = np.array([bx - 1, by - 1]), np.array([bx + bw + 2, by + bh + 2])
        assert ((uv >= lo) & (uv <= hi)).all(), obj["asset_id"]
        # every visible pixel lies in the hull of the projected model (a pixel's slack)
        hull = np.zeros((row["height"] + 2, row["width"] + 2), np.uint8)
        pts = cv2.convexHull(np.rint((uv + 1) * 16).astype(np.int32))
        cv2.fillConvexPoly(hull, pts, 1, shift=4)
        hull = cv2.dilate(hull, np.ones((3, 3), np.uint8))[1:-1, 1:-1]
        visib = _png(folder / "mask_visib" / f"{row['frame']:06d}_{gt_id:06d}.png") > 0
        assert (visib & (hull > 0)).sum() >= 0.98 * visib.sum(), obj["asset_id"]
        # the depth (mm, depth_scale 1) of its visible pixels is within the posed model's
        # nearest and farthest z (mm), give or take the millimetre the PNG rounds to
        depth = _png(folder / "depth" / f"{row['frame']:06d}.png")[visib] * camera["depth_scale"]
        assert cam[:, 2].min() - 1 <= depth.min() and depth.max() <= cam[:, 2].max() + 1
        if obj["occlusion"] == 0 and obj["truncation"] == 0:
            on = uv.astype(int)
            on = on[(on >= 0).all(1) & (on < [row["width"], row["height"]]).all(1)]
            dilated = cv2.dilate(visib.view(np.uint8), np.ones((3, 3), np.uint8))
            assert dilated[on[:, 1], on[:, 0]].mean() > 0.95, obj["asset_id"]


def test_objects_get_models_of_the_size_they_were_rendered_at(bop, falling_job):
    out, _, summary = bop
    catalog = default_catalog()
    position = {entry.asset_id: i + 1 for i, entry in enumerate(catalog)}
    models_info = _json(out / "models" / "models_info.json")
    falling = {o["asset_id"] for o in falling_job.objects.to_pylist()}
    scaled = 0
    for obj_id, entry in _json(out / "models" / "obj_ids.json").items():
        asset = catalog[entry["asset_id"]]
        assert entry["category"] == asset.category
        assert entry["category_id"] == catalog.category_ids()[asset.category]
        info = models_info[obj_id]
        size = np.array([info[f"size_{a}"] for a in "xyz"])
        low = np.array([info[f"min_{a}"] for a in "xyz"])
        assert np.allclose(low, -size / 2, atol=1e-3)  # centred on its box, as our objects
        assert size.max() - 1e-6 <= info["diameter"] <= np.linalg.norm(size) + 1e-6
        if entry["scale"] == [1.0, 1.0, 1.0]:  # the catalog's size: the asset's own id
            assert int(obj_id) == position[entry["asset_id"]]
            assert np.allclose(size, np.multiply(asset.dimensions, 1000), atol=1e-3)
        else:
            assert entry["scale"] == [SCALE] * 3 and entry["asset_id"] in falling
            assert int(obj_id) > len(catalog)
            assert np.allclose(size, np.multiply(asset.dimensions, 1000 * SCALE), atol=1e-3)
            scaled += 1
    assert scaled == len(falling)
    assert summary["visib_outside_model"] < 0.01  # the posed models cover what is seen


def test_options(tmp_path, tabletop_job):
    with pytest.raises(TypeError, match="'mask'"):
        BopWriter(_context(tmp_path / "a", ("train",)), mask=False)
    with pytest.raises(TypeError, match="masks"):
        BopWriter(_context(tmp_path / "b", ("train",)), masks="no")
    out = tmp_path / "c"
    summary = export(out, [("train", tabletop_job.archive)], masks=False)
    folder = out / "train" / "000000"
    assert not (folder / "mask").exists() and not (folder / "mask_visib").exists()
    assert (folder / "scene_gt_info.json").is_file() and summary["instances"] > 0
    assert _json(out / "camera.json")["width"] == 96  # one camera: camera.json written
    writer = BopWriter(_context(tmp_path / "d", ("train",)))
    with zipfile.ZipFile(tabletop_job.archive) as z:
        row = _tables(z)[0][0]
        frame = ExportFrame("train", row["job_id"], row["frame"], row, [], z)
        writer.add(frame)
        with pytest.raises(ValueError, match="given twice"):  # BOP has one image per frame
            writer.add(replace(frame, suffix="_a0"))


def test_fill_triangles_is_a_union_at_pixel_centres():
    square = np.array([[0.6, 0.6], [3.4, 0.6], [3.4, 3.4], [0.6, 3.4]])
    two = np.array([[0, 1, 2], [0, 2, 3]])
    filled = fill_triangles(square, two, 0, 0, 5, 5)
    assert filled.sum() == 4 and filled[1:3, 1:3].all()  # centres 1.5 and 2.5 only
    # the same square twice over (a mesh's front and back) is still the square
    both = fill_triangles(square, np.concatenate([two, two[:, ::-1]]), 0, 0, 5, 5)
    assert np.array_equal(both, filled)
    # a window moved by (1, 1) sees the same pixels moved
    assert np.array_equal(fill_triangles(square, two, 1, 1, 4, 4), filled[1:, 1:])


def test_export_batch_writes_a_bop_dataset_of_the_batch(tmp_path):
    from vario.export.run import export_batch

    spec = {
        "name": "bop",
        "generator": "tabletop",
        "seed": 2,
        "shard_size": 4,
        "fixed": {"resolution": 64, "n_frames": 2, "n_objects": 3, "n_distractors": 0},
        "jobs": [{"camera_azimuth": a} for a in (0, 120, 240)],
    }
    storage = build_batch(tmp_path, spec)
    out = tmp_path / "out"
    summary = export_batch(
        storage.store,
        "bop",
        "bop",
        out,
        split={"train": 0.5, "test": 0.5},
        where="category <> 'duck'",
    )
    frames = pq.read_table(storage.store.table_dir("frames", "bop")).to_pylist()
    objects = pq.read_table(storage.store.table_dir("objects", "bop")).to_pylist()
    kept = [o for o in objects if o["category"] != "duck"]
    scene_ids = _json(out / "scene_ids.json")
    jobs = sorted(j for ids in scene_ids.values() for j in ids.values())
    assert jobs == sorted({r["job_id"] for r in frames})  # every job once, a scene each
    assert summary.writer["instances"] == len(kept) == sum(summary.objects.values())
    obj_ids = _json(out / "models" / "obj_ids.json")
    assert {e["asset_id"] for e in obj_ids.values()} == {o["asset_id"] for o in kept}
    for split, ids in scene_ids.items():
        for scene_id, job_id in ids.items():
            folder = out / split / f"{int(scene_id):06d}"
            gts = _json(folder / "scene_gt.json")
            mine = [o for o in kept if o["job_id"] == job_id]
            assert sum(len(v) for v in gts.values()) == len(mine)
            assert len(list((folder / "mask_visib").iterdir())) == len(mine)
    assert summary.writer["visib_outside_model"] < 0.01
    assert "models/models_info.json" in (out / "checksums.sha256").read_text()
