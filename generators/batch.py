"""Batches: a spec (YAML or JSON, validated with pydantic) planned into jobs and shards.

A spec names a generator and gives either explicit parameter sets or a sampler over ranges
and choices, plus fixed overrides and a batch seed. Planning validates every job against the
generator's parameter model, so an invalid batch is refused before anything runs. Jobs are
grouped into shards of ``shard_size``: a shard is the unit Dagster partitions and runs.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.stats import qmc

from generators import registry
from generators.job import make_job_id
from generators.params import (
    FieldErrors,
    ParameterError,
    field_schemas,
    load_yaml_model,
    validate,
)

MANIFEST = pa.schema(
    [
        pa.field("batch_id", pa.string()),
        pa.field("job_index", pa.int64()),
        pa.field("job_id", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("params_json", pa.string()),
    ]
)
SHARD_SEPARATOR = "~"  # partition keys are "<batch>~<shard number>"


class Choices(BaseModel):
    model_config = ConfigDict(extra="forbid")
    choices: list[Any] = Field(min_length=1)


class Sampler(BaseModel):
    """``ranges``: ``name: [low, high]`` for numbers or ``name: {choices: [...]}``.
    ``grid`` uses ``levels`` (numbers per numeric range) and every choice, ignoring ``count``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["random", "sobol", "halton", "lhs", "grid", "stratified"]
    count: int = Field(1, ge=1, le=10_000_000)
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
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    template: str | None = Field(
        None,
        description="The template it came from (default: name); "
        "its dataset tests are batch_templates/<template>.tests.yaml.",
    )
    generator: str
    renderer: Literal["tiny", "cycles"] = "tiny"
    seed: int = Field(0, ge=0, description="Batch seed: samples and per-job seeds.")
    fixed: dict[str, Any] = {}
    jobs: list[dict[str, Any]] | None = None
    sampler: Sampler | None = None
    shard_size: int = Field(64, ge=1, le=100_000)
    max_failure_rate: float = Field(
        0.1, ge=0, le=1, description="Share of failed jobs a shard tolerates."
    )

    @model_validator(mode="after")
    def _one_source(self) -> BatchSpec:
        if (self.jobs is None) == (self.sampler is None):
            raise ValueError("give exactly one of 'jobs' (explicit) or 'sampler'")
        return self


class SpecError(FieldErrors):
    """A batch spec that cannot run."""


def load_spec(path: Path) -> BatchSpec:
    return load_yaml_model(BatchSpec, path, SpecError)


def _unit_points(sampler: Sampler, dims: int, seed: int) -> np.ndarray:
    if sampler.kind == "random":
        return np.random.default_rng(seed).random((sampler.count, dims))
    if sampler.kind in ("lhs", "stratified"):
        return qmc.LatinHypercube(d=dims, seed=seed).random(sampler.count)
    if sampler.kind == "halton":
        return qmc.Halton(d=dims, scramble=True, seed=seed).random(sampler.count)
    engine = qmc.Sobol(d=dims, scramble=True, seed=seed)
    m = int(np.log2(sampler.count))
    if 2**m == sampler.count:  # a power of two keeps Sobol's balance properties
        return engine.random_base2(m)
    return engine.random(sampler.count)


def _stratify(u: np.ndarray, sampler: Sampler, names: list[str]) -> np.ndarray:
    """Job i goes to stratum cell i mod cells: every combination of the strata's levels gets
    count / cells jobs (within one); a numeric stratum keeps its LHS position inside its bin."""
    sizes = [
        len(r.choices) if isinstance(r, Choices) else sampler.levels
        for r in (sampler.ranges[s] for s in sampler.strata)
    ]
    cells = list(itertools.product(*(range(k) for k in sizes)))
    u = u.copy()
    for i in range(len(u)):
        for stratum, level, k in zip(sampler.strata, cells[i % len(cells)], sizes, strict=True):
            d = names.index(stratum)
            u[i, d] = (
                level + (u[i, d] if not isinstance(sampler.ranges[stratum], Choices) else 0.5)
            ) / k
    return u


def _numeric_value(u: np.ndarray, low: float, high: float, integer: bool) -> list:
    if integer:
        values = np.minimum(np.floor(low + u * (high - low + 1)), high).astype(int)
        return values.tolist()
    return (low + u * (high - low)).tolist()


def _sample(sampler: Sampler, schemas: dict[str, dict], seed: int) -> list[dict[str, Any]]:
    names = list(sampler.ranges)
    if sampler.kind == "grid":
        axes = []
        for name in names:
            rng_ = sampler.ranges[name]
            if isinstance(rng_, Choices):
                axes.append(rng_.choices)
            else:
                points = np.linspace(rng_[0], rng_[1], sampler.levels)
                integer = schemas[name].get("type") == "integer"
                axes.append(
                    sorted(set(np.rint(points).astype(int).tolist()))
                    if integer
                    else points.tolist()
                )
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
    u = _unit_points(sampler, len(names), seed)
    if sampler.kind == "stratified":
        u = _stratify(u, sampler, names)
    columns = {}
    for d, name in enumerate(names):
        rng_ = sampler.ranges[name]
        if isinstance(rng_, Choices):
            index = np.minimum((u[:, d] * len(rng_.choices)).astype(int), len(rng_.choices) - 1)
            columns[name] = [rng_.choices[i] for i in index]
        else:
            integer = schemas[name].get("type") == "integer"
            columns[name] = _numeric_value(u[:, d], rng_[0], rng_[1], integer)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


@dataclass(frozen=True)
class Plan:
    spec: BatchSpec
    manifest: pa.Table  # one row per job, in job order

    @property
    def shards(self) -> list[str]:
        return sorted(set(self.manifest.column("shard").to_pylist()))


def shard_key(batch: str, index: int) -> str:
    return f"{batch}{SHARD_SEPARATOR}{index:05d}"


def batch_of(shard: str) -> str:
    return shard.rsplit(SHARD_SEPARATOR, 1)[0]


def plan(spec: BatchSpec) -> Plan:
    """Every job of the batch, validated; raises ``SpecError`` naming what is wrong."""
    try:
        gen = registry.get(spec.generator)
    except KeyError as exc:
        raise SpecError([f"generator: {exc.args[0]}"]) from None
    model = gen.Params
    schemas = field_schemas(model)
    fixed = {**spec.fixed, "renderer": spec.renderer} if "renderer" in schemas else spec.fixed
    errors = []
    if spec.sampler:
        for name, rng_ in spec.sampler.ranges.items():
            if name not in schemas:
                errors.append(f"sampler.ranges.{name}: unknown parameter of {gen.name}")
                continue
            values = rng_.choices if isinstance(rng_, Choices) else list(rng_)
            for value in values:
                try:
                    validate(model, {**fixed, name: value})
                except ParameterError as exc:
                    errors += [f"sampler.ranges.{m}" for m in exc.messages]
            if not isinstance(rng_, Choices) and rng_[0] > rng_[1]:
                errors.append(f"sampler.ranges.{name}: low {rng_[0]} is above high {rng_[1]}")
        if errors:
            raise SpecError(errors)
        variable = _sample(spec.sampler, schemas, spec.seed)
    else:
        variable = spec.jobs
    seeds = np.random.default_rng(spec.seed).integers(0, 2**31 - 1, size=len(variable))
    rows = {name: [] for name in MANIFEST.names}
    version = gen.version
    for index, (values, seed) in enumerate(zip(variable, seeds.tolist(), strict=True)):
        try:
            params = validate(model, {**fixed, **values})
        except ParameterError as exc:
            errors += [f"job {index}: {m}" for m in exc.messages]
            if len(errors) >= 20:
                break
            continue
        dumped = params.model_dump(mode="json")
        rows["batch_id"].append(spec.name)
        rows["job_index"].append(index)
        rows["job_id"].append(make_job_id(gen.name, version, dumped, seed))
        rows["shard"].append(shard_key(spec.name, index // spec.shard_size))
        rows["seed"].append(seed)
        rows["params_json"].append(json.dumps(dumped, sort_keys=True))
    if errors:
        raise SpecError(errors)
    return Plan(spec, pa.table(rows, schema=MANIFEST))
