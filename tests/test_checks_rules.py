"""Dataset tests on small hand-made batches, without rendering: a planned spec, label tables
written straight to Parquet in Vario's layout and archives of tiny images. Each case fixes
what the tables hold, so every figure and message a check gives is known beforehand."""

from __future__ import annotations

import itertools
import json
import math
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import duckdb
import numpy as np
import pyarrow as pa
import pytest
import yaml
from pycocotools import mask as mask_utils
from scipy.stats import chi2, chi2_contingency, qmc

from generators.labels import archive as arc
from generators.labels import tables
from generators.library.tabletop import TabletopParams
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.quality import checks as quality
from vario.store.layout import DataStore

H, W = 24, 40  # frames wider than tall: a mask read at the swapped size lands elsewhere
FIXED = {"resolution": 64, "n_distractors": 0}
TEXTURES = ["wood", "checker", "grid", "uv", "plain"]  # table_texture's declared levels


def obj(category="duck", box=(2, 2, 8, 6), *, mask=None, segment=None, pixels=None, **labels):
    """An object of a frame: its stated box (x_min, y_min, x_max, y_max, max exclusive), the
    rectangle its mask covers and the one the segmentation gives it (both default to the
    box), its stated pixel count (default: the mask's area) and other ``objects`` columns."""
    mask = mask or box
    return {
        "category": category,
        "box": box,
        "mask": mask,
        "segment": segment or mask,
        "pixels": pixels,
        "labels": {"occlusion": 0.0, "truncation": 0.0, **labels},
    }


TWO = (obj("duck", (2, 2, 8, 6)), obj("cube", (12, 4, 20, 14)))


def frame(objects=TWO, *, size=(H, W), n_objects=None, image_hash=0, depth=1.0, **extra):
    """A frame: its objects, size (height, width), ``n_objects`` (default: its objects),
    perceptual hash, depth (metres, a number or an image), clip planes (``near``, ``far``),
    and optionally ``rgb`` (an image or raw bytes), ``dense`` maps and ``extra_ids`` (ids
    in the segmentation that no object row has)."""
    return {
        "objects": objects,
        "size": size,
        "n_objects": len(objects) if n_objects is None else n_objects,
        "image_hash": image_hash,
        "depth": depth,
        "near": 0.1,
        "far": 10.0,
        **extra,
    }


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _rect(h: int, w: int, box) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8, order="F")
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    return mask


def build(root, name, jobs=None, *, sampler=None, scenes=None, failed=(), missing=(), hashes=True):
    """A batch in the store at ``root``: planned from ``jobs`` (or ``sampler``) like any
    batch, with a jobs row per job (``failed`` ones failed), ``scenes[i]`` as job i's frames
    (default: one frame of two objects) and an archive per rendered job (not for
    ``missing``). Returns the store and the job ids in manifest order."""
    spec = {"name": name, "generator": "tabletop", "seed": 1, "shard_size": 1000, "fixed": FIXED}
    spec.update({"sampler": sampler} if sampler else {"jobs": jobs})
    store = DataStore(root)
    batch = plan(BatchSpec.model_validate(spec))
    store.save_plan(batch)
    ids = batch.manifest.column("job_id").to_pylist()
    texts = batch.manifest.column("params_json").to_pylist()
    scenes = scenes or [[frame()] for _ in ids]
    job_rows, frame_rows, object_rows = [], [], []
    store.archive_dir(name).mkdir(parents=True, exist_ok=True)
    for i, (job_id, text, frames) in enumerate(zip(ids, texts, scenes, strict=True)):
        status = "failed" if i in failed else "ok"
        common = {"batch_id": name, "job_id": job_id}
        job_rows.append(
            tables.jobs_row(
                TabletopParams.model_validate_json(text),
                **common,
                generator="tabletop",
                generator_version="1.1.0",
                seed=0,
                status=status,
            )
        )
        members = {}
        for k, f in enumerate(frames):
            (h, w), paths = f["size"], {n: f"{n}/{k:05d}.png" for n in ("rgb", "seg", "depth")}
            frame_rows.append(
                {
                    **common,
                    "frame": k,
                    "height": h,
                    "width": w,
                    "near": f["near"],
                    "far": f["far"],
                    "n_objects": f["n_objects"],
                    "image_hash": f["image_hash"],
                    "rgb_path": paths["rgb"],
                    "segmentation_path": paths["seg"],
                    "depth_path": paths["depth"],
                }
            )
            seg = np.zeros((h, w), np.uint16)
            for instance, o in enumerate(f["objects"], start=1):
                x0, y0, x1, y1 = o["segment"]
                seg[y0:y1, x0:x1] = instance
                mask = _rect(h, w, o["mask"])
                object_rows.append(
                    {
                        **common,
                        "frame": k,
                        "instance_id": instance,
                        "category": o["category"],
                        **dict(
                            zip(
                                ("box_x_min", "box_y_min", "box_x_max", "box_y_max"),
                                o["box"],
                                strict=True,
                            )
                        ),
                        "visible_pixels": int(mask.sum()) if o["pixels"] is None else o["pixels"],
                        "mask_rle": mask_utils.encode(mask)["counts"].decode(),
                        **o["labels"],
                    }
                )
            for extra in f.get("extra_ids", ()):
                seg[h - 1, w - 1] = extra
            rgb = f.get("rgb")
            if rgb is None:
                rgb = np.random.default_rng(k).integers(0, 256, (h, w, 3), np.uint8)
            depth = np.broadcast_to(np.asarray(f["depth"], float), (h, w))
            members[paths["rgb"]] = rgb if isinstance(rgb, bytes) else _png(rgb)
            members[paths["seg"]] = _png(seg)
            members[paths["depth"]] = _png(np.round(depth * 1000).astype(np.uint16))
            for folder, values in f.get("dense", {}).items():
                members[f"{folder}/{k:05d}.png"] = _png(values)
        if status == "ok" and i not in missing:
            with zipfile.ZipFile(store.archive_dir(name) / f"{job_id}.zip", "w") as z:
                for member, data in members.items():
                    z.writestr(member, data)
    frames_schema = tables.FRAMES
    if not hashes:
        frames_schema = frames_schema.remove(frames_schema.get_field_index("image_hash"))
    for table, rows, schema in (
        ("jobs", job_rows, tables.jobs_schema(TabletopParams)),
        ("frames", frame_rows, frames_schema),
        ("objects", object_rows, tables.OBJECTS),
    ):
        data = arc.parquet_bytes(pa.Table.from_pylist(rows, schema))
        arc.write_atomic(store.table_path(table, name, f"{name}~00000"), data)
    return store, ids


def check(store, batch, name, **thresholds) -> quality.CheckResult:
    """One check of the batch, with the given thresholds for its section."""
    tests = quality.DatasetTests(**{name: thresholds})
    return quality.CHECKS[name](quality._load(store, batch, tests), getattr(tests, name))


def scaled(values, lo, hi) -> np.ndarray:
    return (np.asarray(values, float) - lo) / (hi - lo)


def iid(n: int, d: int) -> float:
    """The docstring's expected squared centred discrepancy of n iid uniform points."""
    return ((5 / 4) ** d - (13 / 12) ** d) / n


# coverage


def test_coverage_counts_jobs_per_bin_over_the_declared_range(tmp_path):
    azimuths = [10, 100, 190, 280, 350]
    store, _ = build(tmp_path, "cov", [{"light_azimuth": a} for a in azimuths])
    result = check(store, "cov", "coverage")
    assert (result.name, result.passed, result.severity) == ("coverage", True, "ERROR")
    assert result.message == "1 parameters cover their ranges"
    assert result.metadata["light_azimuth"] == [1, 1, 1, 2]
    realised = qmc.discrepancy(scaled(azimuths, 0, 360)[:, None], method="CD")
    assert result.metadata["discrepancy"] == pytest.approx(
        {"realised": realised, "iid_uniform": iid(5, 1), "ratio": realised / iid(5, 1)}
    )
    halves = check(store, "cov", "coverage", bins=2, min_bin_count=3, severity="WARN")
    assert not halves.passed and halves.severity == "WARN"
    assert halves.message == (
        "light_azimuth: 1 of 2 bins over its range [0, 360] have fewer than 3 jobs (counts [2, 3])"
    )


def test_coverage_fails_a_squeezed_parameter_and_its_discrepancy(tmp_path):
    azimuths = [10, 20, 30, 40, 50]
    store, _ = build(tmp_path, "sq", [{"light_azimuth": a} for a in azimuths])
    result = check(store, "sq", "coverage")
    realised = qmc.discrepancy(scaled(azimuths, 0, 360)[:, None], method="CD")
    ratio = realised / iid(5, 1)
    assert ratio > 2
    assert not result.passed
    assert result.message == (
        "light_azimuth: 3 of 4 bins over its range [0, 360] have fewer than 1 jobs "
        f"(counts [5, 0, 0, 0]); centred discrepancy {realised:.4g} is {ratio:.1f}x that of "
        "iid uniform sampling (limit 2.0); worst: light_azimuth"
    )
    at_limit = check(store, "sq", "coverage", max_discrepancy_ratio=ratio)  # not above it
    assert at_limit.message.endswith("(counts [5, 0, 0, 0])")


def test_coverage_names_the_worst_of_several_parameters(tmp_path):
    jobs = [
        {"light_azimuth": a, "camera_azimuth": c}
        for a, c in zip([10, 100, 190, 280, 350], [0, 5, 10, 15, 360], strict=True)
    ]
    store, _ = build(tmp_path, "worst", jobs)
    result = check(store, "worst", "coverage", max_discrepancy_ratio=0.01)
    points = np.column_stack(
        [scaled([j[p] for j in jobs], 0, 360) for p in ("camera_azimuth", "light_azimuth")]
    )
    realised = qmc.discrepancy(points, method="CD")
    assert result.metadata["discrepancy"]["realised"] == pytest.approx(realised)
    assert result.metadata["discrepancy"]["iid_uniform"] == pytest.approx(iid(5, 2))
    assert result.metadata["camera_azimuth"] == [4, 0, 0, 1]
    assert result.message == (
        "camera_azimuth: 2 of 4 bins over its range [0, 360] have fewer than 1 jobs "
        f"(counts [4, 0, 0, 1]); centred discrepancy {realised:.4g} is "
        f"{realised / iid(5, 2):.1f}x that of iid uniform sampling (limit 0.01); "
        "worst: camera_azimuth"
    )


def test_coverage_of_levels_and_of_a_parameter_named_in_the_tests(tmp_path):
    textures = ["wood", "wood", "grid", "plain"]
    shadows = [True, False, True, True]
    jobs = [
        {"table_texture": t, "shadows": s, "resolution": r}
        for t, s, r in zip(textures, shadows, [64, 64, 1024, 1024], strict=True)
    ]
    store, _ = build(tmp_path, "lv", jobs)
    result = check(store, "lv", "coverage")  # varied domain parameters: not resolution
    assert result.metadata == {
        "shadows": {"False": 1, "True": 3},
        "table_texture": {"wood": 2, "checker": 0, "grid": 1, "uv": 0, "plain": 1},
    }
    assert result.message == "table_texture: levels ['checker', 'uv'] have fewer than 1 jobs"
    named = check(store, "lv", "coverage", parameters=["resolution", "shadows"])
    assert named.metadata["resolution"] == [2, 0, 0, 2]
    assert named.message.startswith(
        "resolution: 2 of 4 bins over its range [64, 1024] have fewer than 1 jobs"
    )
    listed = check(store, "lv", "coverage", parameters=["categories", "shadows"])
    assert listed.message == "categories: a factor with 0 level(s) cannot be covered"
    assert not listed.passed and listed.metadata == {"shadows": {"False": 1, "True": 3}}


def test_coverage_of_a_single_job_and_of_a_batch_that_varies_nothing(tmp_path):
    store, _ = build(tmp_path, "one", [{"light_azimuth": 30}])
    single = check(store, "one", "coverage")
    assert single.metadata == {"light_azimuth": [1, 0, 0, 0]}  # no discrepancy of one point
    build(tmp_path, "two", [{"light_azimuth": 30}, {"light_azimuth": 300}])
    assert "discrepancy" in check(store, "two", "coverage").metadata
    build(tmp_path, "flat", [{"resolution": 64}, {"resolution": 128}])
    flat = check(store, "flat", "coverage")
    assert not flat.passed
    assert flat.message == "the batch varies no domain parameter: nothing to cover"


def test_coverage_counts_only_the_batchs_rendered_jobs(tmp_path):
    store, _ = build(
        tmp_path, "part", [{"light_azimuth": a} for a in (10, 100, 190, 280)], failed=[2]
    )
    build(tmp_path, "other", [{"light_azimuth": a} for a in (10, 10, 10)])
    assert check(store, "part", "coverage").metadata["light_azimuth"] == [1, 1, 0, 1]


def test_coverage_scales_by_the_declared_range_not_from_zero(tmp_path):
    fovs = [25, 40, 60, 80, 90]  # fov is declared over [20, 90]
    store, _ = build(tmp_path, "fov", [{"fov": f} for f in fovs])
    result = check(store, "fov", "coverage")
    assert result.metadata["fov"] == [1, 1, 1, 2]
    realised = qmc.discrepancy(scaled(fovs, 20, 90)[:, None], method="CD")
    assert result.metadata["discrepancy"]["realised"] == pytest.approx(realised)


def test_coverage_discrepancy_uses_a_sample_of_distinct_jobs_of_a_large_batch(
    tmp_path, monkeypatch
):
    azimuths = [10 + 29 * i for i in range(12)]
    store, _ = build(tmp_path, "big", [{"light_azimuth": a} for a in azimuths])
    monkeypatch.setattr(quality, "_DISCREPANCY_POINTS", 4)
    result = check(store, "big", "coverage").metadata["discrepancy"]
    assert check(store, "big", "coverage").metadata["discrepancy"] == result  # reproducible
    assert result["iid_uniform"] == pytest.approx(iid(4, 1))
    u = scaled(azimuths, 0, 360)
    subsets = [
        qmc.discrepancy(u[list(c)][:, None], method="CD")
        for c in itertools.combinations(range(12), 4)
    ]
    assert min(abs(d - result["realised"]) for d in subsets) < 1e-12


def test_the_iid_baseline_is_the_average_discrepancy_of_uniform_points():
    rng = np.random.default_rng(1)
    for n, d in ((8, 1), (16, 3)):
        draws = [qmc.discrepancy(rng.random((n, d)), method="CD") for _ in range(2000)]
        assert quality._iid_discrepancy(n, d) == pytest.approx(np.mean(draws), rel=0.03)


# bias


def _leak(tmp_path, name, azimuth_category, *, per=2, objects=None):
    """Jobs whose one object's category follows the light azimuth."""
    pairs = [(a, c) for a, c in azimuth_category for _ in range(per)]
    scenes = [[frame(objects or (obj(c),))] for _, c in pairs]
    return build(tmp_path, name, [{"light_azimuth": a} for a, _ in pairs], scenes=scenes)


def test_bias_fails_a_nuisance_factor_that_predicts_a_target(tmp_path):
    store, _ = _leak(tmp_path, "leak", [(10, "duck"), (190, "cube")], per=4)
    result = check(store, "leak", "bias")
    p = chi2.sf(8, 1)  # a perfect 2x2 association of 8 jobs: chi-square 8, one dof
    assert (result.passed, result.severity) == (False, "ERROR")
    assert result.message == (
        f"light_azimuth predicts category: Cramér's V 1.00 (p={p:.2g}, MI 0.69 nats; limit 0.3)"
    )
    assert result.metadata == {
        "pairs": [
            {
                "nuisance": "light_azimuth",
                "target": "category",
                "cramers_v": 1.0,
                "p_value": pytest.approx(p),
                "mutual_information": round(math.log(2), 4),
            }
        ],
        "not tested (one level)": [
            "light_azimuth x visibility",
            "light_azimuth x objects_per_frame",
        ],
    }
    assert check(store, "leak", "bias", max_p_value=p).passed  # p must be below the limit
    loose = check(store, "leak", "bias", max_p_value=p / 2)  # V above its limit, p not below
    assert loose.passed
    assert loose.message == ("no association above V=0.3; strongest light_azimuth x category V=1.0")


def test_bias_bins_the_factor_over_its_declared_range(tmp_path):
    pattern = [(10, "duck"), (100, "cube"), (190, "duck"), (280, "cube")]
    store, _ = _leak(tmp_path, "bins", pattern)
    quarters = check(store, "bins", "bias", targets=["category"])
    # four bins, each of one category: chi-square 8 with 3 dof; bias-corrected V
    # sqrt((1 - 3/7) / (2 - 1/7 - 1)) = sqrt(2/3)
    assert quarters.metadata["pairs"][0]["cramers_v"] == round(math.sqrt(2 / 3), 4)
    assert quarters.metadata["pairs"][0]["p_value"] == pytest.approx(chi2.sf(8, 3))
    assert quarters.passed  # p about 0.05: not below 0.01
    assert not check(store, "bins", "bias", targets=["category"], max_p_value=0.05).passed
    halves = check(store, "bins", "bias", targets=["category"], bins=2)
    assert halves.metadata["pairs"][0] == {
        "nuisance": "light_azimuth",
        "target": "category",
        "cramers_v": 0.0,
        "p_value": pytest.approx(1.0),
        "mutual_information": 0.0,
    }
    assert halves.message == "no association above V=0.3; strongest light_azimuth x category V=0.0"


def test_bias_puts_the_top_of_the_range_in_the_last_bin(tmp_path):
    store, _ = _leak(tmp_path, "top", [(300, "duck"), (360, "duck"), (10, "cube"), (20, "cube")])
    result = check(store, "top", "bias", targets=["category"])
    assert result.metadata["pairs"][0]["cramers_v"] == 1.0  # two bins, not three


def test_bias_weighs_each_job_once_over_its_objects(tmp_path):
    duck, cube = obj("duck", (2, 2, 5, 5)), obj("cube", (10, 2, 14, 5))
    other = obj("duck", (20, 2, 24, 5))
    mixes = {  # azimuth bin 0 and bin 2, two jobs each
        (10, 0): (duck, other, cube),  # 2/3 duck, 1/3 cube
        (10, 1): (cube,),
        (190, 0): (duck,),
        (190, 1): (cube, obj("cube", (20, 2, 24, 5)), duck),  # 2/3 cube, 1/3 duck
    }
    jobs = [{"light_azimuth": a} for a, _ in mixes]
    store, _ = build(tmp_path, "weights", jobs, scenes=[[frame(o)] for o in mixes.values()])
    result = check(store, "weights", "bias", targets=["category"])
    table = np.array([[4 / 3, 2 / 3], [2 / 3, 4 / 3]])  # rows: bins 0, 2; columns: cube, duck
    joint = table.ravel() / 4
    mi = 2 * math.log(2) + float(np.sum(joint * np.log(joint)))
    pair = result.metadata["pairs"][0]
    assert pair["p_value"] == pytest.approx(chi2_contingency(table, correction=False)[1])
    assert pair["mutual_information"] == round(mi, 4)


def test_bias_of_categorical_factors_sorts_the_pairs_strongest_first(tmp_path):
    textures = ["wood", "grid"] * 4
    categories = ["duck", "cube"] * 4
    azimuths = [10, 10, 10, 10, 190, 190, 190, 190]
    jobs = [
        {"table_texture": t, "light_azimuth": a} for t, a in zip(textures, azimuths, strict=True)
    ]
    scenes = [[frame((obj(c),))] for c in categories]
    store, _ = build(tmp_path, "cat", jobs, scenes=scenes)
    result = check(store, "cat", "bias", targets=["category"])
    pairs = [(p["nuisance"], p["cramers_v"]) for p in result.metadata["pairs"]]
    assert pairs == [("table_texture", 1.0), ("light_azimuth", 0.0)]
    assert result.message.startswith("table_texture predicts category: Cramér's V 1.00")
    assert "light_azimuth predicts" not in result.message


def test_bias_of_objects_per_frame_reads_each_frame(tmp_path):
    crowded = tuple(obj("cube", (3 * i, 0, 3 * i + 2, 2)) for i in range(5))
    pair = (obj("duck"), obj("duck", (12, 4, 20, 14)))
    azimuths = [10] * 4 + [190] * 4
    scenes = [[frame(crowded if a == 190 else pair)] for a in azimuths]
    jobs = [{"light_azimuth": a} for a in azimuths]
    store, _ = build(tmp_path, "crowd", jobs, scenes=scenes)
    result = check(store, "crowd", "bias", targets=["category", "objects_per_frame"])
    assert re.findall(r"light_azimuth predicts (\w+)", result.message) == [
        "category",
        "objects_per_frame",
    ]
    assert "); light_azimuth predicts objects_per_frame: " in result.message


def test_bias_with_nothing_to_test_fails_saying_why(tmp_path):
    store, _ = _leak(tmp_path, "flat", [(10, "duck"), (10, "cube")])
    one_level = check(store, "flat", "bias")
    assert (one_level.name, one_level.passed, one_level.severity) == ("bias", False, "ERROR")
    assert one_level.metadata["pairs"] == []
    assert one_level.message == (
        "no nuisance x target pair to test: each has a side with only one level "
        "(light_azimuth x category, light_azimuth x visibility, light_azimuth x objects_per_frame)"
    )
    jobs = [{"light_azimuth": a} for a in [10] * 4 + [190] * 4]
    build(tmp_path, "bare", jobs, scenes=[[frame(())]] * 8)  # no objects at all
    bare = check(store, "bare", "bias", targets=["category"])
    assert bare.message == (
        "no nuisance x target pair to test: each has a side with only one level "
        "(light_azimuth x category)"
    )
    build(tmp_path, "sem", [{"n_objects": 2}, {"n_objects": 3}])
    none = check(store, "sem", "bias")
    assert none.message == (
        "no nuisance x target pair to test: each has a side with only one level "
        "(no nuisance factor varies)"
    )


def test_cramers_v_at_its_extremes():
    v, p, mi = quality._cramers_v(np.array([[4.0, 0.0], [0.0, 4.0]]))
    assert (v, p, mi) == pytest.approx((1.0, chi2.sf(8, 1), math.log(2)))
    assert quality._cramers_v(np.full((2, 3), 2.0)) == pytest.approx((0.0, 1.0, 0.0))
    v, p, _ = quality._cramers_v(np.array([[1.0, 0.0], [0.0, 1.0]]))  # too few to correct
    assert (v, p) == pytest.approx((0.0, chi2.sf(2, 1)))


def test_cramers_v_is_symmetric_in_its_two_factors():
    for table in (
        np.array([[6.0, 1.0], [2.0, 5.0], [3.0, 3.0]]),
        np.array([[3.0, 1, 0, 0], [0, 3, 1, 0], [0, 0, 3, 4]]),
    ):
        assert quality._cramers_v(table) == pytest.approx(quality._cramers_v(table.T))
        v, _, _ = quality._cramers_v(table)
        assert 0 < v < 1


# balance

CATS = {"categories": ["duck", "cube", "mug"]}


def test_balance_of_categories_over_the_declared_ones(tmp_path):
    first = [obj("duck", (2 * i, 0, 2 * i + 1, 1)) for i in range(3)] + [obj("cube", (6, 0, 7, 1))]
    second = [obj("cube", (8, 0, 9, 1)), obj("cube", (10, 0, 11, 1)), obj("mug", (12, 0, 13, 1))]
    distractors = [obj("distractor", (20 + 3 * i, 10, 22 + 3 * i, 12)) for i in range(3)]
    scenes = [[frame((*first, distractors[0]))], [frame((*second, *distractors[1:]))]]
    store, _ = build(tmp_path, "bal", [CATS, {**CATS, "light_azimuth": 90}], scenes=scenes)
    result = check(store, "bal", "balance")
    assert (result.passed, result.severity) == (False, "WARN")
    assert result.metadata == {"category": {"cube": 3, "duck": 3, "mug": 1}}
    assert result.message == "category: rarest 'mug' (1) / most common 'cube' (3) = 0.33 < 0.5"
    assert check(store, "bal", "balance", min_ratio=1 / 3).passed


def test_balance_counts_a_declared_category_never_seen_and_equal_shares_pass(tmp_path):
    jobs = [{"categories": ["duck", "cube"]}, {"categories": ["mug", "torus"]}]
    scenes = [[frame((obj("duck"), obj("cube", (12, 4, 20, 14))))], [frame((obj("mug"),))]]
    store, _ = build(tmp_path, "unseen", jobs, scenes=scenes)
    result = check(store, "unseen", "balance")
    assert result.metadata["category"] == {"cube": 1, "duck": 1, "mug": 1, "torus": 0}
    assert result.message == ("category: rarest 'torus' (0) / most common 'cube' (1) = 0.00 < 0.5")
    even = [{"categories": ["duck", "cube"]}] * 2
    store, _ = build(tmp_path, "even", even, scenes=[[frame()], [frame()]])
    passed = check(store, "even", "balance", min_ratio=1.0)
    assert passed.passed and passed.message == "category balanced within 1.0"


def test_balance_of_categorical_nuisance_factors_over_their_levels(tmp_path):
    textures = ["wood", "wood", "grid", "grid", "plain", "checker", "plain", "checker"]
    jobs = [
        {**CATS, "table_texture": t, "shadows": i % 2 == 0, "light_azimuth": 10 * i}
        for i, t in enumerate(textures)
    ]
    store, _ = build(tmp_path, "nuis", jobs)
    result = check(store, "nuis", "balance")
    assert result.metadata == {
        "category": {"cube": 8, "duck": 8, "mug": 0},
        "shadows": {"False": 4, "True": 4},
        "table_texture": {"wood": 2, "checker": 2, "grid": 2, "uv": 0, "plain": 2},
    }
    assert result.message == (
        "category: rarest 'mug' (0) / most common 'cube' (8) = 0.00 < 0.5; "
        "table_texture: rarest 'uv' (0) / most common 'wood' (2) = 0.00 < 0.5"
    )
    passed = check(store, "nuis", "balance", factors=["shadows", "category"], min_ratio=0.0)
    assert passed.passed and passed.message == "shadows, category balanced within 0.0"
    store, _ = build(tmp_path, "half", [{"shadows": s} for s in (True, True, False)])
    at_limit = check(store, "half", "balance", factors=["shadows"])  # 1/2 is not below 0.5
    assert at_limit.passed and at_limit.message == "shadows balanced within 0.5"


def test_balance_needs_two_levels_and_some_objects(tmp_path):
    store, _ = build(tmp_path, "single", [{"categories": ["duck"]}])
    result = check(store, "single", "balance", factors=["category", "shadows"])
    assert result.message == (
        "category: 1 level(s); balance needs at least two; "
        "shadows: rarest 'False' (0) / most common 'True' (1) = 0.00 < 0.5"
    )
    assert not result.passed and result.metadata["shadows"] == {"False": 0, "True": 1}
    store, _ = build(tmp_path, "bare", [CATS], scenes=[[frame(())]])
    bare = check(store, "bare", "balance", factors=["category"])
    assert bare.message == "category: rarest 'cube' (0) / most common 'cube' (0) = 0.00 < 0.5"


# edge cases


def _edge_scene():
    """Four objects: occlusion at, below, far below and above 0.5; one truncated; box areas
    24, 64, 100 and 16 px² (two under 64); frames of 6 and 5 objects."""
    first = (
        obj("duck", (0, 0, 6, 4), occlusion=0.5),
        obj("duck", (8, 0, 16, 8), occlusion=0.49, truncation=0.01),
    )
    second = (obj("cube", (0, 10, 10, 20)), obj("cube", (20, 0, 24, 4), occlusion=0.9))
    return [frame(first, n_objects=6), frame(second, n_objects=5)]


def test_edge_cases_count_occluded_truncated_crowded_and_small_objects(tmp_path):
    store, _ = build(tmp_path, "edge", [{"light_azimuth": 0}], scenes=[_edge_scene()])
    result = check(
        store,
        "edge",
        "edge_cases",
        min_occluded_share=0.6,
        min_truncated_share=0.3,
        min_crowded_share=0.6,
        min_small_share=0.6,
        max_small_share=0.4,
    )
    assert (result.passed, result.severity) == (False, "WARN")
    assert result.message == (
        "occluded share 0.500 < 0.6; truncated share 0.250 < 0.3; crowded frames share 0.500 "
        "< 0.6; small share 0.500 < 0.6; small share 0.500 > 0.4; "
        "boxes under 64 px²: 50.0% (cube 50%, duck 50%)"
    )
    sizes = result.metadata.pop("box area by category")
    assert result.metadata == {
        "occluded": 0.5,
        "truncated": 0.25,
        "crowded frames": 0.5,
        "small": 0.5,
    }
    assert list(sizes) == ["cube", "duck"]
    for category, areas in (("cube", [100, 16]), ("duck", [24, 64])):
        figures = sizes[category]
        assert {k: figures[k] for k in ("objects", "small", "small share")} == {
            "objects": 2,
            "small": 1,
            "small share": 0.5,
        }
        assert {figures["p10"], figures["median"], figures["p90"]} <= set(areas)
        assert figures["p10"] <= figures["median"] <= figures["p90"] == max(areas)


def test_edge_cases_pass_at_their_thresholds(tmp_path):
    store, _ = build(tmp_path, "met", [{"light_azimuth": 0}], scenes=[_edge_scene()])
    result = check(
        store,
        "met",
        "edge_cases",
        min_occluded_share=0.5,
        min_truncated_share=0.25,
        min_crowded_share=0.5,
        min_small_share=0.5,
        max_small_share=0.5,
    )
    assert result.passed
    assert result.message == "edge-case quotas met; boxes under 64 px²: 50.0% (cube 50%, duck 50%)"
    tiny = check(store, "met", "edge_cases", small_box_area=16, occlusion_level=0.75)
    assert tiny.metadata["small"] == 0.0 and tiny.metadata["occluded"] == 0.25
    assert tiny.message == "edge-case quotas met; boxes under 16 px²: 0.0%"
    crowd = check(store, "met", "edge_cases", crowded_objects=7, small_box_area=100)
    assert crowd.metadata["crowded frames"] == 0.0 and crowd.metadata["small"] == 0.75
    assert crowd.message == (
        "small share 0.750 > 0.25; boxes under 100 px²: 75.0% (cube 50%, duck 100%)"
    )


def test_edge_cases_without_objects_fail_saying_so(tmp_path):
    store, _ = build(tmp_path, "empty", [{"light_azimuth": 0}], scenes=[[frame(())]])
    result = check(store, "empty", "edge_cases", severity="ERROR")
    assert (result.name, result.passed, result.severity) == ("edge_cases", False, "ERROR")
    assert result.message == "no objects or frames to measure"


def test_edge_case_shares_are_rounded_to_four_digits(tmp_path):
    objects = (obj("duck", (0, 0, 2, 2), occlusion=0.7), obj("duck"), obj("duck", (12, 4, 20, 14)))
    store, _ = build(tmp_path, "thirds", [{"light_azimuth": 0}], scenes=[[frame(objects)]])
    result = check(store, "thirds", "edge_cases", min_occluded_share=0.0)
    assert result.metadata["occluded"] == 0.3333 and result.metadata["small"] == 0.6667
    assert result.metadata["box area by category"]["duck"]["small share"] == 0.6667


# novelty


def _hashed(tmp_path, name, hashes, max_hash_distance=6, **thresholds):
    scenes = [[frame(image_hash=h) for h in job] for job in hashes]
    store, ids = build(
        tmp_path, name, [{"light_azimuth": 90 * i} for i in range(len(hashes))], scenes=scenes
    )
    result = check(store, name, "novelty", max_hash_distance=max_hash_distance, **thresholds)
    return result, ids


def test_novelty_counts_repeats_within_a_job_and_across_jobs(tmp_path):
    hashes = [
        [0, 0b111111, 0xFF00],  # frame 1 is 6 bits from frame 0: a repeat
        [0xFF00, 0x0F0F0F0F],  # its frame 0 is frame 2 of the first job
        [0x30000000, 0x30000000 ^ 0b1111111],  # 7 bits apart: two images
    ]
    result, ids = _hashed(tmp_path, "nov", hashes)
    assert (result.passed, result.severity) == (False, "WARN")
    assert result.message == (
        "5 distinct images of 7 frames; 28.6% repeat an image (1 within their job, "
        "1 across jobs), more than 10%: see docs/dataset-tests.md#novelty"
    )
    # the later of the two frames with one hash (by job id, then frame) is the repeat
    first, second = ids[0], ids[1]
    worst = (
        [
            {"job_id": first, "repeats": 1, "frames": 3},
            {"job_id": second, "repeats": 1, "frames": 2},
        ]
        if first < second
        else [{"job_id": first, "repeats": 2, "frames": 3}]
    )
    assert result.metadata == {
        "frames": 7,
        "distinct images": 5,
        "duplicate share": round(2 / 7, 4),
        "repeats within jobs": 1,
        "repeats across jobs": 1,
        "worst jobs": worst,
    }


def test_novelty_passes_at_its_threshold_and_counts_distance_inclusively(tmp_path):
    hashes = [[0, 0b111111, 0xFF00], [0xFF00, 0x0F0F0F0F], [0x30000000, 0x3000007F]]
    result, _ = _hashed(tmp_path, "at", hashes, max_duplicate_share=2 / 7)
    assert result.passed
    assert result.message == (
        "5 distinct images of 7 frames; 28.6% repeat an image (1 within their job, 1 across jobs)"
    )
    strict, _ = _hashed(tmp_path, "near", [[0, 0b111111, 0b1111111]], max_hash_distance=5)
    assert strict.metadata["repeats within jobs"] == 1  # 7 bits from 0 but 1 from frame 1
    loose, _ = _hashed(tmp_path, "far", [[0, 0b111111]], max_hash_distance=6)
    assert loose.metadata["repeats within jobs"] == 1


def test_novelty_without_hashes_or_frames_fails_saying_so(tmp_path):
    store, _ = build(tmp_path, "nohash", [{"light_azimuth": 0}], hashes=False)
    result = check(store, "nohash", "novelty", severity="ERROR")
    assert (result.name, result.passed, result.severity) == ("novelty", False, "ERROR")
    assert result.message == "frames carry no image_hash column"
    store, _ = build(tmp_path / "other", "noframes", [{"light_azimuth": 0}], scenes=[[]])
    result = check(store, "noframes", "novelty", severity="ERROR")
    assert (result.name, result.passed, result.severity) == ("novelty", False, "ERROR")
    assert result.message == "no frames to compare"


# integrity


def test_integrity_of_a_consistent_batch(tmp_path):
    scenes = [[frame(), frame(size=(H, W))] for _ in range(3)]
    store, _ = build(tmp_path, "ok", [{"light_azimuth": a} for a in (0, 1, 2)], scenes=scenes)
    result = check(store, "ok", "integrity")
    assert (result.passed, result.severity) == (True, "ERROR")
    assert result.message == "3 jobs, 12 objects consistent"
    assert result.metadata == {"problems": [], "jobs": 3, "archives sampled": 3}


def test_integrity_reports_jobs_without_a_complete_archive(tmp_path):
    jobs = [{"light_azimuth": a} for a in (0, 1, 2, 3)]
    store, ids = build(tmp_path, "gaps", jobs, failed=[3], missing=[1])
    (store.archive_dir("gaps") / f"{ids[1]}.failed.json").write_text("{}")
    (store.archive_dir("gaps") / f"{ids[0]}.zip").rename(
        store.archive_dir("gaps") / f"{ids[0]}.part"
    )
    result = check(store, "gaps", "integrity")
    assert result.metadata == {
        "problems": [f"job {ids[i]}: no complete archive" for i in (0, 1, 3)],
        "jobs": 4,
        "archives sampled": 1,
    }
    assert result.message == f"3 problems; first: job {ids[0]}: no complete archive"
    store, ids = build(tmp_path / "none", "none", jobs[:2])
    for archive in store.archive_dir("none").iterdir():
        archive.unlink()
    store.archive_dir("none").rmdir()
    assert check(store, "none", "integrity").metadata["problems"] == [
        f"job {job}: no complete archive" for job in ids
    ]


def test_integrity_compares_every_box_and_pixel_count_with_its_mask(tmp_path):
    wide = frame(
        (obj("duck", (2, 2, 8, 6), mask=(2, 2, 9, 6)), obj("cube", (12, 4, 20, 14), pixels=25))
    )
    tall = frame(
        (obj("duck", (2, 20, 8, 30)), obj("cube", (1, 1, 3, 3), mask=(1, 1, 3, 4))), size=(W, H)
    )
    store, ids = build(
        tmp_path, "boxes", [{"light_azimuth": 0}, {"light_azimuth": 1}], scenes=[[wide], [tall]]
    )
    result = check(store, "boxes", "integrity")
    assert result.metadata["problems"] == [
        f"job {ids[0]} frame 0 instance 1: box (2, 2, 8, 6) / 28 px, but its mask gives "
        "(2, 2, 9, 6) / 28 px",
        f"job {ids[0]} frame 0 instance 2: box (12, 4, 20, 14) / 25 px, but its mask gives "
        "(12, 4, 20, 14) / 80 px",
        f"job {ids[1]} frame 0 instance 2: box (1, 1, 3, 3) / 6 px, but its mask gives "
        "(1, 1, 3, 4) / 6 px",
    ]
    assert not result.passed


def test_integrity_reads_every_mask_at_its_frames_size(tmp_path):
    scenes = [
        [frame((obj("duck", (30, 2, 38, 6)),))],
        [frame((obj("duck", (2, 30, 6, 38)),), size=(W, H))],
    ]
    store, _ = build(tmp_path, "sizes", [{"light_azimuth": 0}, {"light_azimuth": 1}], scenes=scenes)
    result = check(store, "sizes", "integrity")
    assert result.passed, result.message


def test_integrity_of_many_masks_lists_the_first_fifty_problems(tmp_path, monkeypatch):
    # 300 one-pixel objects (more than pycocotools sizes right in one call), 60 of them with
    # a wrong pixel count, and a job without its archive
    cells = [(x, y) for y in range(15) for x in range(20)]
    objects = tuple(
        obj("duck", (x, y, x + 1, y + 1), pixels=2 if i % 5 == 0 else None)
        for i, (x, y) in enumerate(cells)
    )
    store, ids = build(
        tmp_path,
        "many",
        [{"light_azimuth": 0}, {"light_azimuth": 1}],
        scenes=[[frame(objects)], [frame()]],
        missing=[1],
    )
    result = check(store, "many", "integrity")
    problems = result.metadata["problems"]
    assert len(problems) == 50 and problems[0] == f"job {ids[1]}: no complete archive"
    assert problems[1] == (
        f"job {ids[0]} frame 0 instance 1: box (0, 0, 1, 1) / 2 px, but its mask gives "
        "(0, 0, 1, 1) / 1 px"
    )
    assert problems[-1].startswith(f"job {ids[0]} frame 0 instance {5 * 48 + 1}: ")
    assert result.message.startswith(f"51 problems; first: job {ids[1]}: no complete archive")
    monkeypatch.setattr(quality, "_CHUNK_ROWS", 7)  # read 7 rows at a time: the same answer
    chunked = check(store, "many", "integrity")
    assert chunked.metadata == result.metadata and chunked.message == result.message


def test_integrity_reads_masks_in_chunks_with_the_same_answer(tmp_path, monkeypatch):
    """Objects rows are read and decoded a chunk at a time; whatever the chunk's size (one
    row, a chunk across two frame sizes), the same problems are found."""
    wide = frame((obj("duck", (30, 2, 38, 6)), obj("cube", (2, 2, 6, 6))))
    tall = frame((obj("duck", (2, 30, 6, 38)), obj("cube", (2, 2, 6, 6), pixels=3)), size=(W, H))
    jobs = [{"light_azimuth": 0}, {"light_azimuth": 1}]
    store, ids = build(tmp_path, "chunks", jobs, scenes=[[wide], [tall]])
    whole = check(store, "chunks", "integrity")
    assert whole.metadata["problems"] == [
        f"job {ids[1]} frame 0 instance 2: box (2, 2, 6, 6) / 3 px, but its mask gives "
        "(2, 2, 6, 6) / 16 px"
    ]
    for rows in (1, 2, 3):
        monkeypatch.setattr(quality, "_CHUNK_ROWS", rows)
        chunked = check(store, "chunks", "integrity")
        assert (chunked.metadata, chunked.message) == (whole.metadata, whole.message)
    store, _ = build(tmp_path, "one", [{"light_azimuth": 5}], scenes=[[frame((obj(),))]])
    result = check(store, "one", "integrity")
    assert result.passed and result.message.endswith("1 objects consistent")


def test_integrity_reads_only_its_batchs_rows_of_a_job_planned_twice(tmp_path):
    """Job ids hash generator, parameters and seed, so the same spec planned under two
    names has the same jobs: each batch's archives are still checked against its own rows."""
    jobs = [{"light_azimuth": 0}]
    store, first = build(tmp_path, "monday", jobs)
    _, again = build(tmp_path, "tuesday", jobs, scenes=[[frame((obj(),))]])
    assert first == again
    for batch in ("monday", "tuesday"):
        result = check(store, batch, "integrity")
        assert result.passed, result.metadata["problems"]


def _archive_problem(tmp_path, name, first, *, second=None, **thresholds):
    """Integrity over two jobs whose first frame is ``first`` (and second ``second``)."""
    frames = [first] if second is None else [first, second]
    store, ids = build(
        tmp_path, name, [{"light_azimuth": 0}, {"light_azimuth": 1}], scenes=[frames, [frame()]]
    )
    result = check(store, name, "integrity", **thresholds)
    return result.metadata["problems"], f"job {ids[0]} frame"


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        (frame(extra_ids=[3]), "0: objects [1, 2] but segmentation ids [1, 2, 3]"),
        (
            frame((obj("duck"), obj("cube", (12, 4, 20, 14), segment=(12, 4, 20, 13)))),
            "0 instance 2: mask differs from the segmentation",
        ),
        (frame(depth=0.0), "0: empty depth map"),
        (frame(depth=20.0), "0: depth 20.000..20.000 m outside the clip range [0.1, 10.0]"),
        (frame(depth=10.5), "0: depth 10.500..10.500 m outside the clip range [0.1, 10.0]"),
        (
            frame(depth=np.where(np.arange(W) < 20, 1.0, 20.0)),
            "0: depth 1.000..20.000 m outside the clip range [0.1, 10.0]",
        ),
        (
            frame(depth=np.where(np.arange(W) < 20, 0.05, 2.0)),
            "0: depth 0.050..2.000 m outside the clip range [0.1, 10.0]",
        ),
        (frame(rgb=np.full((H, W, 3), 9, np.uint8)), "0: empty RGB image"),
        (frame(rgb=b"not a png"), "0: empty RGB image"),
        (frame(dense={"normals": np.zeros((H, W, 3), np.uint16)}), "0: empty normals map"),
        (
            frame(dense={"object_coordinates": np.zeros((H, W, 3), np.uint16)}),
            "0: empty object_coordinates map",
        ),
    ],
)
def test_integrity_finds_what_is_wrong_in_an_archive(tmp_path, broken, expected):
    problems, where = _archive_problem(tmp_path, "arch", broken)
    assert problems == [f"{where} {expected}"]


def test_integrity_names_the_frame_and_accepts_good_dense_maps_and_depth_near_the_planes(tmp_path):
    maps = {
        "normals": np.full((H, W, 3), 7, np.uint16),
        "object_coordinates": np.ones((H, W, 3), np.uint16),
    }
    second = frame(dense={"normals": np.zeros((H, W, 3), np.uint16)})
    depth = np.where(np.arange(W) < 20, 0.1, 1.0)
    first = frame(dense=maps, depth=depth, near=0.1005, far=0.9995)
    problems, where = _archive_problem(tmp_path, "frames", first, second=second)
    assert problems == [f"{where} 1: empty normals map"]


def test_integrity_opens_a_sample_of_archives(tmp_path):
    grey = frame(rgb=np.full((H, W, 3), 9, np.uint8))
    store, _ = build(tmp_path, "s", [{"light_azimuth": a} for a in range(4)], scenes=[[grey]] * 4)
    three = check(store, "s", "integrity", sample_jobs=3)
    assert three.metadata["archives sampled"] == 3 and len(set(three.metadata["problems"])) == 3
    assert check(store, "s", "integrity", sample_jobs=3).metadata == three.metadata
    none = check(store, "s", "integrity", sample_jobs=0)
    assert none.passed and none.metadata["archives sampled"] == 0
    every = check(store, "s", "integrity", sample_jobs=4)
    assert len(every.metadata["problems"]) == 4


def test_integrity_of_frames_without_objects(tmp_path):
    store, _ = build(tmp_path, "bare", [{"light_azimuth": 0}], scenes=[[frame(())]])
    result = check(store, "bare", "integrity")
    assert (result.passed, result.message) == (True, "1 jobs, 0 objects consistent")


# the design, the run, the record


def test_design_treats_only_numbers_with_both_bounds_as_continuous():
    schemas = {
        "both": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer", "minimum": 1, "maximum": 3},
        "low": {"type": "number", "minimum": 0},
        "high": {"type": "number", "maximum": 1},
        "text": {"type": "string", "minimum": 0, "maximum": 1},
    }
    d = quality.Design(schemas, None, [])
    assert [d.continuous(p) for p in schemas] == [True, True, False, False, False]


def test_design_of_a_batch_and_its_bins(tmp_path):
    store, _ = build(tmp_path, "d", [{"light_azimuth": 0, "shadows": False, "resolution": 128}])
    build(
        tmp_path,
        "s",
        None,
        sampler={"kind": "random", "count": 2, "ranges": {"fov": [20, 90], "n_frames": [1, 2]}},
    )
    d = quality.design(store, "d")
    assert d.varied == ["light_azimuth", "shadows"]
    assert quality.design(store, "s").varied == ["fov"]
    assert quality.design(store, "never") is None
    assert [
        d.continuous(p)
        for p in ("light_azimuth", "n_objects", "shadows", "table_texture", "categories", "nope")
    ] == [True, True, False, False, False, False]
    assert d.levels("shadows") == [False, True] and d.levels("table_texture") == TEXTURES
    assert d.levels("light_azimuth") == [] and d.levels("nope") == []
    rows = (
        "(VALUES (0.0, 'wood', 20.0), (89.9, 'grid', 37.4), (90.0, 'uv', 37.5), "
        "(359.0, 'wood', 89.0), (360.0, 'plain', 90.0))"
    )
    sql = (
        f"SELECT {d.bin_sql('light_azimuth', 4)}, {d.bin_sql('table_texture', 4)}, "
        f"{d.bin_sql('light_azimuth', 2)}, {d.bin_sql('fov', 4)} "  # fov: over [20, 90]
        f"FROM {rows} j(param_light_azimuth, param_table_texture, param_fov)"
    )
    assert duckdb.sql(sql).fetchall() == [
        ("0", "wood", "0", "0"),
        ("0", "grid", "0", "0"),
        ("1", "uv", "0", "1"),
        ("3", "wood", "1", "3"),
        ("3", "plain", "1", "3"),
    ]


def test_run_checks_gives_every_check_in_order_and_fails_an_empty_batch(tmp_path):
    store, _ = build(tmp_path, "run", [{"light_azimuth": a} for a in (10, 100, 190, 280)])
    tests = quality.DatasetTests(coverage={"severity": "WARN"}, integrity={"sample_jobs": 1})
    results = quality.run_checks(store, "run", tests)
    assert (
        [r.name for r in results]
        == list(quality.CHECKS)
        == ["coverage", "bias", "balance", "edge_cases", "novelty", "integrity"]
    )
    assert results[0].severity == "WARN" and results[0].passed
    assert results[-1].metadata["archives sampled"] == 1
    build(tmp_path, "failed", [{"light_azimuth": 0}], failed=[0])
    for batch in ("failed", "never"):
        results = quality.run_checks(store, batch, tests)
        assert [(r.name, r.passed, r.severity, r.message) for r in results] == [
            (name, False, severity, f"batch {batch!r} has no rendered jobs to test")
            for name, severity in zip(
                quality.CHECKS, ["WARN", "ERROR", "WARN", "WARN", "WARN", "ERROR"], strict=True
            )
        ]
        assert not any(r.metadata for r in results)


def test_recorded_results_read_back_with_the_time_they_were_recorded(tmp_path):
    store, _ = build(tmp_path, "rec", [{"light_azimuth": 0}])
    results = [
        quality.CheckResult("coverage", True, "ERROR", "fine", {"x": [1, 2]}),
        quality.CheckResult("bias", False, "WARN", "not fine"),
    ]
    assert quality.recorded_results(store, "rec") is None
    path = quality.record_results(store, "rec", results)
    assert path == store.batch_dir("rec") / "tests.json"
    assert quality.recorded_results(store, "rec") == results
    record = json.loads(path.read_text())
    assert record["batch"] == "rec"
    recorded_at = datetime.fromisoformat(record["recorded_at"])
    assert recorded_at.tzinfo is not None and recorded_at.microsecond == 0
    assert abs(datetime.now(UTC) - recorded_at) < timedelta(minutes=1)
    assert [r.blocking for r in results] == [False, False]
    assert quality.CheckResult("x", False, "ERROR", "").blocking


def test_default_thresholds_are_the_documented_ones():
    """docs/dataset-tests.md shows every field of a thresholds file with its default (lists
    aside: they default to what the batch varies)."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "dataset-tests.md").read_text()
    shown = yaml.safe_load(doc.split("## Thresholds")[1].split("```yaml")[1].split("```")[0])
    defaults = quality.DatasetTests().model_dump()
    assert list(shown) == list(defaults)
    for section, fields in shown.items():
        scalars = {k: v for k, v in fields.items() if not isinstance(v, list)}
        lists = {k for k, v in defaults[section].items() if v is None}
        assert scalars == {k: v for k, v in defaults[section].items() if k not in lists}


SHARES = [
    ("bias", "max_cramers_v"),
    ("bias", "max_p_value"),
    ("balance", "min_ratio"),
    ("edge_cases", "occlusion_level"),
    ("edge_cases", "min_occluded_share"),
    ("edge_cases", "min_truncated_share"),
    ("edge_cases", "min_crowded_share"),
    ("edge_cases", "min_small_share"),
    ("edge_cases", "max_small_share"),
    ("novelty", "max_duplicate_share"),
]
LOWEST = [  # the smallest value that means something
    ("coverage", "bins", 2),
    ("bias", "bins", 2),
    ("coverage", "min_bin_count", 1),
    ("edge_cases", "crowded_objects", 1),
    ("edge_cases", "small_box_area", 1),
    ("novelty", "max_hash_distance", 0),
    ("integrity", "sample_jobs", 0),
]


def test_thresholds_files_accept_meaningful_values_and_refuse_the_rest(tmp_path):
    path = tmp_path / "t.tests.yaml"
    path.write_text("")
    assert quality.load_tests(path) == quality.DatasetTests()
    for section, name in SHARES:  # shares and probabilities lie in [0, 1]
        for value in (0, 1):
            assert (
                getattr(getattr(quality.DatasetTests(**{section: {name: value}}), section), name)
                == value
            )
        for value in (-0.01, 1.01):
            path.write_text(json.dumps({section: {name: value}}))
            with pytest.raises(quality.TestsFileError, match=f"{section}.{name}: "):
                quality.load_tests(path)
    for section, name, lowest in LOWEST:
        quality.DatasetTests(**{section: {name: lowest}})
        path.write_text(json.dumps({section: {name: lowest - 1}}))
        with pytest.raises(quality.TestsFileError, match=f"{section}.{name}: "):
            quality.load_tests(path)
    quality.DatasetTests(novelty={"max_hash_distance": 64})  # a 64-bit hash
    for bad in ({"novelty": {"max_hash_distance": 65}}, {"coverage": {"max_discrepancy_ratio": 0}}):
        with pytest.raises(ValueError):
            quality.DatasetTests(**bad)
    path.write_text("coverage: {bins: 3}\nintegrity: {sample_jobs: 8}\n")
    assert quality.load_tests(path) == quality.DatasetTests(
        coverage={"bins": 3}, integrity={"sample_jobs": 8}
    )
