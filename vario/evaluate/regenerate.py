"""Targeted regeneration: a batch spec for the same generator that samples the parameter
region behind a slice where a model failed.

The method (docs/evaluation.md):

1. The slice's *failing objects* are its ground-truth objects that no prediction of the same
   category found (IoU at least 0.5 and score at least the evaluation's threshold); if the
   model found them all (it failed on precision), every object of the slice counts.
2. Each job of the evaluated batch weighs as many failing objects as it holds.
3. Every numeric range of the batch's sampler narrows to the weighted 10th to 90th
   percentile of the failing jobs' values, at least a tenth of the original range wide and
   within it; a choice is kept if its weighted
   share among the failing jobs is at least its share among all jobs (the most frequent is
   always kept). A condition on a job parameter (``param_light_intensity < 0.3``) narrows
   that parameter this way directly, since every failing job satisfies it; a condition on a
   frame or object attribute (``occlusion > 0.5``) narrows whatever parameters the failing
   jobs share. Fixed parameters stay fixed.

The new spec keeps the generator, renderer, fixed parameters, shard size and template (so the
same dataset tests run on it), takes a new seed and name, and records its provenance
(evaluation, slice, model, dataset, method). It is validated like any submitted spec.
"""

from __future__ import annotations

import json
import math
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vario.batch.plan import plan
from vario.batch.spec import BatchSpec, Choices
from vario.evaluate.run import (
    EvaluationError,
    _context,
    _predictions,
    evaluation_inputs,
    find_evaluation,
    slice_members,
)
from vario.evaluate.slices import EvaluationSpec
from vario.store import sandbox
from vario.store.layout import DataStore

METHOD = "weighted 10-90 percentiles of the failing jobs' parameters (docs/evaluation.md)"
QUANTILES = (0.1, 0.9)  # the failing objects' weight, its tails cut
MIN_WIDTH = 0.1  # share of the original range a narrowed range keeps at least


def regenerate(store: DataStore, evaluation_id: str, slice_name: str, jobs: int) -> dict[str, Any]:
    """The batch spec (as data, validated) for ``jobs`` new jobs where ``slice_name`` failed."""
    inputs = evaluation_inputs(find_evaluation(store, evaluation_id))
    dataset, spec = inputs["dataset"], EvaluationSpec.model_validate(inputs["spec"])
    slices = spec.all_slices
    if slice_name not in slices:
        raise EvaluationError(f"--slice: one of {', '.join(slices)} (got {slice_name!r})")
    if dataset not in store.batches():
        raise EvaluationError(
            f"{dataset!r} is not a synthetic batch: only a batch's parameters can be regenerated"
        )
    original = store.spec(dataset)
    con = sandbox.connection(store)
    weights = _failing_jobs(con, inputs["model"], dataset, slices[slice_name], spec)
    if not weights:
        raise EvaluationError(f"slice {slice_name!r} holds no object of {dataset!r}")
    jobs_table = con.sql(  # the parameters each job was rendered with (param_* columns)
        "SELECT * FROM jobs WHERE batch = $d AND status = 'ok'", params={"d": dataset}
    ).to_arrow_table()
    data = original.model_dump(mode="json", exclude_none=True)
    data.pop("jobs", None)
    sampler = _narrowed(original, jobs_table, weights, jobs)
    for name, allowed in list(sampler["ranges"].items()):  # one value left: fixed
        single = allowed["choices"] if isinstance(allowed, dict) else sorted(set(allowed))
        if len(single) == 1 and len(sampler["ranges"]) > 1:
            value = single[0]
            data["fixed"][name] = (
                int(value) if isinstance(value, float) and value.is_integer() else value
            )
            del sampler["ranges"][name]
    data.update(
        name=_name(dataset, slice_name, evaluation_id),
        template=original.template or original.name,
        seed=int(evaluation_id[:8], 16),
        sampler=sampler,
        provenance={
            "evaluation": evaluation_id,
            "slice": slice_name,
            "model": inputs["model"],
            "dataset": dataset,
            "method": METHOD,
        },
    )
    spec = BatchSpec.model_validate(data)
    plan(spec)  # validated as a submitted spec is: every job's parameters (SpecError if not)
    return json.loads(spec.model_dump_json(exclude_none=True))


def _failing_jobs(
    con: duckdb.DuckDBPyConnection, model: str, dataset: str, condition: str, spec: EvaluationSpec
) -> dict[str, int]:
    """Failing objects per job id (step 1 and 2 of the method)."""
    images, objects = _context(con, dataset)
    member = slice_members(con, objects, {"s": condition})["s"]
    chosen = objects.filter(member)
    if not chosen.num_rows:
        return {}
    predictions = _predictions(con, model, dataset)
    predictions = predictions.filter(pc.greater_equal(predictions["score"], spec.score_threshold))
    found = _found(con, chosen, predictions)
    missed = chosen.filter(pc.invert(found)) if not pc.all(found).as_py() else chosen
    jobs, counts = np.unique(missed["job_id"].to_numpy(zero_copy_only=False), return_counts=True)
    return dict(zip(jobs.tolist(), counts.tolist(), strict=True))


def _found(con: duckdb.DuckDBPyConnection, truth: pa.Table, predictions: pa.Table) -> pa.Array:
    """Per truth row, whether a prediction of its category on its frame overlaps it with an IoU
    of at least 0.5 (boxes as [x_min, x_max) pixel edges; predictions as x, y, w, h)."""
    truth = truth.select(["image", "category", "box_x_min", "box_y_min", "box_x_max", "box_y_max"])
    truth = truth.append_column("row", pa.array(np.arange(truth.num_rows)))
    con.register("_truth", truth)
    con.register("_predictions", predictions)
    try:
        hit = con.sql(
            "WITH pairs AS (SELECT t.row, greatest(0, least(t.box_x_max, p.box_x + p.box_w) - "
            "greatest(t.box_x_min, p.box_x)) * greatest(0, least(t.box_y_max, p.box_y + p.box_h)"
            " - greatest(t.box_y_min, p.box_y)) AS inter, (t.box_x_max - t.box_x_min) * "
            "(t.box_y_max - t.box_y_min) + p.box_w * p.box_h AS total "
            "FROM _truth t JOIN _predictions p ON p.image = t.image AND p.category = t.category) "
            "SELECT DISTINCT row FROM pairs WHERE inter >= 0.5 * (total - inter)"
        ).to_arrow_table()
    finally:
        con.unregister("_truth")
        con.unregister("_predictions")
    return pc.is_in(truth["row"], hit["row"])


def _narrowed(original: BatchSpec, jobs: pa.Table, weights: dict[str, int], count: int):
    """The sampler of the new spec (step 3 of the method), from the ``jobs`` rows."""
    ids = jobs["job_id"].to_pylist()
    weight = np.array([weights.get(j, 0) for j in ids], float)
    if original.sampler is None:  # explicit jobs: sample around the values they gave
        ranges = _ranges_of_explicit(original)
        kind = "sobol"
    else:
        ranges, kind = original.sampler.ranges, original.sampler.kind
        kind = "sobol" if kind in ("grid", "stratified") else kind
    narrowed: dict[str, Any] = {}
    for name, allowed in ranges.items():
        column = f"param_{name}"
        if column not in jobs.column_names:
            narrowed[name] = allowed if not isinstance(allowed, Choices) else allowed.model_dump()
            continue
        values = jobs[column].to_pylist()
        if isinstance(allowed, Choices):
            narrowed[name] = {"choices": _kept_choices(allowed.choices, values, weight)}
        else:
            low, high = _weighted_span(np.array(values, float), weight, allowed)
            if pa.types.is_integer(jobs[column].type):  # an int parameter: whole bounds
                low, high = math.floor(low), math.ceil(high)
            narrowed[name] = [low, high]
    return {"kind": kind, "count": count, "ranges": narrowed}


def _weighted_span(values: np.ndarray, weight: np.ndarray, allowed) -> tuple[float, float]:
    """The weighted 10th and 90th percentiles of ``values``, widened about their middle to
    ``MIN_WIDTH`` of the original range if narrower (a few failing jobs must not pin a
    parameter to one value), within the original range."""
    order = np.argsort(values)
    cumulative = np.cumsum(weight[order]) / weight.sum()
    low, high = (float(values[order][np.searchsorted(cumulative, q)]) for q in QUANTILES)
    lo, hi = float(allowed[0]), float(allowed[1])
    short = MIN_WIDTH * (hi - lo) - (high - low)
    if short > 0:
        low, high = low - short / 2, high + short / 2
        low, high = (lo, lo + high - low) if low < lo else (low, high)
        low, high = (hi - (high - low), hi) if high > hi else (low, high)
    return max(lo, low), min(hi, high)


def _kept_choices(choices: list, values: list, weight: np.ndarray) -> list:
    total = weight.sum()
    share = {
        c: sum(w for v, w in zip(values, weight, strict=True) if v == c) / total for c in choices
    }
    base = {c: values.count(c) / len(values) for c in choices}
    kept = [c for c in choices if share[c] > 0 and share[c] >= base[c]]
    return kept or [max(choices, key=lambda c: share[c])]


def _ranges_of_explicit(original: BatchSpec) -> dict:
    """An explicit batch's numeric parameters that vary, as ranges over the values given."""
    ranges: dict[str, Any] = {}
    for job in original.jobs or []:
        for name, value in job.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                low, high = ranges.get(name, (value, value))
                ranges[name] = (min(low, value), max(high, value))
    return {n: r for n, r in ranges.items() if r[0] < r[1]}


def _name(dataset: str, slice_name: str, evaluation_id: str) -> str:
    return f"{dataset[:30]}-{slice_name[:20]}-{evaluation_id[:8]}"
