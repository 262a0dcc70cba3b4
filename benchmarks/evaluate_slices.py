"""Per-slice COCO metrics at scale: 10 slices of 10,000 images, 100,000 ground-truth objects and
1,000,000 predictions (issue 13's target: under 10 s on 2 cores), scored with
``vario.evaluate.metrics.evaluate_slices``, against ``evaluate_slice`` per slice and
pycocotools' COCOeval on the same work.

    uv run python benchmarks/evaluate_slices.py [--images 10000] [--workers 2]

The data is synthetic and built in memory (seeded NumPy): boxes on 640 x 480 images in 10
categories; predictions are jittered copies of the truth (about 8 per detected object, 10 % of
objects missed, 5 % of copies given a wrong category) plus random false positives. The slices
are 3 COCO box sizes, 4 categories and 3 random attributes, as membership masks over the truth.
``evaluate_slices`` scores all 10 at once over the whole dataset (``--workers`` processes, by
default one per CPU this process may use; then once more in this process alone). For
comparison each slice is then cut as it was before (the images holding at least one of its
objects, all their truth, outside the slice ignored, and the predictions on them) and scored by
``evaluate_slice`` (faster-coco-eval's C++ evaluator) one after another and in ``--pool``
forked processes; the two engines' figures must be equal to the bit. pycocotools is slow, so
it runs on the first ``--compare-images`` images of the first slice only, beside both engines
and faster-coco-eval's own ``COCO`` / ``loadRes`` / ``COCOeval_faster`` path on exactly that
subsample. Peak resident memory is printed after ``evaluate_slices`` and at the end, for this
process and its largest child.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import multiprocessing
import os
import resource
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vario.evaluate.metrics import MAX_DETECTIONS, SliceMetrics, evaluate_slice, evaluate_slices

CATEGORIES = [f"class_{i}" for i in range(10)]
WIDTH, HEIGHT = 640, 480
TARGET = 10.0  # seconds for the 10 slices (issue 13, on 2 cores)


def synthetic(images: int, objects: int, predictions: int, seed: int = 0) -> tuple:
    """(images, truth, predictions) tables as ``evaluate_slice`` reads them, truth with the
    columns the slices select on (``area``, ``lighting``, ``occluded``, ``weather``)."""
    rng = np.random.default_rng(seed)
    image = np.sort(rng.integers(0, images, objects))
    category = rng.integers(0, len(CATEGORIES), objects)
    w = np.clip(rng.lognormal(3.7, 0.8, objects), 4, WIDTH - 1).astype(np.int64)
    h = np.clip(w * rng.uniform(0.5, 1.5, objects), 4, HEIGHT - 1).astype(np.int64)
    x = (rng.random(objects) * (WIDTH - w)).astype(np.int64)
    y = (rng.random(objects) * (HEIGHT - h)).astype(np.int64)
    names = pa.array(CATEGORIES).take(pa.array(category))
    truth = pa.table(
        {
            "image": image,
            "category": names,
            "box_x_min": x,
            "box_y_min": y,
            "box_x_max": x + w,
            "box_y_max": y + h,
            "visible_pixels": w * h,
            "mask_rle": pa.nulls(objects, pa.string()),
            "lighting": pa.array(np.array(["dim", "bright"])[rng.integers(0, 2, objects)]),
            "occluded": rng.random(objects) < 0.3,
            "weather": pa.array(np.array(["rain", "sun", "fog"])[rng.integers(0, 3, objects)]),
        }
    )
    # jittered copies of detected objects, then random false positives to the total
    detected = np.flatnonzero(rng.random(objects) >= 0.10)
    copies = rng.poisson(8, detected.size)
    copies = np.minimum(copies, 3 * 8)
    source = np.repeat(detected, copies)[: int(predictions * 0.85)]
    rank = np.arange(source.size) - np.repeat(np.cumsum(copies) - copies, copies)[: source.size]
    noise = 0.04 + 0.06 * np.minimum(rank, 6)  # the first copy is tight, later ones looser
    jitter = rng.normal(0.0, 1.0, (source.size, 4)) * noise[:, None]
    bw, bh = w[source] * np.exp(jitter[:, 2]), h[source] * np.exp(jitter[:, 3])
    bx = x[source] + w[source] * jitter[:, 0]
    by = y[source] + h[source] * jitter[:, 1]
    score = np.clip(rng.beta(5, 2, source.size) * np.exp(-0.15 * rank), 0.0, 1.0)
    wrong = rng.random(source.size) < 0.05
    p_category = np.where(wrong, rng.integers(0, len(CATEGORIES), source.size), category[source])
    fp = predictions - source.size
    fw = np.clip(rng.lognormal(3.5, 0.8, fp), 4, WIDTH - 1)
    fh = np.clip(fw * rng.uniform(0.5, 1.5, fp), 4, HEIGHT - 1)
    predictions_table = pa.table(
        {
            "image": np.concatenate([image[source], rng.integers(0, images, fp)]),
            "category": pa.array(CATEGORIES).take(
                pa.array(np.concatenate([p_category, rng.integers(0, len(CATEGORIES), fp)]))
            ),
            "score": np.concatenate([score, rng.beta(2, 5, fp)]),
            "box_x": np.concatenate([bx, rng.random(fp) * (WIDTH - fw)]),
            "box_y": np.concatenate([by, rng.random(fp) * (HEIGHT - fh)]),
            "box_w": np.concatenate([bw, fw]),
            "box_h": np.concatenate([bh, fh]),
            "mask_rle": pa.nulls(predictions, pa.string()),
        }
    )
    images_table = pa.table(
        {
            "image": np.arange(images, dtype=np.int64),
            "width": np.full(images, WIDTH),
            "height": np.full(images, HEIGHT),
        }
    )
    return images_table, truth, predictions_table


def slices(truth: pa.Table) -> dict[str, np.ndarray]:
    """10 slices as membership masks over the truth rows."""
    category = truth["category"]
    area = (pc.subtract(truth["box_x_max"], truth["box_x_min"])).to_numpy() * (
        pc.subtract(truth["box_y_max"], truth["box_y_min"])
    ).to_numpy()
    out = {
        "small": area < 32**2,
        "medium": (area >= 32**2) & (area < 96**2),
        "large": area >= 96**2,
    }
    out |= {f"category={c}": pc.equal(category, c).to_numpy() for c in CATEGORIES[:4]}
    out |= {
        "lighting=dim": pc.equal(truth["lighting"], "dim").to_numpy(),
        "occluded": truth["occluded"].to_numpy(),
        "weather=fog": pc.equal(truth["weather"], "fog").to_numpy(),
    }
    return out


def slice_inputs(images: pa.Table, truth: pa.Table, predictions: pa.Table, member: np.ndarray):
    """The slice's images (those holding one of its objects), all their truth with
    ``in_slice``, and the predictions on them: what Vario's evaluation hands evaluate_slice."""
    shown = pc.unique(truth["image"].filter(pa.array(member)))
    on = pc.is_in(truth["image"], shown)
    return (
        images.filter(pc.is_in(images["image"], shown)),
        truth.filter(on).append_column("in_slice", pa.array(member).filter(on)),
        predictions.filter(pc.is_in(predictions["image"], shown)),
    )


def _coco_dicts(images: pa.Table, truth: pa.Table, predictions: pa.Table) -> tuple[dict, list]:
    """The same slice as COCO JSON objects: truth area is the stand-in area (1 in the slice,
    4 outside) that an area range [0.5, 2] turns into COCO's ignore."""
    x0, y0 = truth["box_x_min"].to_numpy(), truth["box_y_min"].to_numpy()
    w, h = truth["box_x_max"].to_numpy() - x0, truth["box_y_max"].to_numpy() - y0
    cat = {c: i + 1 for i, c in enumerate(CATEGORIES)}
    gt = {
        "images": [
            {"id": int(i), "width": WIDTH, "height": HEIGHT} for i in images["image"].to_pylist()
        ],
        "categories": [{"id": i, "name": c} for c, i in cat.items()],
        "annotations": [
            {
                "id": n + 1,
                "image_id": int(im),
                "category_id": cat[c],
                "bbox": [float(a), float(b), float(cw), float(ch)],
                "area": 1.0 if s else 4.0,
                "iscrowd": 0,
            }
            for n, (im, c, a, b, cw, ch, s) in enumerate(
                zip(
                    truth["image"].to_pylist(),
                    truth["category"].to_pylist(),
                    x0.tolist(),
                    y0.tolist(),
                    w.tolist(),
                    h.tolist(),
                    truth["in_slice"].to_pylist(),
                    strict=True,
                )
            )
        ],
    }
    dt = [
        {"image_id": int(r["image"]), "category_id": cat[r["category"]], "score": r["score"]}
        | {"bbox": [r["box_x"], r["box_y"], r["box_w"], r["box_h"]]}
        for r in predictions.select(["image", "category", "score", *_XYWH]).to_pylist()
    ]
    return gt, dt


_XYWH = ("box_x", "box_y", "box_w", "box_h")
_EDGES = ("box_x_min", "box_y_min", "box_x_max", "box_y_max")


def coco_figures(module: str, gt: dict, dt: list) -> tuple[float, float]:
    """(AP@[.5:.95], AP50) of one slice by a COCO toolkit's own path (JSON-like objects,
    loadRes, evaluate, accumulate): truth outside the slice ignored by the area range, the
    predictions' areas set inside it after loadRes."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        if module == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            coco = COCO()
            coco.dataset = gt
            coco.createIndex()
            results = coco.loadRes(dt)
            evaluator = COCOeval(coco, results, "bbox")
        else:
            from faster_coco_eval import COCO, COCOeval_faster

            coco = COCO(gt)
            results = coco.loadRes(dt)
            evaluator = COCOeval_faster(coco, results, "bbox", print_function=lambda *a: None)
        for ann in results.anns.values():
            ann["area"] = 1.0
        evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0.5, 2.0]], ["slice"]
        evaluator.params.maxDets = [MAX_DETECTIONS]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]
    return float(precision[precision > -1].mean()), float(precision[0][precision[0] > -1].mean())


_DATA: dict = {}  # the tables and slices, inherited by forked workers


def _one_slice(name: str) -> tuple[str, SliceMetrics, float]:
    """Cut one slice's inputs as Vario's evaluation did, then time evaluate_slice on them."""
    inputs = slice_inputs(_DATA["images"], _DATA["truth"], _DATA["predictions"], _DATA[name])
    began = time.perf_counter()
    metrics = evaluate_slice(*inputs, categories=CATEGORIES)
    return name, metrics, time.perf_counter() - began


def _figures(m: SliceMetrics) -> tuple:
    """Every figure, NaN made comparable, for an exact comparison of two engines."""
    values = (m.images, m.objects, m.predictions, m.map, m.ap50, m.ap75, m.ar100, m.precision)
    values += (m.recall, *m.per_category.items())
    return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in values)


def _peak() -> str:
    """Peak resident memory of this process and of its largest child so far (forked workers
    share the parent's pages copy-on-write, so the two overlap)."""
    self_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return f"{self_mib:,.0f} MiB, largest worker {child_mib:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--compare-images", type=int, default=1000)
    parser.add_argument(
        "--workers", type=int, default=None, help="evaluate_slices' processes (default: CPUs)"
    )
    parser.add_argument(
        "--pool", type=int, default=2, help="processes for the evaluate_slice-per-slice run"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    images, truth, predictions = synthetic(args.images, args.objects, args.predictions)
    members = slices(truth)
    _DATA.update(members, images=images, truth=truth, predictions=predictions)
    print(
        f"data: {images.num_rows:,} images, {truth.num_rows:,} objects, "
        f"{predictions.num_rows:,} predictions ({time.perf_counter() - started:.1f} s to build),"
        f" {len(os.sched_getaffinity(0))} CPUs"
    )
    truth_only = truth.select(["image", "category", *_EDGES, "visible_pixels", "mask_rle"])
    began = time.perf_counter()
    batch = evaluate_slices(
        images, truth_only, predictions, members, categories=CATEGORIES, workers=args.workers
    )
    wall = time.perf_counter() - began
    workers = args.workers or len(os.sched_getaffinity(0))
    label = f"evaluate_slices, {len(members)} slices, {workers} worker(s)"
    print(f"{label}: {wall:.2f} s {_verdict(wall)}")
    print(f"  peak resident memory: {_peak()}")
    began = time.perf_counter()
    evaluate_slices(images, truth_only, predictions, members, categories=CATEGORIES, workers=1)
    print(f"evaluate_slices in this process alone: {time.perf_counter() - began:.2f} s")

    print(
        f"\n{'slice':<16}{'images':>7}{'objects':>8}{'preds':>10}{'map':>7}{'ap50':>7}"
        f"{'prec':>7}{'rec':>7}{'evaluate_slice s':>17}  same"
    )
    total, same = 0.0, 0
    for name in members:
        _, m, seconds = _one_slice(name)
        total += seconds
        agree = _figures(m) == _figures(batch[name])
        same += agree
        print(
            f"{name:<16}{m.images:>7,}{m.objects:>8,}{m.predictions:>10,}{m.map:>7.3f}"
            f"{m.ap50:>7.3f}{m.precision:>7.3f}{m.recall:>7.3f}{seconds:>17.2f}  {agree}"
        )
    print(
        f"evaluate_slices' figures equal evaluate_slice's (C++) to the bit on {same} of "
        f"{len(members)} slices"
    )
    print(f"evaluate_slice on each slice, one after another: {total:.1f} s {_verdict(total)}")
    if args.pool > 1:
        began = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(args.pool) as pool:
            pool.map(_one_slice, list(members), chunksize=1)
        wall = time.perf_counter() - began
        print(
            f"evaluate_slice on each slice in {args.pool} forked processes (slice cutting "
            f"included): {wall:.1f} s {_verdict(wall)}"
        )

    first = next(iter(members))
    sub_images, sub_truth, sub_predictions = slice_inputs(
        images, truth, predictions, members[first]
    )
    keep = pc.unique(sub_images["image"]).slice(0, args.compare_images)
    sub = (
        sub_images.filter(pc.is_in(sub_images["image"], keep)),
        sub_truth.filter(pc.is_in(sub_truth["image"], keep)),
        sub_predictions.filter(pc.is_in(sub_predictions["image"], keep)),
    )
    print(
        f"\nthe same work four ways: slice {first!r} on its first {sub[0].num_rows:,} images "
        f"({sub[1].num_rows:,} objects, {sub[2].num_rows:,} predictions); pycocotools is too "
        "slow to run on all 10 slices"
    )
    began = time.perf_counter()
    m = evaluate_slice(*sub, categories=CATEGORIES)
    timings = {"evaluate_slice": ((m.map, m.ap50), time.perf_counter() - began)}
    began = time.perf_counter()
    m = evaluate_slices(
        sub[0],
        sub[1].drop_columns(["in_slice"]),
        sub[2],
        {first: sub[1]["in_slice"]},
        categories=CATEGORIES,
        workers=1,
    )[first]
    timings["evaluate_slices"] = ((m.map, m.ap50), time.perf_counter() - began)
    for module in ("faster_coco_eval", "pycocotools"):
        began = time.perf_counter()
        gt, dt = _coco_dicts(*sub)  # from the same tables: building the JSON objects counts
        figures = coco_figures(module, gt, dt)
        timings[module] = (figures, time.perf_counter() - began)
    base = timings["evaluate_slice"][1]
    for tool, ((ap, ap50), seconds) in timings.items():
        label = "COCO + COCOeval_faster" if tool == "faster_coco_eval" else tool
        print(
            f"  {label:<24} map {ap:.6f}  ap50 {ap50:.6f}  {seconds:6.2f} s"
            f"  ({seconds / base:5.1f} x evaluate_slice)"
        )
    print(f"peak resident memory, everything included: {_peak()}")


def _verdict(seconds: float) -> str:
    if seconds <= TARGET:
        return f"(target {TARGET:.0f} s: met)"
    return f"(target {TARGET:.0f} s: missed by {seconds - TARGET:.1f} s, {seconds / TARGET:.1f} x)"


if __name__ == "__main__":
    main()
