"""Slices and model unit tests: what a user writes in YAML to say where a model must work.

A slice is a named SQL condition, as after ``WHERE``, over one row per ground-truth object
with its frame's and its job's columns beside it (``category``, ``occlusion``,
``brightness``, ``param_light_intensity``...; docs/evaluation.md lists them). A model test
holds a metric of a slice against a threshold, with a severity: an ``ERROR`` test that fails
blocks a release.

    iou_type: bbox              # or segm
    score_threshold: 0.5        # for precision and recall
    slices:
      occluded: occlusion > 0.5
      mugs: category = 'mug'
    model_tests:
      - {slice: all, metric: ap50, op: ">=", threshold: 0.8}
      - {slice: occluded, metric: recall, op: ">=", threshold: 0.6, severity: WARN}

``all`` is every object, always defined. Each condition is checked to be one SQL expression
here and run only on the query sandbox's connection.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from generators.params import FieldErrors, load_yaml_model
from vario.store.layout import DataStore

METRICS = ("map", "ap50", "ap75", "ar100", "precision", "recall")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
SLICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
MAX_CONDITION = 2000  # characters: a slice is a condition, not a program
MAX_SLICES = 100
ALL = "all"


class SpecError(FieldErrors):
    """A slices file that cannot be used; one message per bad field."""


class ModelTest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slice: str
    metric: Literal["map", "ap50", "ap75", "ar100", "precision", "recall"]
    op: Literal[">=", ">", "<=", "<"] = ">="
    threshold: float = Field(ge=0, le=1)
    severity: Literal["ERROR", "WARN"] = "ERROR"

    @property
    def name(self) -> str:
        return f"{self.slice}.{self.metric} {self.op} {self.threshold:g}"

    def passes(self, value: float) -> bool:
        """NaN (no ground truth in the slice) never passes: a test of nothing proves nothing."""
        return value == value and OPERATORS[self.op](value, self.threshold)


class EvaluationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    iou_type: Literal["bbox", "segm"] = "bbox"
    score_threshold: float = Field(0.5, ge=0, le=1)
    slices: dict[str, str] = Field({}, max_length=MAX_SLICES)
    model_tests: list[ModelTest] = Field([], max_length=1000)

    @field_validator("slices")
    @classmethod
    def _conditions(cls, slices: dict[str, str]) -> dict[str, str]:
        for name, condition in slices.items():
            if not SLICE_NAME.match(name) or name == ALL:
                raise ValueError(f"{name!r}: a slice name is [a-z0-9_], at most 64, not 'all'")
            check_condition(condition, f"slice {name!r}")
        return slices

    @model_validator(mode="after")
    def _known_slices(self) -> EvaluationSpec:
        unknown = sorted({t.slice for t in self.model_tests} - set(self.all_slices))
        if unknown:
            raise ValueError(f"model_tests name unknown slices {unknown}")
        return self

    @property
    def all_slices(self) -> dict[str, str]:
        """Every slice, ``all`` first."""
        return {ALL: "TRUE", **self.slices}


def check_condition(condition: str, what: str) -> None:
    """``condition`` is one SQL expression of bounded length (``1) OR (1`` and ``; DROP`` are
    not); its columns are checked when it runs."""
    if not isinstance(condition, str) or not condition.strip():
        raise ValueError(f"{what}: an SQL condition, as after WHERE")
    if len(condition) > MAX_CONDITION:
        raise ValueError(f"{what}: at most {MAX_CONDITION} characters")
    try:
        duckdb.SQLExpression(condition)
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0]
        raise ValueError(f"{what}: not one SQL expression ({reason})") from None


def load_spec(path: Path) -> EvaluationSpec:
    return load_yaml_model(EvaluationSpec, Path(path), SpecError)


def dataset_spec(store: DataStore, templates: Path, dataset: str) -> EvaluationSpec:
    """The dataset's model tests, ``<templates>/<template>.model_tests.yaml`` (a batch's
    template, or a real dataset's name), or only the ``all`` slice if there is none."""
    template = dataset
    if dataset in store.batches():
        template = store.spec(dataset).template or dataset
    path = Path(templates) / f"{template}.model_tests.yaml"
    return load_spec(path) if path.exists() else EvaluationSpec()
