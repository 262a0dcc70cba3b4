"""Planning: a batch spec into jobs and shards.

Planning validates every job against the generator's parameter model, so an invalid batch is
refused before anything runs. Jobs are grouped into shards of ``shard_size``: a shard is the
unit Dagster partitions and runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from generators.contract import registry
from generators.job import make_job_id
from generators.params import ParameterError, field_schemas, validate
from vario.batch.samplers import sample
from vario.batch.spec import BatchSpec, Choices, SpecError

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
        variable = sample(spec.sampler, schemas, spec.seed)
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
