"""Samplers: points that cover a batch's ranges and choices evenly (random, scrambled Sobol,
Halton, Latin hypercube, grid, stratified), all deterministic for the batch seed and mapped
onto integers, floats and choices."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
from scipy.stats import qmc

from vario.batch.spec import Choices, Sampler


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


def _numeric_value(u: np.ndarray, low: float, high: float, integer: bool) -> list:
    if integer:
        values = np.minimum(np.floor(low + u * (high - low + 1)), high).astype(int)
        return values.tolist()
    return (low + u * (high - low)).tolist()


def sample(sampler: Sampler, schemas: dict[str, dict], seed: int) -> list[dict[str, Any]]:
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
