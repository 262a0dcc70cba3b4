"""Per-slice COCO metrics: slices' predictions scored against their ground truth.

A slice is a set of ground-truth objects (``in_slice``) on a set of images. It is scored as
COCO scores an area range: over those images with *all* their ground truth, where truth outside
the slice is ignored (a prediction matched to it neither counts nor costs) and a prediction
that matches nothing is a false positive.

Two engines give the same figures, to the bit. ``evaluate_slice`` (one slice) feeds
faster-coco-eval's C++ evaluator (``faster_eval_api_cpp``, 1.7 or later) directly: its ``COCO``
/ ``loadRes`` / ``COCOeval_faster`` path builds a Python dict per object several times over and
computes each image's IoUs in its own Python call, so here the IoUs of every image are computed
at once with NumPy, each object becomes one small dict, and the C++ evaluator receives exactly
what ``COCOeval_faster.evaluate`` would hand it. Each object is given a stand-in area, inside
one custom area range for in-slice truth and for every prediction and outside it for the rest,
because COCO's evaluators decide "ignored" from the area (their Python layer overwrites a
dataset's own ``ignore`` flag with ``iscrowd``). ``tests/test_metrics.py`` holds its figures to
pycocotools'.

``evaluate_slices`` (many slices of one dataset, what an evaluation runs) ports that C++
matching (``MatchDetectionsToGroundTruth``) and accumulation (``ComputePrecisionRecallCurve``)
to whole NumPy arrays, because the C++ evaluator cannot share work between slices: it reads a
Python dict per prediction on every run (about 1 us each) and its accumulation alone takes
0.6 s per slice of a million predictions, so ten slices took 20 s against a 10 s target.
Nothing about an (image, category) group depends on the slice but which of its truth is in
it, and a group with its truth all in or all out is matched the same either way; so the
sorting, IoUs, matching and accumulation order are made once, and a slice matches again only
the groups it splits, then accumulates from its matches alone (true positives and ignored ones,
sparse). The work is split by category across forked worker processes. The tests hold this
engine to the C++ one on random slices, bbox and segm.

COCO's parameters throughout: IoU thresholds .50:.05:.95, 101 recall points, at most 100
predictions per image and category (highest scores first). A category without in-slice truth
is left out of every figure, its predictions included, as COCO leaves out categories without
ground truth. ``precision`` and ``recall`` count predictions with ``score >= score_threshold``
matched at IoU 0.5. No in-slice truth: every figure is NaN; in-slice truth but no predictions:
AP, AR and recall are 0 and precision is NaN.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace

import faster_coco_eval.faster_eval_api_cpp as coco_cpp
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from faster_coco_eval.core import mask as coco_mask

IOU_TYPES = ("bbox", "segm")
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # the very values COCO's evaluators compare with
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100  # per image and category, as COCO's last maxDets
# Stand-in areas for the C++ evaluator: every prediction and in-slice truth inside _RANGE, truth
# outside the slice beyond it
_AREA_PREDICTION = 1.0
_AREA_IN = 1.0
_AREA_OUT = 4.0
_RANGE = [0.5, 2.0]
_PAIR_CHUNK = 4_000_000  # prediction x truth pairs per NumPy block (bounds memory)
# Match a process's groups once for all its slices when the slices would otherwise match at
# least this many times its predictions (the shared matching costs about one such pass).
_SHARE_RATIO = 1.0
_FORK_MIN = 100_000  # truth and kept predictions below which evaluate_slices does not fork
NAN = math.nan


@dataclass(frozen=True)
class SliceMetrics:
    """One slice's figures. ``objects`` counts in-slice truth, ``predictions`` every prediction
    given on the slice's images; NaN where a figure has nothing to measure."""

    images: int
    objects: int
    predictions: int
    map: float  # AP@[.5:.95], mean over categories with in-slice truth
    ap50: float
    ap75: float
    ar100: float  # recall@[.5:.95] with at most 100 predictions per image and category
    precision: float  # at IoU 0.5 and score >= score_threshold
    recall: float
    per_category: dict[str, float]  # AP@[.5:.95]; NaN without in-slice truth


def evaluate_slice(
    images: pa.Table,
    truth: pa.Table,
    predictions: pa.Table,
    *,
    categories: list[str],
    iou_type: str = "bbox",
    score_threshold: float = 0.5,
) -> SliceMetrics:
    """Score ``predictions`` against ``truth`` on ``images``, truth outside the slice ignored.

    ``images``: ``image``, ``width``, ``height``. ``truth``: ``image``, ``category``,
    ``box_x_min`` .. ``box_y_max`` (pixel edges, max exclusive), ``mask_rle``, ``in_slice``.
    ``predictions``: ``image``, ``category``, ``score``, ``box_x``, ``box_y``, ``box_w``,
    ``box_h`` (COCO xywh), ``mask_rle``. Rows on images not in ``images``, and predictions of a
    category the truth never has, are not evaluated. ``iou_type`` ``segm`` compares masks: every
    evaluated truth object needs one; a prediction without one matches nothing.
    """
    _check(iou_type)
    with _no_cycle_collection():
        in_slice = _bools(truth["in_slice"])
        data = _prepare(
            images, truth, predictions, categories, iou_type, score_threshold, only=in_slice
        )
        spec = _Spec(
            in_slice=in_slice[data.t_rows],
            on_image=np.ones(data.n_images, bool),
            evaluated=np.unique(data.t_category[in_slice & (data.t_key_all >= 0)]),
            images=images.num_rows,
            objects=int((in_slice & (data.t_key_all >= 0)).sum()),
            predictions=predictions.num_rows,
            names=data.names,
        )
        _check_masks(data, spec)
        return _figures(data, spec, _reference(data, spec))


def evaluate_slices(
    images: pa.Table,
    truth: pa.Table,
    predictions: pa.Table,
    members: Mapping[str, np.ndarray | pa.Array | pa.ChunkedArray],
    *,
    categories: list[str],
    iou_type: str = "bbox",
    score_threshold: float = 0.5,
    workers: int | None = None,
) -> dict[str, SliceMetrics]:
    """Score many slices of one dataset, sharing what does not depend on the slice.

    ``images``, ``truth`` (without ``in_slice``) and ``predictions`` cover the whole dataset,
    columns as ``evaluate_slice`` reads them. ``members[name]`` is a boolean per truth row: the
    slice's objects. A slice's images are those holding at least one of its objects; its
    figures equal, to the bit, ``evaluate_slice`` on the tables restricted to those images
    (``is_in`` on the image ids) with ``in_slice`` the restricted membership.

    ``workers``: processes (default: the CPUs this process may use). The work is split by
    category first, then by slice where there are fewer categories than workers (see
    ``_plan``), so fewer processes run when there is less to split; inputs under
    ``_FORK_MIN`` rows run here. Workers are forked after the shared arrays are built, see
    ``_run_units`` for why that is safe.
    """
    _check(iou_type)
    with _no_cycle_collection():
        data = _prepare(images, truth, predictions, categories, iou_type, score_threshold)
        specs = _specs(data, images, truth, predictions, members)
        for spec in specs.values():
            _check_masks(data, spec)
        if data.t_key.size + data.p_key.size < _FORK_MIN:
            workers = 1  # forking would cost more than it saves
        return _evaluate_specs(data, specs, _cpus() if workers is None else max(1, workers))


def _check(iou_type: str) -> None:
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type: one of {', '.join(IOU_TYPES)} (got {iou_type!r})")


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector: an evaluation makes a dict per object (a million and
    more), none in a cycle, and the collector would walk them all again each time enough new
    ones were made (about 2 s of a 1,000,000-prediction slice). Forked workers inherit the
    pause."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class _Data:
    """What every slice shares, built once in the calling process: NumPy arrays and Python
    lists only, so that forked workers never call into Arrow (its thread pools and allocator
    belong to the caller)."""

    names: list[str]  # the given categories, then the truth's others, sorted
    n_given: int
    iou_type: str
    score_threshold: float
    n_images: int
    t_key_all: np.ndarray  # per truth row: image position x k + category, -1 if not evaluable
    t_category: np.ndarray  # per truth row: category index, -1 if null or unknown
    t_rows: np.ndarray  # evaluable truth rows by key, the given order within a key
    t_key: np.ndarray  # their keys (ascending)
    p_key: np.ndarray  # kept predictions (the top MAX_DETECTIONS per key), by key
    p_score: np.ndarray  # their scores, descending within a key (ties in the given order)
    t_boxes: np.ndarray | None = None  # bbox: COCO xywh of t_rows, of kept predictions
    p_boxes: np.ndarray | None = None
    t_masks: list[str | None] | None = None  # segm: RLE counts of t_rows, kept predictions
    p_masks: list[str | None] | None = None
    t_no_mask: np.ndarray | None = None  # segm: per t_rows entry
    sizes: np.ndarray | None = None  # segm: [image, (height, width)]

    @property
    def k(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class _Spec:
    """One slice, as positions into ``_Data``."""

    in_slice: np.ndarray  # per t_rows entry
    on_image: np.ndarray  # per image position: the slice's images
    evaluated: np.ndarray  # category indices with in-slice truth, ascending
    images: int
    objects: int
    predictions: int
    names: list[str]  # the categories its per_category reports (as evaluate_slice would)


@dataclass
class _Partial:
    """A slice's accumulated figures over some of its categories (one process's share)."""

    precision: dict[int, np.ndarray] = field(default_factory=dict)  # category: [T, R]
    recall: dict[int, np.ndarray] = field(default_factory=dict)  # category: [T]
    tp: int = 0  # strong predictions matched at IoU 0.5 to in-slice truth
    ignored: int = 0  # ... to truth outside the slice
    strong: int = 0  # predictions with score >= the threshold, evaluated

    def add(self, other: _Partial) -> None:
        self.precision |= other.precision
        self.recall |= other.recall
        self.tp += other.tp
        self.ignored += other.ignored
        self.strong += other.strong


def _prepare(
    images: pa.Table,
    truth: pa.Table,
    predictions: pa.Table,
    categories: list[str],
    iou_type: str,
    score_threshold: float,
    only: np.ndarray | None = None,
) -> _Data:
    """Positions, keys, COCO's orders and the boxes or masks: everything slice-independent.
    ``only`` (one slice's truth flags): sort and keep only the categories it evaluates."""
    given = list(dict.fromkeys(categories))
    found = [c for c in pc.unique(truth["category"]).to_pylist() if c is not None]
    names = [*given, *sorted(set(found) - set(given))]
    name_array = pa.array(names, pa.string())
    k = len(names)
    t_image = _positions(truth["image"], images["image"])
    t_category = _positions(truth["category"], name_array)
    t_key_all = np.where((t_image >= 0) & (t_category >= 0), t_image * k + t_category, -1)
    wanted = np.ones(k + 1, bool)  # by category index, the last for -1
    if only is not None:
        wanted[:] = False
        wanted[t_category[only & (t_key_all >= 0)]] = True
    # truth by (image, category), each group in the given order (COCO's annotation order)
    t_rows = np.flatnonzero((t_key_all >= 0) & wanted[t_category])
    t_rows = t_rows[np.argsort(t_key_all[t_rows], kind="stable")]
    # predictions by (image, category), then score descending with ties in the given order
    # (COCO's stable sort), at most MAX_DETECTIONS per group as COCO keeps
    p_image = _positions(predictions["image"], images["image"])
    p_category = _positions(predictions["category"], name_array)
    p_key = np.where((p_image >= 0) & (p_category >= 0), p_image * k + p_category, -1)
    score = _floats(predictions["score"])
    p_rows = np.flatnonzero((p_key >= 0) & wanted[p_category])
    p_rows = p_rows[np.argsort(-score[p_rows], kind="stable")]
    p_rows = p_rows[np.argsort(p_key[p_rows], kind="stable")]
    rank = np.arange(p_rows.size) - np.searchsorted(p_key[p_rows], p_key[p_rows], "left")
    p_rows = p_rows[rank < MAX_DETECTIONS]
    data = _Data(
        names=names,
        n_given=len(given),
        iou_type=iou_type,
        score_threshold=score_threshold,
        n_images=images.num_rows,
        t_key_all=t_key_all,
        t_category=t_category,
        t_rows=t_rows,
        t_key=t_key_all[t_rows],
        p_key=p_key[p_rows],
        p_score=score[p_rows],
    )
    if iou_type == "bbox":
        data.t_boxes = _truth_boxes(truth, t_rows)
        data.p_boxes = _prediction_boxes(predictions, p_rows)
    else:
        t_masks = truth["mask_rle"].take(pa.array(t_rows, pa.int64()))
        data.t_masks = t_masks.to_pylist()
        data.t_no_mask = _bools(t_masks.is_null())
        data.p_masks = predictions["mask_rle"].take(pa.array(p_rows, pa.int64())).to_pylist()
        data.sizes = np.stack([_floats(images["height"]), _floats(images["width"])], 1)
    return data


def _specs(
    data: _Data,
    images: pa.Table,
    truth: pa.Table,
    predictions: pa.Table,
    members: Mapping[str, np.ndarray | pa.Array | pa.ChunkedArray],
) -> dict[str, _Spec]:
    """Each slice's images, in-slice truth and counts, as ``evaluate_slice`` would see them on
    the restricted tables: images, truth and predictions whose image id is one of the slice's
    objects' (``is_in`` on the ids, so unknown ids and repeated image rows count as there)."""
    ids = pc.unique(truth["image"])
    t_code = _positions(truth["image"], ids)
    i_code = _positions(images["image"], ids)
    p_code = _positions(predictions["image"], ids)
    images_per_id = np.bincount(i_code[i_code >= 0], minlength=len(ids))
    predictions_per_id = np.bincount(p_code[p_code >= 0], minlength=len(ids))
    evaluable = data.t_key_all >= 0
    out = {}
    for name, member in members.items():
        member = _member(member, truth.num_rows, name)
        shown = np.zeros(len(ids), bool)
        shown[t_code[member & (t_code >= 0)]] = True
        rows = (t_code >= 0) & shown[np.maximum(t_code, 0)]  # the restricted truth
        present = np.unique(data.t_category[rows & (data.t_category >= data.n_given)])
        out[name] = _Spec(
            in_slice=member[data.t_rows],
            on_image=(i_code >= 0) & shown[np.maximum(i_code, 0)],
            evaluated=np.unique(data.t_category[member & evaluable]),
            images=int(images_per_id[shown].sum()),
            objects=int((member & evaluable).sum()),
            predictions=int(predictions_per_id[shown].sum()),
            names=data.names[: data.n_given] + [data.names[c] for c in present.tolist()],
        )
    return out


def _member(values: np.ndarray | pa.Array | pa.ChunkedArray, rows: int, name: str) -> np.ndarray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        values = _bools(values)
    values = np.asarray(values, bool)
    if values.shape != (rows,):
        raise ValueError(f"slice {name!r}: {values.size} membership flags for {rows} truth rows")
    return values


def _check_masks(data: _Data, spec: _Spec) -> None:
    """segm: every truth object a slice evaluates needs a mask (an error, not a silent miss)."""
    if data.t_no_mask is None or not spec.evaluated.size:
        return
    category = np.zeros(data.k, bool)
    category[spec.evaluated] = True
    scored = spec.on_image[data.t_key // data.k] & category[data.t_key % data.k]
    missing = int((scored & data.t_no_mask).sum())
    if missing:
        raise ValueError(
            f"iou_type segm: {missing} ground-truth object(s) have no mask "
            "(mask_rle NULL); evaluate them with iou_type bbox"
        )


def _evaluate_specs(data: _Data, specs: dict[str, _Spec], workers: int) -> dict[str, SliceMetrics]:
    partials = {name: _Partial() for name in specs}
    for result in _run_units(data, specs, _plan(data, specs, workers)):
        for name, partial in result.items():
            partials[name].add(partial)
    return {name: _figures(data, spec, partials[name]) for name, spec in specs.items()}


class _Groups:
    """Some categories' (image, category) groups with anything to evaluate: each group's truth
    (a range of ``t_rows`` positions) and kept predictions (a range of ``dets``), and each
    prediction's IoUs with its group's truth, flat."""

    def __init__(self, data: _Data, categories: np.ndarray) -> None:
        self.data = data
        self.categories = categories
        k = data.k
        wanted = np.zeros(k, bool)
        wanted[categories] = True
        self.dets = np.flatnonzero(wanted[data.p_key % k])  # kept predictions, by key
        truth = np.flatnonzero(wanted[data.t_key % k])
        p_key = data.p_key[self.dets]
        self.keys = np.union1d(data.t_key[truth], p_key)
        self.image, self.category = self.keys // k, self.keys % k
        self.t0 = np.searchsorted(data.t_key, self.keys, "left")
        self.t1 = np.searchsorted(data.t_key, self.keys, "right")
        self.d0 = np.searchsorted(p_key, self.keys, "left")
        self.d1 = np.searchsorted(p_key, self.keys, "right")
        self.lo = np.searchsorted(data.t_key, p_key, "left")  # each prediction's group's truth
        self.count = np.searchsorted(data.t_key, p_key, "right") - self.lo
        self.offsets = np.cumsum(self.count) - self.count  # where its IoUs start in flat
        if data.iou_type == "bbox":
            self.flat = _box_ious(data.t_boxes, data.p_boxes[self.dets], self.lo, self.count)
        else:
            self.flat = _mask_ious(data, self.dets, self.lo, self.count)
        strong = np.r_[0, np.cumsum(data.p_score[self.dets] >= data.score_threshold)]
        self.strong = strong[self.d1] - strong[self.d0]  # per group, a prefix (by score)

    def block(self, group: int, rows: int | None = None) -> list[list[float]]:
        """The group's (first ``rows``) predictions x truth IoUs, as the C++ evaluator reads
        them ([] without truth)."""
        s, e, g = int(self.d0[group]), int(self.d1[group]), int(self.t1[group] - self.t0[group])
        e = e if rows is None else s + rows
        if not g or e <= s:
            return []
        first = int(self.offsets[s])
        return self.flat[first : first + (e - s) * g].reshape(e - s, g).tolist()


def _reference(data: _Data, spec: _Spec) -> _Partial:
    """One slice by faster-coco-eval's C++ evaluator (``COCOevalEvaluateAccumulate``, as
    ``COCOeval_faster.evaluate`` calls it), fed what its ``evaluate`` would feed it: the
    stand-in areas, a dict per object, the IoUs per image and category. ``evaluate_slice``
    scores with it, and the tests hold the NumPy engine of ``evaluate_slices`` to it."""
    groups = _Groups(data, spec.evaluated)
    chosen = np.flatnonzero(spec.on_image[groups.image])
    images = np.unique(groups.image[chosen])
    cats = spec.evaluated
    slot_image = np.searchsorted(images, groups.image[chosen]).tolist()
    slot_category = np.searchsorted(cats, groups.category[chosen]).tolist()
    dt = [
        {"id": i, "score": s, "area": _AREA_PREDICTION}
        for i, s in zip((groups.dets + 1).tolist(), data.p_score[groups.dets].tolist(), strict=True)
    ]  # ids from 1, as COCO reads 0 as "unmatched": a kept prediction's position + 1
    areas = np.where(spec.in_slice, _AREA_IN, _AREA_OUT).tolist()
    gt = _dataset(
        (i, c, [{"id": t + 1, "area": areas[t]} for t in range(s, e)])
        for i, c, s, e in zip(
            groups.image[chosen].tolist(),
            groups.category[chosen].tolist(),
            groups.t0[chosen].tolist(),
            groups.t1[chosen].tolist(),
            strict=True,
        )
        if e > s
    )

    spans = zip(
        chosen.tolist(),
        groups.d0[chosen].tolist(),
        groups.d1[chosen].tolist(),
        groups.strong[chosen].tolist(),
        slot_image,
        slot_category,
        strict=True,
    )
    work = [  # (image, category, slot, the IoU block, its predictions' dicts, strong ones)
        (int(groups.image[g]), int(groups.category[g]), i, c, groups.block(g), dt[s:e], m)
        for g, s, e, m, i, c in spans
    ]

    def run(thresholds: list[float], strong: bool) -> dict:
        ious: list[list] = [[[] for _ in range(cats.size)] for _ in range(images.size)]
        entries = []
        for image, category, i, c, block, anns, m in work:
            ious[i][c] = block[:m] if strong else block
            if anns and (m or not strong):
                entries.append((image, category, anns[:m] if strong else anns))
        return coco_cpp.COCOevalEvaluateAccumulate(
            _params(thresholds, images, cats),
            ious,
            gt,
            _dataset(iter(entries)),
            images.tolist(),
            cats.tolist(),
            True,
        )

    full = run(IOU_THRESHOLDS.tolist(), strong=False)
    precision = full["precision"][:, :, :, 0, 0]  # [T, R, K]
    recall = full["recall"][:, :, 0, 0]  # [T, K]
    partial = _Partial(strong=int(groups.strong[chosen].sum()))
    for i, c in enumerate(cats.tolist()):
        partial.precision[c] = precision[:, :, i].copy()
        partial.recall[c] = recall[:, i].copy()
    # precision and recall: the matches at IoU 0.5 of the predictions scoring at least the
    # threshold. Matching is greedy by score, so they are matched before any weaker one: a
    # second run over only them (a prefix of each group) finds them all.
    if groups.strong[chosen].any():
        pairs = _pairs(run([0.5], strong=True)["matched"])
        partial.tp = int(spec.in_slice[pairs[:, 1] - 1].sum())
        partial.ignored = len(pairs) - partial.tp
    return partial


def _plan(data: _Data, specs: dict[str, _Spec], workers: int) -> list[tuple[np.ndarray, list[str]]]:
    """Units of work, one per process: (categories, slices). Categories are split first (no
    work is repeated: a category's shared matching serves all its slices in one process), by
    their predictions and truth times their slices, heaviest first onto the lightest unit.
    With fewer categories than workers the slices are split too, each unit repeating its
    categories' shared matching."""
    active = [name for name, spec in specs.items() if spec.evaluated.size]
    if not active:
        return []
    k = data.k
    uses = np.zeros(k, np.int64)
    for name in active:
        uses[specs[name].evaluated] += 1
    used = np.flatnonzero(uses)
    size = np.bincount(data.p_key % k, minlength=k) + np.bincount(data.t_key % k, minlength=k)
    n_categories = min(workers, used.size)
    n_slices = max(1, min(workers // n_categories, len(active)))
    weight = (size * (1 + uses)).tolist()
    category_units: list[list[int]] = [[] for _ in range(n_categories)]
    loads = [0] * n_categories
    for c in sorted(used.tolist(), key=lambda c: -weight[c]):
        lightest = loads.index(min(loads))
        category_units[lightest].append(c)
        loads[lightest] += weight[c]
    by_size = sorted(active, key=lambda name: -specs[name].predictions)
    slice_units = [by_size[i::n_slices] for i in range(n_slices)]
    return [
        (np.array(sorted(cats), np.int64), names)
        for cats in category_units
        for names in slice_units
    ]


_FORKED: tuple | None = None  # in a forked worker: (data, specs, units), set by _inherit


def _run_units(
    data: _Data, specs: dict[str, _Spec], units: list[tuple[np.ndarray, list[str]]]
) -> list[dict[str, _Partial]]:
    """Each unit's partial figures, the units in forked worker processes when there are
    several.

    Fork, not spawn or forkserver: the workers inherit ``data`` (tens of MB of arrays and,
    for segm, every mask string) without a copy or a pickle. It is safe here because the
    children run only NumPy (and, for segm, faster-coco-eval's single-threaded RLE code) on
    inherited memory, never Arrow, DuckDB or anything that takes a lock another thread of the
    caller may hold (a Dagster step's or a DuckDB connection's threads do not exist in the
    child, and nothing in it waits for them), and leave with ``os._exit`` (no atexit hooks, no
    finalizers of inherited objects). The 'fork' context is used for this pool only, so the
    caller's own default start method is untouched; ``ProcessPoolExecutor`` forks all its
    workers at the first submit, before it starts its own threads, and reports a killed worker
    (out of memory) as an error instead of waiting forever. Where fork is not available (not
    Linux) or this process may not have children (a daemonic worker), the units run here, one
    after another.
    """
    if len(units) <= 1 or not _can_fork():
        return [_evaluate_unit(data, specs, cats, names) for cats, names in units]
    with ProcessPoolExecutor(
        len(units),
        mp_context=multiprocessing.get_context("fork"),
        initializer=_inherit,
        initargs=(data, specs, units),  # a forked child inherits these: nothing is pickled
    ) as pool:
        return list(pool.map(_run_forked, range(len(units))))


def _can_fork() -> bool:
    return sys.platform == "linux" and not multiprocessing.current_process().daemon


def _inherit(data: _Data, specs: dict[str, _Spec], units: list) -> None:
    global _FORKED
    _FORKED = (data, specs, units)


def _run_forked(unit: int) -> dict[str, _Partial]:
    assert _FORKED is not None, "a worker without the shared data"
    data, specs, units = _FORKED
    return _evaluate_unit(data, specs, *units[unit])


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _evaluate_unit(
    data: _Data, specs: dict[str, _Spec], categories: np.ndarray, names: list[str]
) -> dict[str, _Partial]:
    unit = _Unit(data, categories)
    selections = {name: unit.select(specs[name]) for name in names}
    scored = sum(int((unit.d1[s] - unit.d0[s]).sum()) for s in selections.values())
    if sum(s.size > 0 for s in selections.values()) > 1 and scored >= _SHARE_RATIO * unit.dets.size:
        unit.share()
    return {name: unit.evaluate(specs[name], selections[name]) for name in names}


class _Unit(_Groups):
    """The NumPy engine over some categories: COCO's matching (``_match``) and accumulation
    (``_accumulate``), ported from faster-coco-eval's C++ evaluator to whole arrays.

    Nothing about a group depends on the slice except which of its truth is in the slice, and
    a group whose truth is all in the slice or all out of it is matched the same either way
    (with one kind of truth the greedy matching sees the same order); only which matches
    count differs. So ``share`` matches every group once, and a slice matches again only the
    groups it splits. The accumulation order (category, score descending, then image and
    rank, as COCO's stable sort leaves it) is sorted once too; a slice takes its part of it."""

    def __init__(self, data: _Data, categories: np.ndarray) -> None:
        super().__init__(data, categories)
        n = self.dets.size
        self.group = np.repeat(np.arange(self.keys.size), self.d1 - self.d0)  # per prediction
        self.rank = np.arange(n) - self.d0[self.group]  # its place in its group, by score
        score = data.p_score[self.dets]
        order = np.lexsort((np.arange(n), -score, self.category[self.group]))
        self.where = np.empty(n, np.int64)  # each prediction's place in accumulation order
        self.where[order] = np.arange(n)
        self.group_o = self.group[order]  # by accumulation order
        self.category_o = self.category[self.group_o]
        self.strong_o = score[order] >= data.score_threshold
        self.shared: tuple[np.ndarray, np.ndarray] | None = None  # after share()
        # the pairs that can match at all (IoU >= the lowest threshold), by prediction and
        # then truth order; most of a crowded group's pairs cannot
        pair = np.arange(self.flat.size)
        within = pair - np.repeat(self.offsets, self.count)
        viable = np.flatnonzero(self.flat >= IOU_THRESHOLDS[0])
        self.v_truth = (np.repeat(self.lo, self.count) + within)[viable]
        self.v_iou = self.flat[viable]
        self.v_count = np.bincount(np.repeat(np.arange(n), self.count)[viable], minlength=n)
        self.v_start = np.cumsum(self.v_count) - self.v_count

    def select(self, spec: _Spec) -> np.ndarray:
        """The groups a slice evaluates here: on its images, of its categories with in-slice
        truth."""
        category = np.zeros(self.data.k, bool)
        category[spec.evaluated] = True
        return np.flatnonzero(spec.on_image[self.image] & category[self.category])

    def share(self) -> None:
        """Match every prediction that can match, all truth counting alike; keep the matches
        as (threshold, place in accumulation order), sorted."""
        live = np.flatnonzero(self.v_count > 0)
        t, j = np.nonzero(self._match(live, None) >= 0)
        place = self.where[live[j]]
        order = np.lexsort((place, t))
        self.shared = t[order], place[order]

    def evaluate(self, spec: _Spec, groups: np.ndarray) -> _Partial:
        """One slice over this unit's categories: its matches (stored for the groups all in or
        all out of the slice, made now for the groups it splits, or for all when unshared) as
        true positives or ignored, at places in the slice's accumulation order."""
        cats = spec.evaluated[np.isin(spec.evaluated, self.categories)]
        if not cats.size:
            return _Partial()
        n_in = np.r_[0, np.cumsum(spec.in_slice)]
        n_in = n_in[self.t1[groups]] - n_in[self.t0[groups]]
        n_truth = self.t1[groups] - self.t0[groups]
        chosen = np.zeros(self.keys.size, bool)
        chosen[groups] = True
        taking = chosen[self.group_o]  # the slice's predictions, by accumulation order
        index = np.cumsum(taking) - 1  # their places in the slice's order
        nothing = np.zeros(0, np.int64)
        parts = [(nothing, nothing, nothing.astype(bool))]  # (t, place, counts in the slice)
        if self.shared is None:
            own = groups[n_truth > 0]
        else:
            inside = np.zeros(self.keys.size, bool)
            inside[groups] = n_in == n_truth
            split = np.zeros(self.keys.size, bool)
            split[groups] = (n_in > 0) & (n_in < n_truth)
            t, place = self.shared
            group = self.group_o[place]
            keep = taking[place] & ~split[group]
            parts.append((t[keep], place[keep], inside[group[keep]]))
            own = np.flatnonzero(split)
        if own.size:
            mine = np.zeros(self.keys.size, bool)
            mine[own] = True
            again = np.flatnonzero(mine[self.group] & (self.v_count > 0))
            match = self._match(again, ~spec.in_slice)
            t, j = np.nonzero(match >= 0)
            parts.append((t, self.where[again[j]], spec.in_slice[match[t, j]]))
        t, place, counts = (np.concatenate(p) for p in zip(*parts, strict=True))
        strong = self.strong_o[place] & (t == 0)
        partial = _Partial(
            tp=int((strong & counts).sum()),
            ignored=int((strong & ~counts).sum()),
            strong=int((self.strong_o & taking).sum()),
        )
        sizes = np.bincount(self.category_o[taking], minlength=self.data.k)
        starts = np.cumsum(sizes) - sizes  # the categories' spans in the slice's order
        valid = np.bincount(self.category[groups], weights=n_in, minlength=self.data.k)
        events = []
        for kind in (counts, ~counts):  # true positives, ignored matches
            at = np.lexsort((index[place[kind]], t[kind]))
            events.append((t[kind][at], index[place[kind]][at]))
        precision = {c: np.zeros((IOU_THRESHOLDS.size, RECALL_THRESHOLDS.size)) for c in cats}
        recall = {c: np.zeros(IOU_THRESHOLDS.size) for c in cats}
        bounds = [np.searchsorted(e[0], np.arange(IOU_THRESHOLDS.size + 1)) for e in events]
        for level in range(IOU_THRESHOLDS.size):
            hits, skips = (
                e[1][b[level] : b[level + 1]] for e, b in zip(events, bounds, strict=True)
            )
            for c in cats.tolist():
                s, e = int(starts[c]), int(starts[c] + sizes[c])
                precision[c][level], recall[c][level] = _accumulate(
                    hits[np.searchsorted(hits, s) : np.searchsorted(hits, e)] - s,
                    skips[np.searchsorted(skips, s) : np.searchsorted(skips, e)] - s,
                    e - s,
                    int(valid[c]),
                )
        partial.precision = {int(c): precision[c] for c in cats}
        partial.recall = {int(c): recall[c] for c in cats}
        return partial

    def _match(self, dets: np.ndarray, ignored: np.ndarray | None) -> np.ndarray:
        """COCO's greedy matching of predictions ``dets`` (every prediction of their groups)
        at every IoU threshold: [T, len(dets)], the matched truth's t_rows position or -1.
        ``ignored``: per t_rows position (None: nothing ignored).

        As faster-coco-eval's ``MatchDetectionsToGroundTruth``: in score order, a prediction
        takes the untaken truth of highest IoU at least the threshold, preferring truth that
        is not ignored, the last one on ties (its loop keeps ``>=``). The groups advance
        together, one rank (a prediction of each) per step; they share no truth. Only viable
        pairs take part: a pair below the lowest threshold never matches."""
        size = IOU_THRESHOLDS.size
        bar = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
        match = np.full((size, dets.size), -1, np.int64)
        live = np.flatnonzero(self.v_count[dets] > 0)  # positions in dets
        if not live.size:
            return match
        taken = np.zeros((size, self.data.t_key.size), bool)
        rank = self.rank[dets[live]]
        by_rank = live[np.argsort(rank, kind="stable")]
        edges = np.unique(np.searchsorted(np.sort(rank), np.arange(int(rank.max()) + 2)))
        for first, last in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
            step = by_rank[first:last]  # positions in dets: a rank's predictions
            count = self.v_count[dets[step]]
            starts = np.cumsum(count) - count
            total = int(starts[-1] + count[-1])
            pairs = np.repeat(self.v_start[dets[step]] - starts, count) + np.arange(total)
            truth = self.v_truth[pairs]
            iou = self.v_iou[pairs]
            can = (iou >= bar) & ~taken[:, truth]  # [T, pairs]
            segment = None
            if ignored is not None:
                segment = np.repeat(np.arange(step.size), count)
                kept = can & ~ignored[truth]
                can = np.where(np.logical_or.reduceat(kept, starts, axis=1)[:, segment], kept, can)
            if count.max() == 1:  # one viable truth each: nothing to choose between
                pick = np.where(can, np.arange(total), -1)
            else:
                segment = np.repeat(np.arange(step.size), count) if segment is None else segment
                value = np.where(can, iou, -1.0)
                best = np.maximum.reduceat(value, starts, axis=1)[:, segment]
                place = np.where(can & (value == best), np.arange(total), -1)
                pick = np.maximum.reduceat(place, starts, axis=1)  # [T, step]
            t, s = np.nonzero(pick >= 0)
            chosen = truth[pick[t, s]]
            taken[t, chosen] = True
            match[t, step[s]] = chosen
        return match


def _accumulate(
    hits: np.ndarray, skips: np.ndarray, size: int, valid: int
) -> tuple[np.ndarray, float]:
    """One category's precision at each recall threshold [R], and recall, at one IoU threshold,
    as faster-coco-eval's ``ComputePrecisionRecallCurve``, from its ``size`` predictions in
    accumulation order: ``hits`` the places of true positives, ``skips`` of ignored ones
    (sorted), the rest false positives; ``valid``: its in-slice truth.

    The C++ code takes the cumulative precision at every prediction, makes it non-increasing
    from the right and reads it at the first prediction whose recall reaches each threshold
    (0 past the end). That place is always a true positive (recall only grows there) or the
    first prediction, and past a true positive precision only falls until the next one, so
    the true positives' precisions, the same integers divided the same way, give the same
    bits."""
    precision = np.zeros(RECALL_THRESHOLDS.size)
    if not size:
        return precision, 0.0
    found = hits + 1 - np.searchsorted(skips, hits, "right")  # true and false positives so far
    curve = np.arange(1, hits.size + 1) / found
    curve = np.maximum.accumulate(curve[::-1])[::-1]
    needed = np.maximum(np.floor(RECALL_THRESHOLDS * valid).astype(np.int64) - 1, 0)
    while (short := needed / valid < RECALL_THRESHOLDS).any():
        needed += short  # the least true-positive count whose recall reaches each threshold
    reached = needed <= hits.size
    precision[reached] = curve[np.maximum(needed[reached] - 1, 0)] if hits.size else 0.0
    return precision, hits.size / valid


def _dataset(groups: Iterator[tuple[int, int, list[dict]]]) -> coco_cpp.Dataset:
    """The C++ evaluator's store of annotations by (image, category), loaded in one call."""
    entries = list(groups)
    dataset = coco_cpp.Dataset()
    dataset.load_tuple((len(entries), entries))
    return dataset


def _params(thresholds: list[float], images: np.ndarray, categories: np.ndarray) -> SimpleNamespace:
    """What the C++ evaluator reads of ``COCOeval.params``."""
    return SimpleNamespace(
        iouThrs=thresholds,
        recThrs=RECALL_THRESHOLDS.tolist(),
        maxDets=[MAX_DETECTIONS],
        areaRng=[_RANGE],
        useCats=1,
        catIds=categories.tolist(),
        imgIds=images.tolist(),
    )


def _pairs(matched: dict[str, float]) -> np.ndarray:
    """The C++ evaluator's matches, keyed "predictionid_truthid", as an [n, 2] array."""
    return np.array("_".join(matched).split("_") if matched else [], np.int64).reshape(-1, 2)


def _figures(data: _Data, spec: _Spec, partial: _Partial) -> SliceMetrics:
    per_category = dict.fromkeys(spec.names, NAN)
    counts = {"images": spec.images, "objects": spec.objects, "predictions": spec.predictions}
    if not spec.evaluated.size:
        return SliceMetrics(**counts, **dict.fromkeys(_FIGURES, NAN), per_category=per_category)
    evaluated = spec.evaluated.tolist()
    precision = np.stack([partial.precision[c] for c in evaluated], -1)  # [T, R, K]
    recall = np.stack([partial.recall[c] for c in evaluated], -1)  # [T, K]
    at75 = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.75))[0])
    for i, c in enumerate(evaluated):
        per_category[data.names[c]] = _mean(precision[:, :, i])
    tp = partial.tp
    fp = partial.strong - tp - partial.ignored
    return SliceMetrics(
        **counts,
        map=_mean(precision),
        ap50=_mean(precision[0]),
        ap75=_mean(precision[at75]),
        ar100=_mean(recall),
        precision=tp / (tp + fp) if tp + fp else NAN,
        recall=tp / spec.objects,
        per_category=per_category,
    )


_FIGURES = ("map", "ap50", "ap75", "ar100", "precision", "recall")


def _positions(values: pa.ChunkedArray | pa.Array, among: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Each value's position in ``among`` (hashed by Arrow, not looked up row by row); -1 where
    absent or null."""
    if isinstance(among, pa.ChunkedArray):
        among = among.combine_chunks()
    if values.type != among.type:  # int32 ids beside int64 ones, dictionary-encoded names
        values = pc.cast(values, among.type)
    found = pc.index_in(values, value_set=among)
    return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), np.int64)


def _bools(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), bool)


def _truth_boxes(truth: pa.Table, rows: np.ndarray) -> np.ndarray:
    """COCO xywh of truth boxes stored as pixel edges (max exclusive: width = max - min)."""
    x0, y0, x1, y1 = (
        _floats(truth[c], rows) for c in ("box_x_min", "box_y_min", "box_x_max", "box_y_max")
    )
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def _prediction_boxes(predictions: pa.Table, rows: np.ndarray) -> np.ndarray:
    return np.stack(
        [_floats(predictions[c], rows) for c in ("box_x", "box_y", "box_w", "box_h")], 1
    )


def _floats(column: pa.ChunkedArray, rows: np.ndarray | None = None) -> np.ndarray:
    values = column.to_numpy().astype(np.float64)
    return values if rows is None else values[rows]


def _box_ious(
    truth: np.ndarray, predictions: np.ndarray, lo: np.ndarray, count: np.ndarray
) -> np.ndarray:
    """Prediction i's IoU with truth lo[i] .. lo[i] + count[i] - 1, flat in prediction order,
    by COCO's formula (bbIou: 0 without overlap, union = both areas - intersection, in the same
    floating-point order). Computed in blocks of about _PAIR_CHUNK pairs, so memory stays
    bounded however crowded an image is."""
    t = _corners(truth)
    p = _corners(predictions)
    ends = np.cumsum(count)
    out = np.zeros(int(ends[-1]) if ends.size else 0)
    first = 0
    while first < count.size:
        begin = int(ends[first] - count[first])
        last = max(first + 1, int(np.searchsorted(ends, begin + _PAIR_CHUNK, "right")))
        stop = int(ends[last - 1])
        c = count[first:last]
        d = np.repeat(np.arange(first, last), c)
        g = np.arange(begin, stop) + np.repeat(lo[first:last] - (ends[first:last] - c), c)
        w = np.minimum(p[2][d], t[2][g]) - np.maximum(p[0][d], t[0][g])
        h = np.minimum(p[3][d], t[3][g]) - np.maximum(p[1][d], t[1][g])
        hit = (w > 0) & (h > 0)
        inter = w[hit] * h[hit]
        out[begin:stop][hit] = inter / (p[4][d[hit]] + t[4][g[hit]] - inter)
        first = last
    return out


def _corners(boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    """x0, y0, x0 + w, y0 + h, w * h of COCO xywh boxes, each a contiguous column."""
    x, y, w, h = (np.ascontiguousarray(boxes[:, i]) for i in range(4))
    return x, y, x + w, y + h, w * h


def _mask_ious(data: _Data, dets: np.ndarray, lo: np.ndarray, count: np.ndarray) -> np.ndarray:
    """As ``_box_ious``, for masks (predictions ``dets`` of the kept ones): faster-coco-eval's
    RLE IoU, one call per image and category (RLE intersection has no NumPy shortcut). COCO RLE
    objects are made here, size the image's [height, width]; a prediction without a mask gets
    an empty one and matches nothing."""
    assert data.t_masks is not None and data.p_masks is not None and data.sizes is not None
    out = np.zeros(int(count.sum()))
    offsets = np.cumsum(count) - count
    empty: dict[tuple[int, int], str] = {}

    def rle(counts: str | None, size: tuple[int, int]) -> dict:
        if counts is None:
            if size not in empty:
                zeros = np.zeros((*size, 1), np.uint8, order="F")
                empty[size] = coco_mask.encode(zeros)[0]["counts"].decode()
            counts = empty[size]
        return {"size": list(size), "counts": counts}

    key = data.p_key[dets]
    _, starts, ends = _groups(key)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        g, t0 = int(count[s]), int(lo[s])
        if g:
            height, width = data.sizes[key[s] // data.k]
            size = (int(height), int(width))
            truth = [rle(c, size) for c in data.t_masks[t0 : t0 + g]]
            found = [rle(data.p_masks[j], size) for j in dets[s:e].tolist()]
            block = coco_mask.iou(found, truth, [0] * g)
            out[offsets[s] : offsets[s] + (e - s) * g] = np.asarray(block).ravel()
    return out


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct values of sorted ``keys`` with where each run starts and ends."""
    if not keys.size:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], starts, np.r_[starts[1:], keys.size]


def _mean(values: np.ndarray) -> float:
    """COCO's summary: the mean over entries that exist (-1 marks a category without truth)."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else NAN
