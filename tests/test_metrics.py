"""Per-slice COCO metrics (``vario.evaluate.metrics``) on small hand-built tables: figures the
COCO definition fixes by hand, agreement with pycocotools on the same data, and the many-slice
NumPy engine (``evaluate_slices``) equal to the one-slice C++ one on random slices."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vario.evaluate import metrics
from vario.evaluate.metrics import IOU_THRESHOLDS, SliceMetrics, evaluate_slice, evaluate_slices

W, H = 200, 160  # every image
CATS = ["mug", "bowl", "can"]


def _mask(x0: float, y0: float, x1: float, y1: float) -> str:
    """Compressed COCO RLE counts of a rectangle (pixel edges, rounded) on an image."""
    m = np.zeros((H, W), np.uint8)
    m[max(round(y0), 0) : round(y1), max(round(x0), 0) : round(x1)] = 1
    return mask_utils.encode(np.asfortranarray(m))["counts"].decode()


_TRUTH = pa.schema(
    [("image", pa.int64()), ("category", pa.string())]
    + [(f"box_{a}", pa.int32()) for a in ("x_min", "y_min", "x_max", "y_max")]
    + [("visible_pixels", pa.int64()), ("mask_rle", pa.string()), ("in_slice", pa.bool_())]
)
_PREDICTIONS = pa.schema(
    [("image", pa.int64()), ("category", pa.string()), ("score", pa.float64())]
    + [(f"box_{a}", pa.float64()) for a in "xywh"]
    + [("mask_rle", pa.string())]
)


def _tables(truth: list[tuple], preds: list[tuple], masks: bool = False):
    """truth rows (image, category, x0, y0, x1, y1, in_slice), predictions (image, category,
    score, x, y, w, h): the three tables evaluate_slice reads, masks the boxes' rectangles."""
    n = 1 + max((r[0] for r in truth + preds), default=0)
    images = pa.table({"image": np.arange(n, dtype=np.int64), "width": [W] * n, "height": [H] * n})
    rows = [
        (*r[:6], (r[4] - r[2]) * (r[5] - r[3]), _mask(*r[2:6]) if masks else None, r[6])
        for r in truth
    ]
    preds = [(*r, _mask(r[3], r[4], r[3] + r[5], r[4] + r[6]) if masks else None) for r in preds]
    return (
        images,
        pa.Table.from_pylist([dict(zip(_TRUTH.names, r, strict=True)) for r in rows], _TRUTH),
        pa.Table.from_pylist(
            [dict(zip(_PREDICTIONS.names, r, strict=True)) for r in preds], _PREDICTIONS
        ),
    )


def _exact(truth: list[tuple], score: float = 0.9) -> list[tuple]:
    """A prediction exactly on each truth box."""
    return [(r[0], r[1], score, r[2], r[3], r[4] - r[2], r[5] - r[3]) for r in truth]


def _evaluate(truth, preds, masks=False, **options):
    return evaluate_slice(*_tables(truth, preds, masks), categories=CATS, **options)


TRUTH = [
    (0, "mug", 10, 10, 60, 50, True),
    (0, "mug", 100, 20, 130, 90, True),
    (0, "bowl", 50, 100, 150, 150, True),
    (1, "mug", 0, 0, 200, 160, True),
    (2, "bowl", 30, 40, 31, 42, True),
]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_truth_as_predictions_scores_one(iou_type: str) -> None:
    m = _evaluate(TRUTH, _exact(TRUTH), masks=True, iou_type=iou_type)
    assert (m.images, m.objects, m.predictions) == (3, 5, 5)
    assert (m.map, m.ap50, m.ap75, m.ar100, m.precision, m.recall) == (1, 1, 1, 1, 1, 1)
    assert m.per_category["mug"] == m.per_category["bowl"] == 1.0
    assert math.isnan(m.per_category["can"])  # no truth of it: no figure


@pytest.mark.parametrize("dx", [10, 20, 35])
def test_shifted_boxes_give_the_ap_coco_defines(dx: int) -> None:
    """A 100 x 100 box predicted dx pixels to the right: IoU = 100 (100 - dx) / (100 (100 + dx)).
    At each IoU threshold the prediction is a true positive (AP 1) or a false positive with the
    truth missed (AP 0), so AP@[.5:.95] is the share of thresholds at most the IoU."""
    truth = [(i, "mug", 20, 30, 120, 130, True) for i in range(4)]
    preds = [(i, "mug", 0.9, 20.0 + dx, 30.0, 100.0, 100.0) for i in range(4)]
    iou = (100 - dx) / (100 + dx)
    passed = [t for t in IOU_THRESHOLDS if t <= iou]
    m = _evaluate(truth, preds)
    assert m.map == pytest.approx(len(passed) / 10, abs=1e-12)
    assert m.ap50 == (1.0 if iou >= 0.5 else 0.0)
    assert m.ap75 == (1.0 if iou >= 0.75 else 0.0)
    assert m.recall == (1.0 if iou >= 0.5 else 0.0)


def _random_case(seed: int, ignore: bool) -> tuple[list[tuple], list[tuple]]:
    """Objects on 12 images (40 % outside the slice if ``ignore``), jittered predictions (some
    in a wrong category, several per object), false positives, scores with ties."""
    rng = np.random.default_rng(seed)
    truth, preds = [], []
    for image in range(12):
        for _ in range(rng.integers(0, 6)):
            w, h = rng.integers(8, 90, 2)
            x, y = rng.integers(0, W - w), rng.integers(0, H - h)
            cat = CATS[rng.integers(0, 3)]
            truth.append((image, cat, x, y, x + w, y + h, not ignore or rng.random() < 0.6))
            for _ in range(rng.integers(0, 4)):
                j = rng.normal(0, 0.12, 4) * (w, h, w, h)
                c = cat if rng.random() < 0.8 else CATS[rng.integers(0, 3)]
                preds.append(
                    (image, c, round(rng.random(), 1), x + j[0], y + j[1], w + j[2], h + j[3])
                )
        for _ in range(rng.integers(0, 3)):
            x, y = rng.integers(0, W - 40, 2)
            preds.append(
                (image, CATS[rng.integers(0, 3)], round(rng.random(), 1), x, y, 40.0, 30.0)
            )
    return truth, preds


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("ignore", [False, True], ids=["all-in-slice", "some-ignored"])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_agrees_with_pycocotools(tmp_path, seed: int, ignore: bool, iou_type: str) -> None:
    """The same slice written as COCO files and scored by pycocotools: as is when nothing is
    ignored, else with truth outside the slice given an area outside the "all" range."""
    images, t, p = _tables(*_random_case(seed, ignore), masks=True)
    cat = {c: i + 1 for i, c in enumerate(CATS)}
    rle = {"size": [H, W]}
    gt = {
        "images": [{"id": i, "width": W, "height": H} for i in images["image"].to_pylist()],
        "categories": [{"id": i, "name": c} for c, i in cat.items()],
        "annotations": [
            {"id": n + 1, "image_id": r["image"], "category_id": cat[r["category"]], "iscrowd": 0}
            | {
                "bbox": [
                    r["box_x_min"],
                    r["box_y_min"],
                    r["box_x_max"] - r["box_x_min"],
                    r["box_y_max"] - r["box_y_min"],
                ]
            }  # fmt: skip
            | {"area": (1.0 if r["in_slice"] else 4.0) if ignore else r["visible_pixels"]}
            | {"segmentation": rle | {"counts": r["mask_rle"]}}
            for n, r in enumerate(t.to_pylist())
        ],
    }
    dt = [
        {"image_id": r["image"], "category_id": cat[r["category"]], "score": r["score"]}
        | {"bbox": [r["box_x"], r["box_y"], r["box_w"], r["box_h"]]}
        | ({"segmentation": rle | {"counts": r["mask_rle"]}} if iou_type == "segm" else {})
        for r in p.to_pylist()
    ]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        results = coco.loadRes(str(tmp_path / "dt.json"))
        reference = COCOeval(coco, results, iou_type)
        if ignore:
            reference.params.areaRng[0] = [0.5, 2.0]  # "all": in-slice truth only
            for ann in results.anns.values():
                ann["area"] = 1.0
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    m = evaluate_slice(images, t, p, categories=CATS, iou_type=iou_type)
    stats = reference.stats  # AP, AP50, AP75, ..., AR@1, AR@10, AR@100, ...
    assert [m.map, m.ap50, m.ap75, m.ar100] == pytest.approx(
        stats[[0, 1, 2, 8]].tolist(), abs=1e-12
    )
    # precision and recall: pycocotools' per-image matches at IoU 0.5, in range "all", of the
    # categories with in-slice truth (the others are left out, as from AP)
    scored = {
        cat[c]
        for c, s in zip(t["category"].to_pylist(), t["in_slice"].to_pylist(), strict=True)
        if s
    }
    tp = fp = 0
    for e in reference.evalImgs:
        if e and e["aRng"] == reference.params.areaRng[0] and e["category_id"] in scored:
            counted = (np.array(e["dtScores"]) >= 0.5) & ~e["dtIgnore"][0]
            tp += int((counted & (e["dtMatches"][0] > 0)).sum())
            fp += int((counted & (e["dtMatches"][0] == 0)).sum())
    assert (m.precision, m.recall) == (tp / (tp + fp), tp / m.objects)


def test_ignored_truth_neither_helps_nor_hurts() -> None:
    """Truth outside the slice: a prediction matched to it is ignored, whatever its score;
    a prediction matching nothing is a false positive."""
    inside = (0, "mug", 10, 10, 60, 60, True)
    outside = (0, "mug", 100, 80, 180, 150, False)
    other = (1, "bowl", 0, 0, 50, 50, False)  # a category with no in-slice truth
    alone = _evaluate([inside, outside, other], _exact([inside], 0.5))
    assert (alone.objects, alone.map, alone.precision, alone.recall) == (1, 1.0, 1.0, 1.0)
    matched_outside = _evaluate(
        [inside, outside, other], _exact([inside], 0.5) + _exact([outside, other], 0.9)
    )
    assert matched_outside.map == matched_outside.ar100 == 1.0
    assert (matched_outside.precision, matched_outside.recall) == (1.0, 1.0)
    assert math.isnan(matched_outside.per_category["bowl"])
    stray = _evaluate(
        [inside, outside], _exact([inside], 0.5) + [(0, "mug", 0.9, 120.0, 0.0, 40.0, 40.0)]
    )
    assert stray.map == pytest.approx(0.5)  # the only recall point has precision 1/2
    assert stray.precision == 0.5 and stray.recall == 1.0
    without_outside = _evaluate([inside], _exact([inside], 0.5) + _exact([outside], 0.9))
    assert without_outside.map == pytest.approx(0.5)  # the same prediction, now a false positive


def test_precision_and_recall_at_a_score_threshold() -> None:
    truth = [(0, "mug", x, 10, x + 40, 50, True) for x in (0, 50, 100, 150)]
    preds = [
        (0, "mug", 0.9, 0.0, 10.0, 40.0, 40.0),  # true positive (truth 1)
        (0, "mug", 0.8, 60.0, 100.0, 40.0, 40.0),  # on nothing: false positive
        (0, "mug", 0.7, 150.0, 10.0, 40.0, 16.0),  # IoU 0.4 with truth 4: false positive
        (0, "mug", 0.6, 50.0, 10.0, 40.0, 40.0),  # true positive (truth 2)
        (0, "mug", 0.55, 1.0, 10.0, 40.0, 40.0),  # truth 1 again: a duplicate, false positive
        (0, "mug", 0.3, 100.0, 10.0, 40.0, 40.0),  # true positive (truth 3), below 0.5
    ]
    m = _evaluate(truth, preds)
    assert (m.precision, m.recall) == (2 / 5, 2 / 4)
    low = _evaluate(truth, preds, score_threshold=0.25)
    assert (low.precision, low.recall) == (3 / 6, 3 / 4)
    high = _evaluate(truth, preds, score_threshold=0.95)
    assert math.isnan(high.precision) and high.recall == 0.0


def test_empty_slices_give_nan() -> None:
    figures = ("map", "ap50", "ap75", "ar100", "precision", "recall")
    nothing_in = _evaluate([(0, "mug", 0, 0, 10, 10, False)], _exact([(0, "mug", 0, 0, 10, 10)]))
    assert nothing_in.objects == 0 and all(math.isnan(getattr(nothing_in, f)) for f in figures)
    empty = _evaluate([], [])
    assert (empty.images, empty.objects, empty.predictions) == (1, 0, 0)
    assert all(math.isnan(getattr(empty, f)) for f in figures)
    missed = _evaluate(TRUTH, [])  # objects but no predictions: nothing found
    assert (missed.map, missed.ar100, missed.recall) == (0.0, 0.0, 0.0)
    assert math.isnan(missed.precision)


def test_segm_needs_truth_masks() -> None:
    with pytest.raises(ValueError, match="no mask"):
        _evaluate(TRUTH, _exact(TRUTH), masks=False, iou_type="segm")
    with pytest.raises(ValueError, match="iou_type"):
        _evaluate(TRUTH, _exact(TRUTH), iou_type="keypoints")


def _crowded_case(seed: int, n_images: int = 30) -> tuple[list[tuple], list[tuple]]:
    """Truth and predictions for many slices: up to 8 objects per image, so several of one
    category on an image (the greedy matching has choices), 0-4 jittered predictions per
    object with score ties, false positives, a category outside CATS ("cup"), 120 predictions
    on one image and category (beyond COCO's 100), a prediction on an image not in the table
    and one of a category without truth ("plate")."""
    rng = np.random.default_rng(seed)
    cats = [*CATS, "cup"]
    truth, preds = [], []
    for image in range(n_images):
        for _ in range(rng.integers(0, 9)):
            w, h = rng.integers(8, 90, 2)
            x, y = rng.integers(0, W - w), rng.integers(0, H - h)
            cat = cats[rng.integers(0, 4)]
            truth.append((image, cat, x, y, x + w, y + h, False))
            for _ in range(rng.integers(0, 5)):
                j = rng.normal(0, 0.1, 4) * (w, h, w, h)
                c = cat if rng.random() < 0.85 else cats[rng.integers(0, 4)]
                preds.append(
                    (image, c, round(rng.random(), 1), x + j[0], y + j[1], w + j[2], h + j[3])
                )
        for _ in range(rng.integers(0, 3)):
            x, y = rng.integers(0, W - 40, 2)
            preds.append(
                (image, cats[rng.integers(0, 4)], round(rng.random(), 1), x, y, 40.0, 30.0)
            )
    truth.append((0, "mug", 12, 10, 60, 50, False))
    preds += [
        (0, "mug", round(rng.random(), 2), 10.0 + rng.normal(0, 3), 10.0, 50.0, 40.0)
        for _ in range(120)
    ]
    preds += [(n_images + 5, "mug", 0.9, 0.0, 0.0, 10.0, 10.0), (1, "plate", 0.8, 0, 0, 9, 9)]
    return truth, preds


def _plain(m: SliceMetrics) -> dict:
    """A slice's figures for an exact comparison: NaN as a string, per_category in order."""
    out = dataclasses.asdict(m)
    out["per_category"] = list(out["per_category"].items())

    def plain(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return {
        k: [(c, plain(x)) for c, x in v] if k == "per_category" else plain(v)
        for k, v in out.items()
    }


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("mode", ["shared", "unshared", "forked"])
def test_evaluate_slices_equals_evaluate_slice(monkeypatch, iou_type: str, mode: str) -> None:
    """Each slice of ``evaluate_slices`` (the NumPy engine, over the whole dataset) equals
    ``evaluate_slice`` (the C++ evaluator) on the tables restricted to the slice's images,
    to the bit: groups matched once for all slices (shared) or for each, in one process or in
    forked workers split by category and slice."""
    images, truth, predictions = _tables(*_crowded_case(7), masks=True)
    images = images.filter(pc.less(images["image"], 30))  # one prediction's image is unknown
    truth = truth.drop_columns(["in_slice"])
    rng = np.random.default_rng(8)
    category = truth["category"].to_numpy(zero_copy_only=False)
    n = truth.num_rows
    members = {
        "random": rng.random(n) < 0.4,
        "sparse": rng.random(n) < 0.05,
        "mug": category == "mug",
        "cup": category == "cup",  # a category beyond the given ones
        "all": np.ones(n, bool),
        "none": np.zeros(n, bool),
        "arrow": pa.array(rng.random(n) < 0.6),
    }
    workers, shared, plans = 1, [], []
    if mode == "forked":  # 8 workers for 4 categories: 4 category units x 2 slice units
        monkeypatch.setattr(metrics, "_FORK_MIN", 0)
        workers = 8
    else:
        monkeypatch.setattr(metrics, "_SHARE_RATIO", 0.0 if mode == "shared" else math.inf)
        share = metrics._Unit.share
        monkeypatch.setattr(metrics._Unit, "share", lambda unit: shared.append(share(unit)))
    plan = metrics._plan
    monkeypatch.setattr(metrics, "_plan", lambda *a: plans.append(plan(*a)) or plans[-1])
    found = evaluate_slices(
        images, truth, predictions, members, categories=CATS, iou_type=iou_type, workers=workers
    )
    assert len(shared) == (mode == "shared") and len(plans[0]) == (8 if workers > 1 else 1)
    assert list(found) == list(members)
    for name, member in members.items():
        member = pa.array(member) if isinstance(member, np.ndarray) else member
        shown = pc.unique(truth["image"].filter(member))
        on = pc.is_in(truth["image"], shown)
        expected = evaluate_slice(
            images.filter(pc.is_in(images["image"], shown)),
            truth.filter(on).append_column("in_slice", member.filter(on)),
            predictions.filter(pc.is_in(predictions["image"], shown)),
            categories=CATS,
            iou_type=iou_type,
        )
        assert _plain(found[name]) == _plain(expected), name
    assert found["all"].objects == n and 0.1 < found["all"].map < 0.9
    assert "cup" in found["cup"].per_category and not math.isnan(found["cup"].per_category["cup"])
    assert found["none"].images == 0 and math.isnan(found["none"].map)


def test_evaluate_slices_checks_membership() -> None:
    images, truth, predictions = _tables(TRUTH, _exact(TRUTH))
    truth = truth.drop_columns(["in_slice"])
    with pytest.raises(ValueError, match="membership"):
        evaluate_slices(images, truth, predictions, {"s": np.ones(3, bool)}, categories=CATS)
    assert evaluate_slices(images, truth, predictions, {}, categories=CATS) == {}


def test_evaluate_slices_matching_rules_on_every_membership() -> None:
    """COCO's matching rules where they decide, for every one of the 512 in/out patterns of
    9 objects, against the C++ evaluator: identical truth boxes, predictions with tied scores
    and exact copies; an IoU tie between two different boxes (image 2: the later one is taken,
    leaving the earlier one to the next prediction); a prediction overlapping an in-slice box
    less than an ignored one (image 3: the in-slice one is taken while it clears the
    threshold)."""
    truth = [
        (0, "mug", 10, 10, 60, 60, False),
        (0, "mug", 10, 10, 60, 60, False),  # the same box again
        (0, "mug", 16, 10, 66, 60, False),  # IoU 0.79 with the two above
        (0, "mug", 100, 20, 150, 80, False),
        (1, "mug", 0, 0, 40, 40, False),
        (2, "mug", 0, 0, 40, 40, False),
        (2, "mug", 20, 0, 60, 40, False),
        (3, "mug", 0, 0, 50, 50, False),
        (3, "mug", 5, 0, 55, 50, False),
    ]
    preds = [
        (0, "mug", 0.9, 10.0, 10.0, 50.0, 50.0),
        (0, "mug", 0.9, 10.0, 10.0, 50.0, 50.0),
        (0, "mug", 0.8, 16.0, 10.0, 50.0, 50.0),
        (0, "mug", 0.8, 13.0, 10.0, 50.0, 50.0),
        (0, "mug", 0.7, 104.0, 26.0, 50.0, 60.0),
        (0, "mug", 0.95, 150.0, 100.0, 30.0, 30.0),
        (1, "mug", 0.6, 2.0, 2.0, 40.0, 40.0),
        (2, "mug", 0.9, 10.0, 0.0, 40.0, 40.0),  # IoU 0.6 with both
        (2, "mug", 0.8, 0.0, 0.0, 40.0, 40.0),  # 1 with the first, 1/3 with the second
        (3, "mug", 0.9, 5.0, 0.0, 50.0, 50.0),  # 0.82 with the first, 1 with the second
        (3, "mug", 0.8, 0.0, 0.0, 50.0, 50.0),
    ]
    images, table, predictions = _tables(truth, preds)
    table = table.drop_columns(["in_slice"])
    members = {
        f"{bits:09b}": np.array([bits >> i & 1 for i in range(9)], bool) for bits in range(512)
    }
    found = evaluate_slices(images, table, predictions, members, categories=CATS)
    for name, member in members.items():
        shown = pc.unique(table["image"].filter(pa.array(member)))
        on = pc.is_in(table["image"], shown)
        expected = evaluate_slice(
            images.filter(pc.is_in(images["image"], shown)),
            table.filter(on).append_column("in_slice", pa.array(member).filter(on)),
            predictions.filter(pc.is_in(predictions["image"], shown)),
            categories=CATS,
        )
        assert _plain(found[name]) == _plain(expected), name
