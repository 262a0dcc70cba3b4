"""Batch specs: what a user submits (YAML or JSON), validated with pydantic.

A spec names a generator and gives either explicit parameter sets or a sampler over ranges
and choices, plus fixed overrides, a batch seed, a shard size and the failure rate a shard
tolerates. ``vario.batch.plan`` turns a valid spec into jobs and shards.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from generators.params import FieldErrors, load_yaml_model
from generators.settings import settings

BATCH_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # safe in a path, a URL and SQL


def checked_batch(name: str) -> str:
    """``name`` if it is a batch name; anything else (from a partition key, a URL, a file)
    never reaches a path or a query."""
    if not isinstance(name, str) or not BATCH_NAME.match(name):
        raise ValueError(f"not a batch name: {str(name)[:80]!r} (expected {BATCH_NAME.pattern})")
    return name


class Choices(BaseModel):
    model_config = ConfigDict(extra="forbid")
    choices: list[Any] = Field(min_length=1)


class Sampler(BaseModel):
    """``ranges``: ``name: [low, high]`` for numbers or ``name: {choices: [...]}``.
    ``grid`` uses ``levels`` (numbers per numeric range) and every choice, ignoring ``count``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["random", "sobol", "halton", "lhs", "grid", "stratified"]
    count: int = Field(1, ge=1, description="Jobs to sample (at most VARIO_MAX_JOBS).")
    ranges: dict[str, tuple[float, float] | Choices] = Field(min_length=1)
    levels: int = Field(
        3, ge=2, le=1000, description="Grid points, or strata per numeric range, per numeric range."
    )
    strata: list[str] = Field(
        [],
        description="stratified: ranges whose level combinations "
        "get equal numbers of jobs (numeric ranges in `levels` bins).",
    )

    @model_validator(mode="after")
    def _strata(self) -> Sampler:
        if self.kind == "stratified":
            missing = [s for s in self.strata if s not in self.ranges]
            if not self.strata or missing:
                raise ValueError(f"stratified needs strata among its ranges (unknown: {missing})")
        elif self.strata:
            raise ValueError("strata only apply to kind: stratified")
        return self


class BatchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=BATCH_NAME.pattern)
    template: str | None = Field(
        None,
        description="The template it came from (default: name); "
        "its dataset tests are batch_templates/<template>.tests.yaml.",
    )
    generator: str
    renderer: Literal["tiny", "cycles"] = "tiny"
    seed: int = Field(0, ge=0, description="Batch seed: samples and per-job seeds.")
    fixed: dict[str, Any] = {}
    jobs: list[dict[str, Any]] | None = Field(None, min_length=1)
    sampler: Sampler | None = None
    shard_size: int = Field(64, ge=1, le=100_000)
    max_failure_rate: float = Field(
        0.1, ge=0, le=1, description="Share of failed jobs a shard tolerates."
    )
    provenance: dict[str, str] | None = Field(
        None,
        description="Where a generated spec came from (``vario regenerate``: the evaluation, "
        "the slice, the model, the dataset, the method).",
    )

    @model_serializer(mode="wrap")
    def _without_empty_provenance(self, handler) -> dict[str, Any]:
        """A spec without provenance serialises as before the field existed, so recorded
        batches compare equal to their resubmitted specs."""
        data = handler(self)
        if data.get("provenance") is None:
            data.pop("provenance", None)
        return data

    @model_validator(mode="after")
    def _one_source(self) -> BatchSpec:
        if (self.jobs is None) == (self.sampler is None):
            raise ValueError("give exactly one of 'jobs' (explicit) or 'sampler'")
        return self

    @model_validator(mode="after")
    def _bounded(self) -> BatchSpec:
        """The job count, known before any job is made, within ``VARIO_MAX_JOBS``."""
        limit = settings().max_jobs
        if self.job_count > limit:
            raise ValueError(
                f"{self.job_count:,} jobs, more than VARIO_MAX_JOBS allows ({limit:,})"
            )
        return self

    @property
    def job_count(self) -> int:
        if self.jobs is not None:
            return len(self.jobs)
        sampler = self.sampler
        if sampler.kind != "grid":
            return sampler.count
        sizes = [
            len(r.choices) if isinstance(r, Choices) else sampler.levels
            for r in sampler.ranges.values()
        ]
        return math.prod(sizes)

    @property
    def device(self) -> Literal["cpu", "gpu"]:
        """Where the batch's shards render: ``gpu`` when any of its jobs may ask Cycles for
        one (fixed, explicit or among a sampler's choices), so its shard runs go where a GPU
        is and count against the GPU runs the queue allows."""
        ranges = self.sampler.ranges if self.sampler else {}
        sampled = ranges.get("device")
        asked = [
            self.fixed.get("device"),
            *(job.get("device") for job in self.jobs or []),
            *(sampled.choices if isinstance(sampled, Choices) else []),
        ]
        return "gpu" if self.renderer == "cycles" and "gpu" in asked else "cpu"

    @model_validator(mode="after")
    def _renderer_once(self) -> BatchSpec:
        """The batch's renderer is set in one place: a ``renderer`` among the parameters
        would be overridden by it without a word."""
        places = [self.fixed, *(self.jobs or []), self.sampler.ranges if self.sampler else {}]
        if any("renderer" in place for place in places):
            raise ValueError(
                "set the renderer at the top level of the spec (renderer: tiny|cycles), "
                "not among the parameters"
            )
        return self


class SpecError(FieldErrors):
    """A batch spec that cannot run."""


def load_spec(path: Path) -> BatchSpec:
    return load_yaml_model(BatchSpec, path, SpecError)
