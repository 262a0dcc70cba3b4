"""Labels are right: boxes, masks, pixel counts, occlusion, truncation, depth, determinism."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pyarrow as pa
import pytest
from conftest import SMALL, cube, read_member, render_still, top_down_scene
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from generators.labels import archive as arc
from generators.library.tabletop import TabletopGenerator
from generators.scene.catalog import default_catalog
from generators.scene.geometry import rotation, world_to_camera

TIMING = [c for c in ("simulate", "render", "label", "write", "total")]


def _decode(rle: str, height: int, width: int) -> np.ndarray:
    return mask_utils.decode({"size": [height, width], "counts": rle.encode()}).astype(bool)


def test_same_parameters_and_seed_give_identical_tables(tabletop_job, tmp_path):
    gen = TabletopGenerator()
    again = gen.run(gen.Params(**SMALL, start_time=0.1), 11, tmp_path)
    assert again.job_id == tabletop_job.job_id
    assert again.frames.equals(tabletop_job.frames)
    assert again.objects.equals(tabletop_job.objects)
    timing = [f"{t}_seconds" for t in TIMING]
    assert again.jobs.drop(timing).equals(tabletop_job.jobs.drop(timing))
    for table in ("frames", "objects"):
        member = f"labels/{table}.parquet"
        assert read_member(again.archive, member) == read_member(tabletop_job.archive, member)


def test_a_different_seed_gives_a_different_job(tabletop_job, tmp_path):
    gen = TabletopGenerator()
    other = gen.run(gen.Params(**SMALL, start_time=0.1), 12, tmp_path)
    assert other.job_id != tabletop_job.job_id
    assert not other.objects.equals(tabletop_job.objects)


def test_boxes_are_tight_boxes_of_masks_and_pixels_are_mask_areas(tabletop_job):
    frames = {f["frame"]: f for f in tabletop_job.frames.to_pylist()}
    objects = tabletop_job.objects.to_pylist()
    assert len(objects) >= SMALL["n_frames"] * 3
    for o in objects:
        f = frames[o["frame"]]
        mask = _decode(o["mask_rle"], f["height"], f["width"])
        ys, xs = np.nonzero(mask)
        assert (o["box_x_min"], o["box_y_min"]) == (xs.min(), ys.min())
        assert (o["box_x_max"], o["box_y_max"]) == (xs.max() + 1, ys.max() + 1)
        assert o["visible_pixels"] == mask.sum() > 0


def test_masks_match_the_archived_segmentation(tabletop_job):
    import cv2

    for f in tabletop_job.frames.to_pylist():
        png = read_member(tabletop_job.archive, f["segmentation_path"])
        seg = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert seg.dtype == np.uint16
        rows = [o for o in tabletop_job.objects.to_pylist() if o["frame"] == f["frame"]]
        assert sorted(o["instance_id"] for o in rows) == sorted(set(np.unique(seg)) - {0})
        assert f["n_objects"] == len(rows)
        for o in rows:
            assert np.array_equal(seg == o["instance_id"], _decode(o["mask_rle"], *seg.shape))


def test_occlusion_is_zero_alone_and_grows_with_an_occluder_in_front():
    target = cube("target", (0.0, 0.0, 0.0))
    alone = render_still(top_down_scene([target])).objects
    assert len(alone) == 1 and alone[0]["occlusion"] == 0.0

    shares = []
    for offset in (0.02, 0.01, 0.0):  # a smaller occluder slides over the target's centre
        occluder = cube("occluder", (offset, 0.0, 0.3), size=0.5)
        # at 192 px a 1 cm step moves the occluder by 3 px, well beyond a pixel's rounding
        rows = render_still(top_down_scene([target, occluder], size=192)).objects
        back = next(o for o in rows if o["instance_id"] == 1)
        front = next(o for o in rows if o["instance_id"] == 2)
        assert front["occlusion"] == 0.0
        shares.append(back["occlusion"])
    assert 0.0 < shares[0] < shares[1] < shares[2]
    assert shares[2] > 0.3


def test_an_object_beside_another_is_not_occluded_by_it():
    rows = render_still(
        top_down_scene([cube("a", (-0.06, 0.0, 0.0)), cube("b", (0.0, 0.0, 0.0))])
    ).objects
    assert [o["occlusion"] for o in rows] == [0.0, 0.0]


def test_truncation_is_zero_inside_and_grows_across_the_border():
    # the top-down view (30 deg) spans +-0.261 m at the cubes' top faces
    inside = render_still(top_down_scene([cube("c", (0.0, 0.0, 0.0))])).objects[0]
    assert inside["truncation"] == 0.0
    shares = []
    for x in (0.25, 0.27):
        rows = render_still(top_down_scene([cube("c", (x, 0.0, 0.0))])).objects
        shares.append(rows[0]["truncation"])
    assert 0.0 < shares[0] < shares[1] < 1.0


def test_depth_at_an_object_agrees_with_its_distance_to_the_camera():
    sphere = cube("s", (0.02, -0.03, 0.1)).model_copy(
        update={"asset_id": "sphere", "category": "sphere"}
    )
    rendered = render_still(top_down_scene([sphere], size=128))
    cam = rendered.scene.camera
    center = world_to_camera(
        np.array([sphere.position]), cam.position, rotation(cam.quaternion).as_matrix()
    )[0]
    mask = rendered.images.instances == 1
    depth = rendered.images.depth[mask]
    radius = default_catalog()["sphere"].dimensions[2] / 2  # held to its URDF elsewhere
    assert depth.min() == pytest.approx(center[2] - radius, abs=0.004)
    assert depth.max() <= center[2] + 1e-3
    assert np.isinf(rendered.images.depth[~mask]).all()  # nothing else in the scene


def test_archived_depth_is_millimetres_along_the_optical_axis(tabletop_job):
    import cv2

    f = tabletop_job.frames.to_pylist()[0]
    png = read_member(tabletop_job.archive, f["depth_path"])
    depth_mm = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert depth_mm.dtype == np.uint16
    valid = depth_mm[depth_mm > 0] / 1000.0
    cam_z = f["cam_z"]
    # the camera looks down at a table at z = 0 from cam_z metres up, through the table centre
    assert f["near"] < valid.min() and valid.max() < f["far"]
    assert valid.min() < np.linalg.norm([f["cam_x"], f["cam_y"], cam_z]) < valid.max() * 1.5


def test_box3d_is_centred_on_the_object_position(tabletop_job):
    for o in tabletop_job.objects.to_pylist():
        corners = np.array(o["box3d"])
        assert corners.shape == (8, 3)
        assert np.allclose(corners.mean(axis=0), [o["x"], o["y"], o["z"]], atol=1e-9)
        assert np.linalg.norm([o["qw"], o["qx"], o["qy"], o["qz"]]) == pytest.approx(1.0)


def test_coco_json_loads_in_pycocotools_and_areas_match(tabletop_job, tmp_path):
    path = tmp_path / "coco.json"
    path.write_bytes(read_member(tabletop_job.archive, "labels/coco.json"))
    coco = COCO(str(path))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == tabletop_job.objects.num_rows
    for ann, row in zip(anns, tabletop_job.objects.to_pylist(), strict=True):
        assert coco.annToMask(ann).sum() == ann["area"] == row["visible_pixels"]
        assert ann["bbox"] == list(mask_utils.toBbox(ann["segmentation"]))
        assert coco.cats[ann["category_id"]]["name"] == row["category"]


def test_archive_holds_every_part(tabletop_job):
    import zipfile

    import av

    with zipfile.ZipFile(tabletop_job.archive) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("job.json"))
        video = z.read("video.mp4")
    for kind in ("rgb", "segmentation", "depth"):
        assert {f"{kind}/{i:05d}.png" for i in range(SMALL["n_frames"])} <= names
    for table in ("jobs", "frames", "objects"):
        assert f"labels/{table}.parquet" in names
    assert manifest["params"]["n_objects"] == SMALL["n_objects"]
    assert manifest["seed"] == 11 and manifest["generator"] == "tabletop"
    assert set(manifest["timing"]) >= {"simulate_seconds", "render_seconds", "write_seconds"}
    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == SMALL["n_frames"]
    assert frames[0].shape == (SMALL["resolution"], SMALL["resolution"], 3)


def test_jobs_table_has_a_typed_column_per_parameter(tabletop_job):
    jobs = arc.read_tables(tabletop_job.archive)["jobs"]
    row = jobs.to_pylist()[0]
    params = TabletopGenerator.Params(**SMALL, start_time=0.1)
    for name, value in params.model_dump(mode="json").items():
        assert row[f"param_{name}"] == value
    assert str(jobs.schema.field("param_n_objects").type) == "int64"
    categories = jobs.schema.field("param_categories").type
    assert pa.types.is_list(categories) and categories.value_type == pa.string()
    assert row["status"] == "ok" and row["archive"] == tabletop_job.archive.name
    assert json.loads(row["params_json"]) == params.model_dump(mode="json")


def test_a_non_convex_silhouette_is_the_union_of_its_faces():
    """Overlapping faces (a mesh's front over its back) fill once, never cancel out: each
    pixel whose centre lies inside any face is in the silhouette."""
    from generators.labels.frame_labels import _rasterise

    uv = np.array([[2.0, 2.0], [30.0, 3.0], [4.0, 28.0], [29.0, 29.0], [16.0, 1.0]])
    faces = np.array([[0, 1, 2], [1, 3, 2], [0, 4, 3], [4, 1, 3]])  # folded over each other
    got = _rasterise(uv, faces, False, (0, 0), (32, 32))
    ys, xs = np.mgrid[0:32, 0:32] + 0.5
    inside = np.zeros((32, 32), bool)
    for a, b, c in uv[faces]:
        d = [
            (q[0] - p[0]) * (ys - p[1]) - (q[1] - p[1]) * (xs - p[0])
            for p, q in ((a, b), (b, c), (c, a))
        ]
        inside |= (np.all([x >= 0 for x in d], 0)) | (np.all([x <= 0 for x in d], 0))
    assert not (inside & ~got).any()  # no pixel inside a face is left out (no holes)
    near = cv2.dilate(inside.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
    assert not (got & ~near).any()  # cv2 also fills the pixels its edges cross, no more
