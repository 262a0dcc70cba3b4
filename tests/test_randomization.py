"""Domain randomization (generators.randomize) through the ``clutter`` generator: each
randomizer changes exactly what it says, draws from its own stream, is recorded in the
tables and the job's description, and refuses bad ranges and folders before any work."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import build_batch
from PIL import Image
from pycocotools import mask as mask_utils
from pydantic import ValidationError

from generators.library.clutter import ClutterGenerator, ClutterParams
from generators.params import field_schemas
from generators.randomize.background import BackgroundParams
from generators.randomize.camera import CameraParams
from generators.randomize.distractors import DistractorParams
from generators.randomize.lights import LightParams
from generators.randomize.surfaces import MaterialParams, TextureParams
from vario.quality import checks as quality

SEED = 11
TINY = {"resolution": 64, "n_objects": 4, "flying_distractors_min": 3}
LABELS = ["instance_id", "category", "box_x_min", "box_y_min", "box_x_max", "box_y_max"]
LABELS += ["mask_rle", "x", "y", "z", "qw", "qx", "qy", "qz", "occlusion", "truncation"]


def _scene(**overrides):
    return ClutterGenerator().build_scene(ClutterParams(**{**TINY, **overrides}), SEED)


def _job(tmp_path, name, **overrides):
    """A rendered job: its tables and its first frame's RGB and instance images."""
    params = ClutterParams(**{**TINY, **overrides})
    result = ClutterGenerator().run(params, SEED, tmp_path / name)
    with zipfile.ZipFile(result.archive) as archive:
        rgb = np.asarray(Image.open(io.BytesIO(archive.read("rgb/00000.png"))))
        ids = np.asarray(Image.open(io.BytesIO(archive.read("segmentation/00000.png"))))
        description = json.loads(archive.read("job.json"))
    return result, rgb.astype(int), ids, description


def _labels(result) -> list[dict]:
    return result.objects.select(LABELS).to_pylist()


def test_every_randomizer_parameter_is_typed_ranged_and_described():
    schemas = field_schemas(ClutterParams)
    for model in (TextureParams, MaterialParams, LightParams, CameraParams, BackgroundParams):
        for name in model.model_fields:
            assert schemas[name].get("description"), name
    for name in ("light_count_min", "fov_max", "roughness_max", "flying_distractors_max"):
        assert "minimum" in schemas[name] and "maximum" in schemas[name], name
    assert set(schemas["background_kinds"]["items"]["enum"]) >= {"plain", "perlin", "image"}
    nuisance = set(ClutterGenerator.domain.nuisance)
    assert {"light_count_max", "background_kinds", "texture_kinds", "fov_min"} <= nuisance


def test_textures_change_object_pixels_not_masks_or_boxes(tmp_path):
    plain, plain_rgb, plain_ids, _ = _job(tmp_path, "plain", texture_share=0.0)
    drawn, drawn_rgb, drawn_ids, _ = _job(tmp_path, "drawn", texture_share=1.0)
    assert _labels(plain) == _labels(drawn)
    assert (plain_ids == drawn_ids).all()
    on_objects = plain_ids > 0
    assert on_objects.sum() > 50
    assert (plain_rgb[on_objects] != drawn_rgb[on_objects]).any(axis=-1).mean() > 0.3
    kinds = set(drawn.objects.column("texture_kind").to_pylist())
    assert kinds and kinds <= set(TextureParams().texture_kinds)


def test_background_changes_only_pixels_outside_every_object(tmp_path):
    plain, plain_rgb, plain_ids, _ = _job(tmp_path, "plain", background_kinds=["plain"])
    pattern, pattern_rgb, pattern_ids, _ = _job(tmp_path, "checker", background_kinds=["checker"])
    assert _labels(plain) == _labels(pattern)
    changed = (plain_rgb != pattern_rgb).any(axis=-1)
    assert changed.sum() > 100
    assert not (changed & (plain_ids > 0)).any()  # never a pixel of an object of interest
    assert plain.jobs.column("background_kind").to_pylist() == ["plain"]
    assert pattern.jobs.column("background_kind").to_pylist() == ["checker"]


def test_lights_change_brightness_and_nothing_in_the_labels(tmp_path):
    dim, dim_rgb, _, _ = _job(tmp_path, "dim", light_intensity_min=0.2, light_intensity_max=0.3)
    bright, bright_rgb, _, _ = _job(
        tmp_path, "bright", light_intensity_min=2.5, light_intensity_max=3.0
    )
    assert _labels(dim) == _labels(bright)
    assert bright_rgb.mean() > dim_rgb.mean() + 5
    assert dim.jobs.column("light_count")[0].as_py() >= 1


def _agree(a, b) -> bool:
    """Two records of one randomizer agree on what both drew: per object (a dict by name)
    or per light or distractor (a list, the first ones drawn the same whatever the count)."""
    if isinstance(a, dict) and isinstance(b, dict) and "kind" not in a:
        return all(a[k] == b[k] for k in a.keys() & b.keys())
    if isinstance(a, list) and isinstance(b, list):
        return a[: len(b)] == b[: len(a)]
    return a == b


def test_changing_one_range_leaves_poses_and_other_draws_alone():
    base = _scene()
    for change in ({"fov_min": 20.0, "fov_max": 25.0}, {"light_count_max": 8}, {
        "texture_scale_min": 30.0, "texture_scale_max": 40.0
    }, {"background_kinds": ["voronoi"]}, {"flying_distractors_max": 20}):  # fmt: skip
        other = _scene(**change)
        poses = [(o.position, o.quaternion) for o in base.objects if o.labelled]
        assert poses == [(o.position, o.quaternion) for o in other.objects if o.labelled]
        changed = {
            name
            for name in base.randomization.keys() | other.randomization.keys()
            if not _agree(base.randomization.get(name), other.randomization.get(name))
        }
        assert len(changed) <= 1, (change, changed)
    # adding distractors adds draws: the first ones stay as they were
    more = _scene(flying_distractors_min=6, flying_distractors_max=6)
    fewer = _scene(flying_distractors_min=3, flying_distractors_max=3)
    assert more.randomization["distractors"][:3] == fewer.randomization["distractors"]


def test_same_seed_same_images_and_draws_recorded(tmp_path):
    first, first_rgb, _, description = _job(tmp_path, "a")
    again, again_rgb, _, _ = _job(tmp_path, "b")
    assert (first_rgb == again_rgb).all()
    assert description["scene"]["randomization"].keys() >= {
        "camera", "lights", "background", "textures", "materials", "distractors"
    }  # fmt: skip
    recorded = json.loads(first.jobs.column("randomization")[0].as_py())
    assert recorded == description["scene"]["randomization"]
    row = first.objects.to_pylist()[0]
    assert row["color"].startswith("#") and 0 <= row["hue"] <= 360
    assert 0 <= row["roughness"] <= 1
    # the fast renderer says what it could not draw
    notes = description["renderer_notes"]
    assert any("roughness" in n for n in notes)
    assert isinstance(first.jobs, pa.Table)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"light_count_min": 4, "light_count_max": 2}, "light_count_min"),
        ({"fov_min": 60, "fov_max": 40}, "fov_min"),
        ({"flying_distractors_max": 51}, "flying_distractors_max"),
        ({"texture_kinds": ["image"]}, "texture_folder"),
        ({"background_kinds": ["bricks"]}, "background_kinds"),
    ],
)
def test_bad_ranges_are_parameter_errors(overrides, field):
    with pytest.raises(ValidationError) as error:
        ClutterParams(**{**TINY, **overrides})
    assert field in str(error.value)


def test_a_folder_must_hold_readable_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValidationError, match="background_folder"):
        ClutterParams(background_kinds=["image"], background_folder=str(empty))
    with pytest.raises(ValidationError, match="texture_folder"):
        ClutterParams(texture_kinds=["image"], texture_folder=str(tmp_path / "missing"))
    good = tmp_path / "good"
    good.mkdir()
    Image.fromarray(np.full((40, 60, 3), (200, 30, 30), np.uint8)).save(good / "red.png")
    params = ClutterParams(**TINY, background_kinds=["image"], background_folder=str(good))
    scene = ClutterGenerator().build_scene(params, SEED)
    assert scene.randomization["background"]["kind"] == "image"
    assert scene.background_image is not None


def test_cycles_draws_the_randomized_scene_with_the_fast_renderers_masks(tmp_path):
    """One tiny Cycles render: point and area lights, materials and the backdrop image in
    Blender, and per-object masks that agree with the fast renderer's (IoU >= 0.9)."""
    params = {**TINY, "resolution": 96, "light_kinds": ["point", "area"], "samples": 4}
    params |= {"principal_jitter": 0.1, "roll_max": 45.0}  # the lens shifted and rolled
    jobs = {}
    for renderer in ("cycles", "tiny"):
        result = ClutterGenerator().run(ClutterParams(**params, renderer=renderer), SEED, tmp_path)
        assert result.status == "ok", result.error
        with zipfile.ZipFile(result.archive) as archive:
            backend = json.loads(archive.read("job.json"))["render_backend"]
        assert backend.startswith("cycles" if renderer == "cycles" else "pybullet")
        jobs[renderer] = {r["instance_id"]: r for r in result.objects.to_pylist()}
    final, preview = jobs["cycles"], jobs["tiny"]
    assert final.keys() == preview.keys()
    checked = 0
    for instance, row in preview.items():
        size = [96, 96]
        a = mask_utils.decode({"size": size, "counts": row["mask_rle"]})
        b = mask_utils.decode({"size": size, "counts": final[instance]["mask_rle"]})
        iou = (a & b).sum() / max((a | b).sum(), 1)
        assert iou >= 0.9 or row["visible_pixels"] < 40, (instance, iou)
        checked += row["visible_pixels"] >= 40
    assert checked >= 2


def test_a_background_tied_to_the_category_fails_bias_naming_the_pair(tmp_path):
    """The bias hold: each category shown only in front of its own background kind."""
    jobs = [
        {"categories": [category], "background_kinds": [kind], "n_objects": 2}
        for category, kind in (("duck", "checker"), ("mug", "perlin"), ("torus", "plain"))
        for _ in range(6)
    ]
    spec = {
        "name": "tied",
        "generator": "clutter",
        "seed": 5,
        "shard_size": 18,
        "fixed": {"resolution": 64, "flying_distractors_max": 0},
        "jobs": jobs,
    }
    storage = build_batch(tmp_path, spec)
    results = {r.name: r for r in quality.run_checks(storage.store, "tied")}
    bias = results["bias"]
    assert not bias.passed and bias.severity == "ERROR"
    assert "background_kind predicts category: Cramér's V" in bias.message
    pair = next(p for p in bias.metadata["pairs"] if p["nuisance"] == "background_kind")
    assert pair["target"] == "category" and pair["cramers_v"] > 0.8


def test_a_sobol_batch_over_randomizers_reports_their_coverage(tmp_path):
    spec = {
        "name": "randomized",
        "generator": "clutter",
        "seed": 9,
        "shard_size": 16,
        "fixed": {"resolution": 64, "n_objects": 3, "flying_distractors_max": 2},
        "sampler": {
            "kind": "sobol",
            "count": 16,
            "ranges": {  # each over its whole declared range
                "texture_share": [0.0, 1.0],
                "look_jitter": [0.0, 0.1],
                "roll_max": [0.0, 180.0],
                "background_saturation_max": [0.0, 1.0],
            },
        },
    }
    storage = build_batch(tmp_path, spec)
    coverage = {r.name: r for r in quality.run_checks(storage.store, "randomized")}["coverage"]
    for dimension in ("texture_share", "look_jitter", "roll_max", "background_saturation_max"):
        assert sum(coverage.metadata[dimension]) == 16, dimension
    assert set(coverage.metadata["background_kind"]) >= {"plain", "checker"}
    assert sum(coverage.metadata["light_count"].values()) == 16
    assert coverage.metadata["discrepancy"]["ratio"] < 1.0


def test_the_randomized_template_runs_with_vario_batch_run_and_tests_its_dimensions(tmp_path):
    env = {
        **os.environ,
        "VARIO_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "VARIO_CACHE_DIR": str(tmp_path / "cache"),
    }
    spec = Path(__file__).resolve().parents[1] / "batch_templates" / "randomized.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", "batch", "run", str(spec), "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = json.loads((tmp_path / "data" / "batches" / "randomized" / "tests.json").read_text())
    coverage = next(r for r in recorded["results"] if r["name"] == "coverage")
    assert coverage["passed"], coverage["message"]
    for dimension in ("texture_share", "look_jitter", "roll_max", "background_saturation_max"):
        assert sum(coverage["metadata"][dimension]) == 16
    assert len(coverage["metadata"]["background_kind"]) >= 3
    bias = next(r for r in recorded["results"] if r["name"] == "bias")
    tested = {p["nuisance"] for p in bias["metadata"]["pairs"]}
    assert {"background_kind", "light_count", "texture_share"} <= tested
    report = (tmp_path / "data" / "reports" / "randomized" / "report.html").read_text()
    assert "Frames across the randomization space" in report


@pytest.mark.parametrize("generator", ["tabletop", "falling_objects"])
def test_the_built_in_generators_take_drawn_textures_and_flying_distractors(generator):
    """Off by default (their scenes as before); asked for, the same randomizers as clutter's,
    and flying distractors never touch the simulation."""
    from generators.contract.registry import get
    from generators.scene.catalog import default_catalog
    from generators.sim.physics import simulate

    gen = get(generator)
    small = {"resolution": 64, "n_frames": 1}
    plain = gen.build_scene(gen.Params(**small), SEED)
    assert plain.randomization == {"distractors": [], "textures": {}}
    assert not any(o.name.startswith("flying_distractor") for o in plain.objects)
    asked = {"texture_share": 1.0, "flying_distractors_min": 3, "flying_distractors_max": 5}
    drawn = gen.build_scene(gen.Params(**small, **asked), SEED)
    flying = [o for o in drawn.objects if o.name.startswith("flying_distractor")]
    assert len(flying) >= 3 and not any(o.collides for o in flying)
    assert {o.material.texture_kind for o in drawn.labelled_objects} <= set(
        TextureParams().texture_kinds
    )
    poses = [(o.position, o.quaternion) for o in plain.labelled_objects]
    assert poses == [(o.position, o.quaternion) for o in drawn.labelled_objects]
    catalog = default_catalog()
    moved = simulate(plain, catalog).positions[:, : len(plain.objects)]
    again = simulate(drawn, catalog).positions[:, : len(plain.objects)]
    assert np.allclose(moved, again)  # the objects fall exactly as without the distractors


def test_object_centres_project_into_their_boxes_through_the_jittered_principal_point(tmp_path):
    """The intrinsics in ``frames`` are the ones the image was drawn with: each visible
    object's centre projects (docs/conventions.md) into its box, with the principal point
    moved well off the centre and the camera rolled."""
    params = ClutterParams(**{**TINY, "resolution": 128}, principal_jitter=0.1, roll_max=90.0)
    result = ClutterGenerator().run(params, SEED, tmp_path)
    frame = result.frames.to_pylist()[0]
    assert abs(frame["cx"] - 64) > 0.5 or abs(frame["cy"] - 64) > 0.5
    from scipy.spatial.transform import Rotation

    to_world = Rotation.from_quat(
        [frame["cam_qw"], frame["cam_qx"], frame["cam_qy"], frame["cam_qz"]], scalar_first=True
    )
    checked = 0
    for o in result.objects.to_pylist():
        if o["occlusion"] > 0.3 or o["truncation"] > 0:
            continue
        x, y, z = to_world.inv().apply(np.subtract([o["x"], o["y"], o["z"]], [
            frame["cam_x"], frame["cam_y"], frame["cam_z"]
        ]))  # fmt: skip
        u, v = frame["fx"] * x / z + frame["cx"], frame["fy"] * y / z + frame["cy"]
        assert o["box_x_min"] - 1 <= u <= o["box_x_max"] + 1, o["category"]
        assert o["box_y_min"] - 1 <= v <= o["box_y_max"] + 1, o["category"]
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("generator", ["tabletop", "falling_objects", "clutter"])
def test_random_parameters_are_valid_with_every_range_in_order(generator):
    """What the API's ``sample`` draws over a generator's domain: the two ends of a range
    (``*_min``, ``*_max``) drawn apart come back in order, so every draw validates."""
    from generators.contract.registry import get
    from vario.batch.samplers import random_params

    gen = get(generator)
    for seed in range(20):
        gen.Params(**random_params(field_schemas(gen.Params), gen.domain, seed))


def test_generators_show_lists_every_randomizer_parameter():
    """``vario generators show clutter``: each randomizer's parameters, as nuisance, with
    their types, ranges and descriptions."""
    from click.testing import CliRunner

    from dagster_project.cli import main
    from generators.params import describe

    result = CliRunner().invoke(main, ["generators", "show", "clutter"])
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 6:
            rows[cells[0]] = cells
    randomizers = (TextureParams, MaterialParams, LightParams, CameraParams, BackgroundParams)
    documented = {d.name: d for d in describe(ClutterParams)}
    for model in (*randomizers, DistractorParams):
        for name in model.model_fields:
            _, role, kind, _, allowed, description = rows[name]
            doc = documented[name]
            assert role == "nuisance"
            assert (kind, allowed, description) == (doc.type, doc.allowed, doc.description)
