"""Evaluate a model's predictions on a dataset (a batch or a real dataset) slice by slice, run
the model tests, and record everything as Parquet beside the data.

Every slice is evaluated over the frames that hold at least one of its objects, with all of
those frames' ground truth: objects outside the slice are ignored, and so are predictions
matched to them (COCO's area-range convention, docs/evaluation.md); predictions matching
nothing on those frames are false positives. The slice conditions run on the query
sandbox's connection as parsed expressions (``duckdb.SQLExpression``), never as SQL text.

An evaluation is identified by its inputs (model, dataset, the predictions' version, the
dataset's tables, the spec): the same inputs again find the recorded evaluation and compute
nothing. It is written under a temporary name and renamed once whole::

    evaluations/model=M/dataset=D/evaluation=ID/metrics.parquet   one row per slice x metric
    evaluations/model=M/dataset=D/evaluation=ID/tests.parquet     one row per model test
    evaluations/model=M/dataset=D/evaluation=ID/evaluation.json   inputs, spec, summary
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from generators.scene.catalog import default_catalog
from vario.batch.spec import checked_batch
from vario.evaluate.metrics import SliceMetrics, evaluate_slices
from vario.evaluate.slices import METRICS, EvaluationSpec
from vario.store import sandbox
from vario.store.layout import DataStore

_TRUTH = ("category", "box_x_min", "box_y_min", "box_x_max", "box_y_max", "visible_pixels")
_PREDICTION = ("category", "score", "box_x", "box_y", "box_w", "box_h", "mask_rle")


class EvaluationError(ValueError):
    """An evaluation that cannot run (no such dataset, no predictions, a bad slice)."""


@dataclass(frozen=True)
class TestOutcome:
    name: str
    slice: str
    metric: str
    op: str
    threshold: float
    value: float
    passed: bool
    severity: str

    @property
    def blocks(self) -> bool:
        return not self.passed and self.severity == "ERROR"


@dataclass(frozen=True)
class Evaluation:
    id: str
    model: str
    dataset: str
    folder: Path
    metrics: dict[str, SliceMetrics]  # by slice
    tests: list[TestOutcome]
    up_to_date: bool = False  # recorded already: nothing was computed

    @property
    def passed(self) -> bool:
        """No ERROR test failed."""
        return not any(t.blocks for t in self.tests)


def evaluations_dir(store: DataStore, model: str, dataset: str) -> Path:
    return store.root / "evaluations" / f"model={checked_batch(model)}" / f"dataset={dataset}"


def recorded_evaluations(
    store: DataStore, model: str = "*", dataset: str = "*", evaluation_id: str = "*"
) -> list[Path]:
    """The folders of the recorded evaluations (of ``model`` on ``dataset``, or every one),
    oldest first."""
    pattern = f"model={model}/dataset={dataset}/evaluation={evaluation_id}/evaluation.json"
    found = (store.root / "evaluations").glob(pattern)
    return [p.parent for p in sorted(found, key=lambda p: p.stat().st_mtime)]


def find_evaluation(store: DataStore, evaluation_id: str) -> Path:
    """The folder of evaluation ``evaluation_id`` (16 hex digits), whatever model and dataset."""
    if not (len(evaluation_id) == 16 and all(c in "0123456789abcdef" for c in evaluation_id)):
        raise EvaluationError(f"--evaluation: 16 hex digits (got {evaluation_id[:40]!r})")
    found = recorded_evaluations(store, evaluation_id=evaluation_id)
    if not found:
        raise EvaluationError(f"no evaluation {evaluation_id} in {store.root}")
    return found[0]


def evaluate_model(store: DataStore, model: str, dataset: str, spec: EvaluationSpec) -> Evaluation:
    """Evaluate ``model``'s current predictions on ``dataset`` for every slice of ``spec``."""
    checked_batch(model), checked_batch(dataset)
    con = sandbox.connection(store)
    version = _predictions_version(con, model, dataset)
    inputs = {
        "model": model,
        "dataset": dataset,
        "predictions_version": version,
        "dataset_digest": _dataset_digest(con, dataset),
        "spec": spec.model_dump(mode="json"),
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    folder = evaluations_dir(store, model, dataset) / f"evaluation={digest}"
    if (folder / "evaluation.json").exists():
        return read_evaluation(folder, up_to_date=True)
    images, objects = _context(con, dataset)
    slices = spec.all_slices
    members = slice_members(con, objects, slices)
    truth = objects.select(["image", *_TRUTH, "mask_rle"])
    predictions = _predictions(con, model, dataset)
    metrics = evaluate_slices(
        images.select(["image", "width", "height"]),
        truth,
        predictions,
        members,
        categories=default_catalog().categories(),
        iou_type=spec.iou_type,
        score_threshold=spec.score_threshold,
    )
    tests = [
        TestOutcome(
            t.name,
            t.slice,
            t.metric,
            t.op,
            t.threshold,
            (value := float(getattr(metrics[t.slice], t.metric))),
            t.passes(value),
            t.severity,
        )
        for t in spec.model_tests
    ]
    evaluation = Evaluation(digest, model, dataset, folder, metrics, tests)
    _write(evaluation, inputs)
    return evaluation


def _predictions_version(con: duckdb.DuckDBPyConnection, model: str, dataset: str) -> str:
    if not con.execute("SELECT count(*) FROM frames WHERE batch = $d", {"d": dataset}).fetchone()[
        0
    ]:
        raise EvaluationError(f"no dataset {dataset!r}: no batch or real dataset has frames")
    found = con.execute(
        "SELECT DISTINCT version FROM predictions WHERE model = $m AND dataset = $d",
        {"m": model, "d": dataset},
    ).fetchall()
    if not found:
        raise EvaluationError(
            f"no predictions of model {model!r} on {dataset!r}: "
            f"vario ingest predictions {model} {dataset} FILE"
        )
    return found[0][0]


def _dataset_digest(con: duckdb.DuckDBPyConnection, dataset: str) -> str:
    """A digest of the dataset's ground truth as the views show it now (a re-rendered shard or a
    new real version changes it)."""
    rows = con.execute(
        "SELECT count(*), coalesce(sum(hash(job_id, frame, instance_id, category, box_x_min, "
        "box_y_min, box_x_max, box_y_max, mask_rle)), 0) FROM objects WHERE batch = $d",
        {"d": dataset},
    ).fetchone()
    frames = con.execute(
        "SELECT count(*), coalesce(sum(hash(job_id, frame)), 0) FROM frames WHERE batch = $d",
        {"d": dataset},
    ).fetchone()
    return hashlib.sha256(json.dumps([*rows, *frames], default=str).encode()).hexdigest()[:16]


_IMAGES = (
    "WITH i AS (SELECT job_id, frame, width, height, "
    "row_number() OVER (ORDER BY job_id, frame) AS image FROM frames WHERE batch = $d) "
)


def _context(con: duckdb.DuckDBPyConnection, dataset: str) -> tuple[pa.Table, pa.Table]:
    """The dataset's frames (``image``: the frame's number in (job_id, frame) order,
    ``width``, ``height``, ``job_id``, ``frame``) and one row per ground-truth object with its
    frame's and its job's columns beside it (a column of frames or jobs that objects has
    already is the object's): what slice conditions read."""
    have = set(_columns(con, "objects"))
    frame_columns = [c for c in _columns(con, "frames") if c not in have]
    have |= set(frame_columns)
    job_columns = [c for c in _columns(con, "jobs") if c not in have]
    select = ", ".join(
        ["o.*", "i.image"] + [f'f."{c}"' for c in frame_columns] + [f'j."{c}"' for c in job_columns]
    )
    objects = con.sql(
        f"{_IMAGES} SELECT {select} FROM objects o "
        "JOIN frames f ON f.batch = o.batch AND f.job_id = o.job_id AND f.frame = o.frame "
        "JOIN i ON i.job_id = o.job_id AND i.frame = o.frame "
        "LEFT JOIN jobs j ON j.batch = o.batch AND j.job_id = o.job_id "
        "WHERE o.batch = $d ORDER BY i.image, o.instance_id",
        params={"d": dataset},
    ).to_arrow_table()
    images = con.sql(
        f"{_IMAGES} SELECT image, width, height, job_id, frame FROM i ORDER BY image",
        params={"d": dataset},
    ).to_arrow_table()
    return images, objects


def _columns(con: duckdb.DuckDBPyConnection, view: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE {view}").fetchall()]


def slice_members(
    con: duckdb.DuckDBPyConnection, objects: pa.Table, slices: dict[str, str]
) -> dict[str, pa.BooleanArray]:
    """Per slice, which rows of ``objects`` it holds (a condition that is NULL for a row, such
    as ``occlusion > 0.5`` on real data without occlusion, does not hold it)."""
    relation = con.from_arrow(objects)
    members = {}
    for name, condition in slices.items():
        expression = duckdb.CoalesceOperator(
            duckdb.SQLExpression(condition), duckdb.ConstantExpression(False)
        )
        try:
            column = relation.select(expression.alias("member")).to_arrow_table()["member"]
        except duckdb.Error as exc:
            reason = str(exc).splitlines()[0]
            raise EvaluationError(f"slice {name!r}: {reason}") from None
        members[name] = pc.cast(column.combine_chunks(), pa.bool_())
    return members


def _predictions(con: duckdb.DuckDBPyConnection, model: str, dataset: str) -> pa.Table:
    """The model's current predictions on the dataset, each with its frame's ``image``."""
    columns = ", ".join(f"p.{c}" for c in _PREDICTION)
    return con.sql(
        f"{_IMAGES} SELECT i.image, {columns} FROM predictions p "
        "JOIN i ON i.job_id = p.job_id AND i.frame = p.frame "
        "WHERE p.model = $m AND p.dataset = $d",
        params={"m": model, "d": dataset},
    ).to_arrow_table()


def _write(evaluation: Evaluation, inputs: dict) -> None:
    """The evaluation's three files, in a temporary folder renamed once whole."""
    folder = evaluation.folder
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    ids = {"evaluation": evaluation.id, "model": evaluation.model, "dataset": evaluation.dataset}
    try:
        rows = []
        for name, m in evaluation.metrics.items():
            figures = {**{k: getattr(m, k) for k in METRICS}}
            figures |= {f"ap[{c}]": v for c, v in m.per_category.items()}
            for metric, value in figures.items():
                category = metric[3:-1] if metric.startswith("ap[") else None
                rows.append(
                    {
                        **ids,
                        "slice": name,
                        "metric": "ap" if category else metric,
                        "category": category,
                        "value": float(value),
                        "images": m.images,
                        "objects": m.objects,
                        "predictions": m.predictions,
                        "created": created,
                    }
                )
        pq.write_table(pa.Table.from_pylist(rows, _METRICS_SCHEMA), partial / "metrics.parquet")
        tests = [{**ids, **t.__dict__, "created": created} for t in evaluation.tests]
        pq.write_table(pa.Table.from_pylist(tests, _TESTS_SCHEMA), partial / "tests.parquet")
        summary = {
            "id": evaluation.id,
            "created": created,
            "inputs": inputs,
            "passed": evaluation.passed,
            "metrics": {name: m.__dict__ for name, m in evaluation.metrics.items()},
            "tests": [t.__dict__ for t in evaluation.tests],
        }
        (partial / "evaluation.json").write_text(json.dumps(summary, indent=2, default=_plain))
        try:
            os.replace(partial, folder)
        except OSError:  # another process recorded the same evaluation first: the same bytes
            if not (folder / "evaluation.json").exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def read_evaluation(folder: Path, *, up_to_date: bool = False) -> Evaluation:
    """A recorded evaluation, as ``evaluate_model`` returned it."""
    summary = json.loads((folder / "evaluation.json").read_text())
    inputs = summary["inputs"]
    return Evaluation(
        summary["id"],
        inputs["model"],
        inputs["dataset"],
        folder,
        {name: SliceMetrics(**m) for name, m in summary["metrics"].items()},
        [TestOutcome(**t) for t in summary["tests"]],
        up_to_date,
    )


def evaluation_inputs(folder: Path) -> dict:
    return json.loads((folder / "evaluation.json").read_text())["inputs"]


_IDS = [("evaluation", pa.string()), ("model", pa.string()), ("dataset", pa.string())]
_METRICS_SCHEMA = pa.schema(
    _IDS
    + [("slice", pa.string()), ("metric", pa.string()), ("category", pa.string())]
    + [("value", pa.float64())]
    + [(n, pa.int64()) for n in ("images", "objects", "predictions")]
    + [("created", pa.string())]
)
_TESTS_SCHEMA = pa.schema(
    _IDS
    + [(n, pa.string()) for n in ("name", "slice", "metric", "op")]
    + [("threshold", pa.float64()), ("value", pa.float64()), ("passed", pa.bool_())]
    + [("severity", pa.string()), ("created", pa.string())]
)
