"""Samplers: points that cover a batch's ranges and choices evenly (random, scrambled Sobol,
Halton, Latin hypercube, grid, stratified), all deterministic for the batch seed and mapped
onto integers, floats and choices."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from generators.contract.domain import Domain
from vario.batch.spec import Choices, Sampler


def _unit_points(sampler: Sampler, dims: int, seed: int) -> np.ndarray:
    # Imported here: scipy.stats takes a second to import, and every process that loads the
    # Dagster definitions (the UI's code server, each run) imports this module.
    from scipy.stats import qmc

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
    # The first ``count`` points of the sequence; scipy warns that other counts lose the
    # balance properties, which docs/batches.md says once instead of on every plan.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The balance properties of Sobol", UserWarning)
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


def _grid_axes(sampler: Sampler, schemas: dict[str, dict]) -> list[list]:
    """Each range's grid values: every choice, or ``levels`` points (integers once each)."""
    axes = []
    for name, rng_ in sampler.ranges.items():
        if isinstance(rng_, Choices):
            axes.append(rng_.choices)
            continue
        points = np.linspace(rng_[0], rng_[1], sampler.levels)
        if schemas[name].get("type") == "integer":
            axes.append(sorted(set(np.rint(points).astype(int).tolist())))
        else:
            axes.append(points.tolist())
    return axes


def _point_columns(sampler: Sampler, schemas: dict[str, dict], seed: int) -> dict[str, np.ndarray]:
    """Each range's sampled values as one array: numbers, or indices into the choices."""
    names = list(sampler.ranges)
    u = _unit_points(sampler, len(names), seed)
    if sampler.kind == "stratified":
        u = _stratify(u, sampler, names)
    columns = {}
    for d, name in enumerate(names):
        rng_ = sampler.ranges[name]
        if isinstance(rng_, Choices):
            k = len(rng_.choices)
            columns[name] = np.minimum((u[:, d] * k).astype(np.int64), k - 1)
        else:
            columns[name] = _numeric_value(u[:, d], rng_[0], rng_[1], schemas[name])
    return columns


def _numeric_value(u: np.ndarray, low: float, high: float, schema: dict) -> np.ndarray:
    if schema.get("type") == "integer":
        return np.minimum(np.floor(low + u * (high - low + 1)), high).astype(np.int64)
    return low + u * (high - low)


def sample_chunks(
    sampler: Sampler, schemas: dict[str, dict], seed: int, size: int = 65_536
) -> tuple[int, Iterator[list[dict[str, Any]]]]:
    """The number of jobs, and the jobs as lists of at most ``size`` parameter dicts: only
    the sampled points (a few numbers per job) are held whole, so a million-job batch is
    planned a chunk at a time instead of as a million dicts at once."""
    names = list(sampler.ranges)
    if sampler.kind == "grid":
        axes = _grid_axes(sampler, schemas)
        combos = itertools.product(*axes)
        count = math.prod(map(len, axes))
        chunks = (
            [dict(zip(names, combo, strict=True)) for combo in chunk]
            for chunk in iter(lambda: list(itertools.islice(combos, size)), [])
        )
        return count, chunks
    columns = _point_columns(sampler, schemas, seed)

    def chunk(start: int) -> list[dict[str, Any]]:
        values = []
        for name, column in columns.items():
            part = column[start : start + size].tolist()
            rng_ = sampler.ranges[name]
            values.append([rng_.choices[i] for i in part] if isinstance(rng_, Choices) else part)
        return [dict(zip(names, job, strict=True)) for job in zip(*values, strict=True)]

    return sampler.count, map(chunk, range(0, sampler.count, size))


def sample(sampler: Sampler, schemas: dict[str, dict], seed: int) -> list[dict[str, Any]]:
    """Every job's sampled parameters, in job order."""
    return [job for chunk in sample_chunks(sampler, schemas, seed)[1] for job in chunk]


def random_params(schemas: dict[str, dict], domain: Domain, seed: int) -> dict[str, Any]:
    """One job's parameters drawn at random for ``seed``: every domain parameter (semantic
    and nuisance) with a range (numbers with both bounds) or choices (enums, booleans) drawn
    over all of it, the others left to their defaults. A range's two ends given as a pair of
    parameters (``<name>_min``, ``<name>_max``) are drawn apart and then put in order."""
    ranges: dict[str, tuple[float, float] | Choices] = {}
    for name in (*domain.semantic, *domain.nuisance):
        schema = schemas.get(name, {})
        if "enum" in schema:
            ranges[name] = Choices(choices=schema["enum"])
        elif schema.get("type") == "boolean":
            ranges[name] = Choices(choices=[True, False])
        elif "minimum" in schema and "maximum" in schema:
            ranges[name] = (schema["minimum"], schema["maximum"])
    if not ranges:
        return {}
    drawn = sample(Sampler(kind="random", count=1, ranges=ranges), schemas, seed)[0]
    for low in [n for n in drawn if n.endswith("_min")]:
        high = f"{low[:-4]}_max"
        if high in drawn and drawn[low] > drawn[high]:
            drawn[low], drawn[high] = drawn[high], drawn[low]
    return drawn
