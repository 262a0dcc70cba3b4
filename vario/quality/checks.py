"""Dataset tests: a batch's data checked like code, with DuckDB over its label tables.

- coverage: varied continuous parameters, scaled to the unit cube by their declared ranges,
  against independent uniform sampling of the same size (centred discrepancy); and bin or
  level occupancy of every varied parameter over its declared range or choices.
- bias: every nuisance factor (binned) against every task target: bias-corrected Cramér's V,
  chi-square p-value and mutual information, over a table where each job weighs one (its
  objects are not independent of each other: they share the job's nuisance values).
- balance: shares of categories and of categorical nuisance factors against uniform.
- edge_cases: minimum shares of heavily occluded and truncated objects and crowded frames.
- integrity: every job has its archive; every box is its mask's box and every pixel count its
  mask's area; on a sample of archives, masks equal the segmentation, object counts equal the
  segmentation's ids, maps are not empty and depth lies within the camera's clip range.

Thresholds come from a version-controlled YAML file per batch template (``DatasetTests``).
Results are recorded in ``batches/<batch>/tests.json`` (``record_results``) for the report
and the CLI to read back (``recorded_results``). Every check returns a result, including on an
empty batch, a single job or a factor with one level: a failed check with a message, never an
exception.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import os
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pycocotools import mask as mask_utils
from pydantic import BaseModel, ConfigDict, Field

from generators.contract import registry
from generators.contract.domain import TARGETS
from generators.labels import archive as arc
from generators.params import FieldErrors, field_schemas, load_yaml_model
from vario.batch.spec import checked_batch
from vario.run import shard as sh
from vario.store.layout import DataStore
from vario.store.views import connect

Severity = Literal["ERROR", "WARN"]
_DISCREPANCY_POINTS = 2048  # centred discrepancy is O(n^2): both sides use this many points


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CoverageTests(_Section):
    severity: Severity = "ERROR"
    parameters: list[str] | None = Field(None, description="Default: what the batch varies.")
    bins: int = Field(4, ge=2, le=100)
    min_bin_count: int = Field(1, ge=1)
    max_discrepancy_ratio: float = Field(2.0, gt=0, description="Against iid uniform.")


class BiasTests(_Section):
    severity: Severity = "ERROR"
    nuisance: list[str] | None = Field(None, description="Default: varied nuisance params.")
    targets: list[str] | None = Field(None, description="Default: the generator's targets.")
    bins: int = Field(4, ge=2, le=50)
    max_cramers_v: float = Field(0.3, ge=0, le=1)
    max_p_value: float = Field(0.01, ge=0, le=1)


class BalanceTests(_Section):
    severity: Severity = "WARN"
    factors: list[str] | None = Field(
        None, description="Default: category + categorical nuisance factors the batch varies."
    )
    min_ratio: float = Field(0.5, ge=0, le=1, description="Rarest / most common.")


class EdgeCaseTests(_Section):
    severity: Severity = "WARN"
    occlusion_level: float = Field(0.5, ge=0, le=1)
    min_occluded_share: float = Field(0.02, ge=0, le=1)
    min_truncated_share: float = Field(0.0, ge=0, le=1)
    crowded_objects: int = Field(6, ge=1)
    min_crowded_share: float = Field(0.0, ge=0, le=1)
    small_box_area: int = Field(64, ge=1, description="A box under this many px² is small.")
    min_small_share: float = Field(0.0, ge=0, le=1, description="Small objects wanted, at least.")
    max_small_share: float = Field(
        0.25, ge=0, le=1, description="Small objects tolerated, at most (too small to learn)."
    )


class NoveltyTests(_Section):
    severity: Severity = "WARN"
    max_hash_distance: int = Field(
        2, ge=0, le=64, description="Frames of one job this many hash bits apart are alike."
    )
    max_duplicate_share: float = Field(
        0.1, ge=0, le=1, description="Share of frames that repeat an image, at most."
    )


class IntegrityTests(_Section):
    severity: Severity = "ERROR"
    sample_jobs: int = Field(20, ge=0, description="Archives opened to compare maps.")


class DatasetTests(_Section):
    coverage: CoverageTests = CoverageTests()
    bias: BiasTests = BiasTests()
    balance: BalanceTests = BalanceTests()
    edge_cases: EdgeCaseTests = EdgeCaseTests()
    novelty: NoveltyTests = NoveltyTests()
    integrity: IntegrityTests = IntegrityTests()


class TestsFileError(FieldErrors):
    """A dataset tests file that cannot be used."""


def load_tests(path: Path) -> DatasetTests:
    """A dataset tests file, or ``TestsFileError`` naming each bad field and value."""
    return load_yaml_model(DatasetTests, path, TestsFileError)


FIGURES = 40  # numbers a result's figures hold at most


def _numbers(values: dict[str, Any], prefix: str) -> dict[str, int | float]:
    found: dict[str, int | float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            found[name] = value
        elif isinstance(value, dict):
            found |= _numbers(value, f"{name} / ")
        elif key == "pairs":  # the bias test's association per nuisance x target
            found |= {f"cramers_v / {p['nuisance']} x {p['target']}": p["cramers_v"] for p in value}
    return found


@dataclass
class CheckResult:
    name: str
    passed: bool
    severity: Severity
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        return not self.passed and self.severity == "ERROR"

    def figures(self) -> dict[str, int | float]:
        """The numbers behind the verdict, one level deep ("discrepancy / ratio",
        "category / mug", "cramers_v / light x category"): what a chart across batches
        plots. Lists of examples (problems, worst jobs) are left out."""
        return dict(list(_numbers(self.metadata, "").items())[:FIGURES])


@dataclass
class Design:
    """What a batch varies: its domain parameters' declared ranges or choices, its domain."""

    schemas: dict[str, dict]
    domain: Any
    varied: list[str]

    def continuous(self, param: str) -> bool:
        s = self.schemas.get(param, {})
        return s.get("type") in ("number", "integer") and "minimum" in s and "maximum" in s

    def levels(self, param: str) -> list:
        s = self.schemas.get(param, {})
        if s.get("type") == "boolean":
            return [False, True]
        return list(s.get("enum", []))

    def nuisance(self, factor: str) -> bool:
        """Whether a factor is a nuisance: a nuisance parameter or a drawn factor."""
        return factor in self.domain.nuisance or factor in self.domain.drawn

    def column(self, factor: str) -> str:
        """The ``jobs`` column of a factor: ``param_<name>``, or a drawn factor's own."""
        return factor if factor in self.domain.drawn else f"param_{factor}"

    def bin_sql(self, param: str, bins: int) -> str:
        """SQL for the parameter's bin (continuous) or level (categorical), as text."""
        column = f"j.{self.column(param)}"
        if self.continuous(param):
            lo, hi = self.schemas[param]["minimum"], self.schemas[param]["maximum"]
            return (
                f"CAST(least(floor(({column} - {lo}) / {hi - lo} * {bins}), {bins - 1}) "
                "AS INTEGER)::VARCHAR"
            )
        return f"CAST({column} AS VARCHAR)"


@dataclass
class _Batch(Design):
    """What the checks read: the design, and the batch's jobs and label tables."""

    name: str
    store: DataStore
    con: Any
    jobs: Any  # pandas DataFrame of the batch's rendered jobs: job_id and parameter columns

    def levels(self, param: str) -> list:
        """A drawn factor's levels are those its jobs drew; a parameter's, its declared."""
        if param in self.domain.drawn:
            return sorted(self.jobs[param].dropna().astype(str).unique())
        return super().levels(param)


def design(store: DataStore, batch: str) -> Design | None:
    """The batch's design from its spec and generator, or None for a batch never submitted."""
    if batch not in store.batches():
        return None
    spec = store.spec(batch)
    gen = registry.get(spec.generator)
    if spec.sampler:
        varied = list(spec.sampler.ranges)
    else:
        varied = sorted({k for job in spec.jobs for k in job})
    domain_params = set(gen.domain.semantic) | set(gen.domain.nuisance)
    schemas = field_schemas(gen.Params)
    if spec.provenance and spec.sampler:  # a targeted batch: tested on the region it targets
        schemas = _targeted(schemas, spec.sampler.ranges)
    return Design(schemas, gen.domain, [p for p in varied if p in domain_params])


def _targeted(schemas: dict[str, dict], ranges: dict) -> dict[str, dict]:
    """The schemas with each sampled parameter's range or choices as the sampler declares
    them: a batch made to sample one region (``vario regenerate``) covers that region, not
    the generator's whole domain."""
    narrowed = dict(schemas)
    for name, allowed in ranges.items():
        if name not in schemas:
            continue
        if hasattr(allowed, "choices"):
            narrowed[name] = {**schemas[name], "enum": list(allowed.choices)}
        else:
            narrowed[name] = {**schemas[name], "minimum": allowed[0], "maximum": allowed[1]}
    return narrowed


def _load(store: DataStore, batch: str, tests: DatasetTests) -> _Batch | None:
    """The batch as the checks read it, or None for a batch never submitted. Only the
    parameter columns some check can read are fetched: a jobs row also carries its whole
    parameter JSON and timings, which cost more to load than every check needs."""
    d = design(store, batch)
    if d is None:
        return None
    con = connect(store)
    wanted = set(d.domain.semantic) | set(d.domain.nuisance) | _named_params(tests)
    present = set(con.sql("SELECT * FROM jobs LIMIT 0").columns)
    columns = [d.column(p) for p in sorted(wanted | {"categories"})]
    columns += [x for x in d.domain.drawn if x not in columns]
    jobs = con.execute(
        f"SELECT {', '.join(['job_id', *(c for c in columns if c in present)])} FROM jobs "
        "WHERE batch = $batch AND status = 'ok'",
        {"batch": batch},
    ).df()
    drawn = [x for x in d.domain.drawn if x in jobs and jobs[x].nunique() > 1]  # varied
    return _Batch(d.schemas, d.domain, d.varied + drawn, batch, store, con, jobs)


def _named_params(tests: DatasetTests) -> set[str]:
    """Parameters a tests file names explicitly (they need not be domain parameters)."""
    named = [tests.coverage.parameters, tests.bias.nuisance, tests.balance.factors]
    return {p for names in named if names for p in names} - {"category"}


def _empty(name: str, severity: Severity, batch: str) -> CheckResult:
    return CheckResult(name, False, severity, f"batch {batch!r} has no rendered jobs to test")


def check_coverage(b: _Batch, t: CoverageTests) -> CheckResult:
    """Whether the batch covers its domain evenly: the centred discrepancy of its varied
    continuous parameters (scaled to the unit cube by their declared ranges) against
    independent uniform draws of the same size, and the occupancy of every bin (continuous)
    or level (categorical) of each varied parameter. Fails when the discrepancy ratio passes
    ``max_discrepancy_ratio`` or a bin holds fewer than ``min_bin_count`` jobs: the model
    would see part of the domain too rarely. Remedy: sample with Sobol or Halton, add jobs, or
    narrow the ranges to what the batch is for."""
    # scipy.stats is imported where it is used: it takes a second, and every process that
    # loads the Dagster definitions (the UI's code server, each run) imports this module.
    from scipy.stats import qmc

    params = t.parameters or b.varied
    failures, metadata = [], {}
    continuous = [p for p in params if b.continuous(p)]
    for p in params:
        if b.continuous(p):
            lo, hi = b.schemas[p]["minimum"], b.schemas[p]["maximum"]
            u = (b.jobs[b.column(p)].to_numpy(float) - lo) / (hi - lo)
            counts = np.histogram(np.clip(u, 0, 1), bins=t.bins, range=(0, 1))[0]
            metadata[p] = counts.tolist()
            empty = [i for i, c in enumerate(counts) if c < t.min_bin_count]
            if empty:
                failures.append(
                    f"{p}: {len(empty)} of {t.bins} bins over its range "
                    f"[{lo}, {hi}] have fewer than {t.min_bin_count} jobs "
                    f"(counts {counts.tolist()})"
                )
        else:
            levels = b.levels(p)
            if len(levels) < 2:
                failures.append(f"{p}: a factor with {len(levels)} level(s) cannot be covered")
                continue
            seen = b.jobs[b.column(p)].astype(str).value_counts()
            counts = {str(lv): int(seen.get(str(lv), 0)) for lv in levels}
            metadata[p] = counts
            thin = [lv for lv, c in counts.items() if c < t.min_bin_count]
            if thin:
                failures.append(f"{p}: levels {thin} have fewer than {t.min_bin_count} jobs")
    if continuous and len(b.jobs) >= 2:
        points = np.column_stack(
            [
                (b.jobs[b.column(p)].to_numpy(float) - b.schemas[p]["minimum"])
                / (b.schemas[p]["maximum"] - b.schemas[p]["minimum"])
                for p in continuous
            ]
        ).clip(0, 1)
        rng = np.random.default_rng(0)
        if len(points) > _DISCREPANCY_POINTS:
            points = points[rng.choice(len(points), _DISCREPANCY_POINTS, replace=False)]
        realised = qmc.discrepancy(points, method="CD")
        baseline = _iid_discrepancy(*points.shape)
        ratio = realised / baseline
        metadata["discrepancy"] = {"realised": realised, "iid_uniform": baseline, "ratio": ratio}
        if ratio > t.max_discrepancy_ratio:
            per_param = {
                p: qmc.discrepancy(points[:, [i]], method="CD") for i, p in enumerate(continuous)
            }
            worst = max(per_param, key=per_param.get)
            failures.append(
                f"centred discrepancy {realised:.4g} is {ratio:.1f}x that of iid "
                f"uniform sampling (limit {t.max_discrepancy_ratio}); worst: {worst}"
            )
    if not params:
        failures.append("the batch varies no domain parameter: nothing to cover")
    message = "; ".join(failures) or f"{len(params)} parameters cover their ranges"
    return CheckResult("coverage", not failures, t.severity, message, metadata)


def _iid_discrepancy(n: int, d: int) -> float:
    """The expected squared centred discrepancy (what ``qmc.discrepancy`` returns) of ``n``
    independent uniform points in ``d`` dimensions: ((5/4)^d - (13/12)^d) / n. Exact, where
    averaging random draws would cost O(n^2) each and still be noisy."""
    return ((5 / 4) ** d - (13 / 12) ** d) / n


def _cramers_v(table: np.ndarray) -> tuple[float, float, float]:
    """Bias-corrected Cramér's V (Bergsma 2013), chi-square p-value, mutual information."""
    n = table.sum()
    r, k = table.shape
    from scipy.stats import chi2_contingency, entropy  # scipy.stats: see check_coverage

    chi2, p, _, _ = chi2_contingency(table, correction=False)
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    r_c, k_c = r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1)
    denominator = min(k_c - 1, r_c - 1)
    v = float(np.sqrt(phi2 / denominator)) if denominator > 0 else 0.0
    # I(A;B) = H(A) + H(B) - H(A,B); the table is job-weighted, not integer counts
    mi = entropy(table.sum(axis=1)) + entropy(table.sum(axis=0)) - entropy(table.ravel())
    return v, float(p), float(mi)


def _job_weighted_counts(
    b: _Batch, nuisance: list[str], targets: list[str], bins: int
) -> dict[tuple[str, str], list[tuple]]:
    """(factor, target) -> [(factor bin, target value, weight)]: every pair's contingency
    table from one scan of the objects. Objects of one job share its nuisance values, so each
    job weighs 1 in a table, spread over its objects' targets: the sample size is the number
    of jobs."""
    if not nuisance or not targets:
        return {}
    target_columns = ", ".join(f'{TARGETS[x]} AS "{x}"' for x in targets)
    factor_columns = ", ".join(f'{b.bin_sql(x, bins)} AS "{x}"' for x in nuisance)
    rows = b.con.execute(
        f"WITH o AS (SELECT o.job_id, {target_columns} FROM objects o "
        "JOIN frames f USING (batch, job_id, frame) WHERE o.batch = $batch), "
        "per AS (SELECT job_id, target, b, count(*) AS c FROM o UNPIVOT INCLUDE NULLS "
        f"(b FOR target IN ({_quoted(targets)})) GROUP BY ALL), "
        "share AS (SELECT job_id, target, b, "
        "c / sum(c) OVER (PARTITION BY job_id, target) AS w FROM per), "
        f"bins AS (SELECT job_id, {factor_columns} FROM jobs j WHERE j.batch = $batch) "
        "SELECT factor, target, a, b, sum(w) FROM share JOIN "
        f"(FROM bins UNPIVOT INCLUDE NULLS (a FOR factor IN ({_quoted(nuisance)}))) "
        "USING (job_id) GROUP BY ALL",
        {"batch": b.name},
    ).fetchall()
    tables: dict[tuple[str, str], list[tuple]] = {}
    for factor, target, a, level, weight in rows:
        tables.setdefault((factor, target), []).append((a, level, weight))
    return tables


def _quoted(names: list[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def check_bias(b: _Batch, t: BiasTests) -> CheckResult:
    """Whether a nuisance factor (lighting, texture, camera...) predicts a task target (the
    category, the number of objects...): bias-corrected Cramér's V, chi-square p-value and
    mutual information of every nuisance x target pair, each job weighing one. Fails when a
    pair's V passes ``max_cramers_v`` with p under ``max_p_value``: a model could learn the
    shortcut instead of the object. Remedy: sample the factor independently of the target
    (the pair and its V are in the metadata)."""
    nuisance = t.nuisance or [p for p in b.varied if b.nuisance(p)]
    targets = t.targets or list(b.domain.targets)
    pairs, failures, skipped = [], [], []
    weights = _job_weighted_counts(b, nuisance, targets, t.bins)
    for factor in nuisance:
        for target in targets:
            rows = weights.get((factor, target), [])
            a_levels = sorted({r[0] for r in rows}, key=str)
            b_levels = sorted({r[1] for r in rows}, key=str)
            if len(a_levels) < 2 or len(b_levels) < 2:
                skipped.append(f"{factor} x {target}")
                continue
            table = np.zeros((len(a_levels), len(b_levels)))
            for a, bb, count in rows:
                table[a_levels.index(a), b_levels.index(bb)] = count
            v, p, mi = _cramers_v(table)
            pairs.append(
                {
                    "nuisance": factor,
                    "target": target,
                    "cramers_v": round(v, 4),
                    "p_value": p,
                    "mutual_information": round(mi, 4),
                }
            )
            if v > t.max_cramers_v and p < t.max_p_value:
                failures.append(
                    f"{factor} predicts {target}: Cramér's V {v:.2f} "
                    f"(p={p:.2g}, MI {mi:.2f} nats; limit {t.max_cramers_v})"
                )
    pairs.sort(key=lambda x: -x["cramers_v"])
    metadata = {"pairs": pairs, "not tested (one level)": skipped}
    if not pairs and not failures:
        return CheckResult(
            "bias",
            False,
            t.severity,
            "no nuisance x target pair to test: each has a side with only one level "
            f"({', '.join(skipped) or 'no nuisance factor varies'})",
            metadata,
        )
    worst = pairs[0] if pairs else None
    message = "; ".join(failures) or (
        f"no association above V={t.max_cramers_v}; strongest {worst['nuisance']} x "
        f"{worst['target']} V={worst['cramers_v']}"
    )
    return CheckResult("bias", not failures, t.severity, message, metadata)


def check_balance(b: _Batch, t: BalanceTests) -> CheckResult:
    """Whether categories and categorical nuisance factors appear evenly: per factor, the
    rarest level's count over the most common one's, every declared level counted (a level
    never drawn counts zero). Fails when that ratio is under ``min_ratio``: the rare levels
    are under-learned. Remedy: more jobs, fewer levels, or a sampler that stratifies them."""
    factors = t.factors or ["category"] + [
        p for p in b.varied if b.nuisance(p) and not b.continuous(p)
    ]
    failures, metadata = [], {}
    for factor in factors:
        if factor == "category":
            counts = category_counts(b.con, b.name)
        else:
            seen = b.jobs[b.column(factor)].astype(str).value_counts()
            counts = level_counts(seen, b.levels(factor))
        metadata[factor] = counts
        if len(counts) < 2:
            failures.append(f"{factor}: {len(counts)} level(s); balance needs at least two")
            continue
        rarest, common = min(counts, key=counts.get), max(counts, key=counts.get)
        ratio = counts[rarest] / counts[common] if counts[common] else 0.0
        if ratio < t.min_ratio:
            failures.append(
                f"{factor}: rarest {rarest!r} ({counts[rarest]}) / most common "
                f"{common!r} ({counts[common]}) = {ratio:.2f} < {t.min_ratio}"
            )
    message = "; ".join(failures) or f"{', '.join(factors)} balanced within {t.min_ratio}"
    return CheckResult("balance", not failures, t.severity, message, metadata)


def category_counts(con, batch: str) -> dict[str, int]:
    """Objects per category (distractors aside) of the batch's rendered jobs, over every
    category they were asked to draw from (their ``categories`` parameter), a category never
    rendered at zero; the categories seen when the generator has no such parameter. The
    balance check and the report's balance plot both count with this: they agree."""
    has_categories = "param_categories" in con.sql("SELECT * FROM jobs LIMIT 0").columns
    declared = (
        con.execute(
            "SELECT DISTINCT unnest(param_categories) AS c FROM jobs "
            "WHERE batch = $batch AND status = 'ok' ORDER BY c",
            {"batch": batch},
        ).fetchall()
        if has_categories
        else []
    )
    seen = dict(
        con.execute(
            "SELECT category, count(*) FROM objects WHERE batch = $batch "
            "AND category <> 'distractor' GROUP BY category",
            {"batch": batch},
        ).fetchall()
    )
    return {c: int(seen.get(c, 0)) for c in ([c for (c,) in declared] or sorted(seen))}


def level_counts(seen: Mapping[str, int], levels: list) -> dict[str, int]:
    """Jobs per declared level of a categorical parameter, keyed by the level's text, a level
    no job has at zero (``seen``: counts by text). Shared by the balance check and the
    report's factor histograms, so both show the same levels."""
    return {str(level): int(seen.get(str(level), 0)) for level in levels}


_BOX_AREA = "(box_x_max - box_x_min) * (box_y_max - box_y_min)"


def check_edge_cases(b: _Batch, t: EdgeCaseTests) -> CheckResult:
    """Whether the hard cases are present in useful amounts: shares of heavily occluded
    objects (``occlusion_level``), truncated objects, crowded frames and small boxes, and
    that small boxes stay under ``max_small_share``. Fails when a share is under its minimum
    (the model never practises the case) or small boxes exceed their maximum (too small to
    learn). Remedy: raise object counts or clutter, move the camera, or adjust the limits in
    the batch template's tests file."""
    objects, occluded, truncated, small = b.con.execute(
        "SELECT count(*), count(*) FILTER (occlusion >= $occluded), "
        f"count(*) FILTER (truncation > 0), count(*) FILTER ({_BOX_AREA} < $small) "
        "FROM objects WHERE batch = $batch",
        {"batch": b.name, "occluded": t.occlusion_level, "small": t.small_box_area},
    ).fetchall()[0]
    frames, crowded = b.con.execute(
        "SELECT count(*), count(*) FILTER (n_objects >= $crowded) FROM frames WHERE batch = $batch",
        {"batch": b.name, "crowded": t.crowded_objects},
    ).fetchall()[0]
    if not objects or not frames:
        return CheckResult("edge_cases", False, t.severity, "no objects or frames to measure")
    shares = {
        "occluded": occluded / objects,
        "truncated": truncated / objects,
        "crowded frames": crowded / frames,
        "small": small / objects,
    }
    minimum = {
        "occluded": t.min_occluded_share,
        "truncated": t.min_truncated_share,
        "crowded frames": t.min_crowded_share,
        "small": t.min_small_share,
    }
    short = [f"{k} share {v:.3f} < {minimum[k]}" for k, v in shares.items() if v < minimum[k]]
    if shares["small"] > t.max_small_share:
        short.append(f"small share {shares['small']:.3f} > {t.max_small_share}")
    sizes = _box_areas_by_category(b, t.small_box_area)
    smallest = ", ".join(f"{c} {v['small share']:.0%}" for c, v in sizes.items() if v["small"])
    summary = f"boxes under {t.small_box_area} px²: {shares['small']:.1%}" + (
        f" ({smallest})" if smallest else ""
    )
    return CheckResult(
        "edge_cases",
        not short,
        t.severity,
        "; ".join([*short, summary]) if short else f"edge-case quotas met; {summary}",
        {**{k: round(v, 4) for k, v in shares.items()}, "box area by category": sizes},
    )


def _box_areas_by_category(b: _Batch, small_area: int) -> dict[str, dict]:
    """Per category: how many objects, the 10th, 50th and 90th percentile of box areas (px²),
    and how many and which share are smaller than ``small_area``."""
    rows = b.con.execute(
        f"SELECT category, count(*), quantile_disc({_BOX_AREA}, [0.1, 0.5, 0.9]), "
        f"count(*) FILTER ({_BOX_AREA} < $small) "
        "FROM objects WHERE batch = $batch GROUP BY category ORDER BY category",
        {"batch": b.name, "small": small_area},
    ).fetchall()
    return {
        category: {
            "objects": n,
            "p10": p10,
            "median": p50,
            "p90": p90,
            "small": small,
            "small share": round(small / n, 4),
        }
        for category, n, (p10, p50, p90), small in rows
    }


def check_novelty(b: _Batch, t: NoveltyTests) -> CheckResult:
    """Whether frames add information: a frame repeats an image when its perceptual hash is
    within ``max_hash_distance`` bits of an earlier frame of its job, or equals the hash of a
    frame of another job. Fails above ``max_duplicate_share`` of the batch's frames: repeats
    cost render time and weigh the same scene twice. Remedy: fewer frames per job, more
    motion between them, or more varied parameters."""
    if "image_hash" not in b.con.sql("SELECT * FROM frames LIMIT 0").columns:
        return CheckResult("novelty", False, t.severity, "frames carry no image_hash column")
    b.con.execute(
        "CREATE OR REPLACE TEMP TABLE _novelty AS "
        "WITH f AS (SELECT job_id, frame, image_hash FROM frames WHERE batch = $batch), "
        "near AS (SELECT DISTINCT a.job_id, a.frame FROM f a JOIN f o ON a.job_id = o.job_id "
        "AND o.frame < a.frame AND bit_count(xor(a.image_hash, o.image_hash)) <= $distance) "
        "SELECT f.*, near.frame IS NOT NULL AS repeats_job, "
        "row_number() OVER (PARTITION BY image_hash ORDER BY job_id, frame) > 1 "
        "AS repeats_batch FROM f LEFT JOIN near USING (job_id, frame)",
        {"batch": b.name, "distance": t.max_hash_distance},
    )
    frames, in_jobs, across, distinct = b.con.execute(
        "SELECT count(*), count(*) FILTER (repeats_job), "
        "count(*) FILTER (repeats_batch AND NOT repeats_job), "
        "count(*) FILTER (NOT repeats_job AND NOT repeats_batch) FROM _novelty"
    ).fetchall()[0]
    worst = b.con.execute(
        "SELECT job_id, count(*) FILTER (repeats_job OR repeats_batch) AS repeats, count(*) "
        "FROM _novelty GROUP BY job_id HAVING repeats > 0 ORDER BY repeats DESC, job_id LIMIT 10"
    ).fetchall()
    b.con.execute("DROP TABLE _novelty")
    if not frames:
        return CheckResult("novelty", False, t.severity, "no frames to compare")
    share = (in_jobs + across) / frames
    message = (
        f"{distinct} distinct images of {frames} frames; {share:.1%} repeat an image "
        f"({in_jobs} within their job, {across} across jobs)"
    )
    passed = share <= t.max_duplicate_share
    if not passed:
        message += f", more than {t.max_duplicate_share:.0%}: see docs/dataset-tests.md#novelty"
    metadata = {
        "frames": frames,
        "distinct images": distinct,
        "duplicate share": round(share, 4),
        "repeats within jobs": in_jobs,
        "repeats across jobs": across,
        "worst jobs": [{"job_id": j, "repeats": r, "frames": n} for j, r, n in worst],
    }
    return CheckResult("novelty", passed, t.severity, message, metadata)


_SHOWN = 50  # problems a result lists; wrong boxes and pixel counts are sought until this many
_CHUNK_ROWS = 32_768  # objects rows checked at a time: tens of MB, whatever the batch's size


def check_integrity(b: _Batch, t: IntegrityTests) -> CheckResult:
    """Whether the labels are true to the pixels: every planned job has its archive; every
    box is its mask's box and every pixel count its mask's area; on ``sample_jobs``
    archives, masks equal the segmentation, object counts equal its ids, maps are not empty
    and depth lies within the camera's clip range. A failure is a bug in a generator or a
    damaged file, never noise: the examples in the metadata name the job and object."""
    out_dir = b.store.archive_dir(b.name)
    ok = pa.array(b.jobs["job_id"], pa.string())
    manifest = b.store.manifest(b.name, columns=["job_id"]).column("job_id")
    missing = _without_archive(manifest, ok, out_dir)
    labels, n_objects = _label_problems(b)
    sample = _archive_sample(ok, missing, t.sample_jobs)
    archives = [
        p
        for job_id in sample
        for p in _archive_problems(b, job_id, sh.archive_path(out_dir, job_id))
    ]
    # jobs without archives are counted, and only the first few written out (there may be a
    # million: the archives not fetched)
    problems = [f"job {job_id}: no complete archive" for job_id in missing[:_SHOWN].to_pylist()]
    problems += labels + archives
    count = len(missing) + len(labels) + len(archives)
    metadata = {
        "problems": problems[:_SHOWN],
        "jobs": len(manifest),
        "archives sampled": len(sample),
    }
    message = (
        f"{count} problems; first: {problems[0]}"
        if problems
        else f"{len(manifest)} jobs, {n_objects} objects consistent"
    )
    return CheckResult("integrity", not problems, t.severity, message, metadata)


def _without_archive(job_ids: pa.ChunkedArray, ok: pa.Array, out_dir: Path) -> pa.ChunkedArray:
    """Jobs of the manifest not rendered or without their archive, in manifest order, from
    one directory listing (archives are named ``<job id><suffix>``, see
    ``shard.archive_path``). Ids stay Arrow strings (tens of MB for a million jobs), not
    Python sets of them."""
    suffix = sh.archive_path(out_dir, "").name
    names = pa.array([], pa.string())
    if out_dir.exists():
        with os.scandir(out_dir) as entries:
            names = pa.array((e.name for e in entries), pa.string())
    names = names.filter(pc.ends_with(names, suffix))
    archived = pc.utf8_slice_codeunits(names, 0, -len(suffix))
    done = pc.and_(pc.is_in(job_ids, value_set=ok), pc.is_in(job_ids, value_set=archived))
    return job_ids.filter(pc.invert(done))


def _archive_sample(ok: pa.Array, missing: pa.ChunkedArray, size: int) -> list[str]:
    """Up to ``size`` rendered jobs with their archive (a missing one is reported already),
    in id order, drawn with a fixed seed: the same batch opens the same archives."""
    ids = pc.unique(ok.filter(pc.invert(pc.is_in(ok, value_set=missing.combine_chunks()))))
    ids = ids.take(pc.array_sort_indices(ids))
    if len(ids) > size:
        ids = ids.take(np.sort(np.random.default_rng(0).choice(len(ids), size, replace=False)))
    return ids.to_pylist()


def _label_problems(b: _Batch) -> tuple[list[str], int]:
    """Objects whose box or pixel count is not their mask's (the first ``_SHOWN``), and the
    objects rows read. Rows are read a chunk at a time, each chunk dropped once checked:
    memory holds one chunk's masks and what decoding them makes, not the batch's. (Decoding
    half of each chunk in a second process, as pycocotools holds the GIL, no longer paid:
    a chunk decoded in place reuses the memory the last one freed.)"""
    sizes = b.con.execute(
        "SELECT DISTINCT height, width FROM frames WHERE batch = $batch", {"batch": b.name}
    ).fetchall()
    # each mask with its frame's size: the join with frames is needed only when the batch's
    # frames differ in size
    size_columns, join = (
        ("", "")
        if len(sizes) == 1
        else (", f.height, f.width", "JOIN frames f USING (batch, job_id, frame)")
    )
    query = b.con.sql(
        "SELECT o.job_id, o.frame, o.instance_id, o.box_x_min, o.box_y_min, o.box_x_max, "
        f"o.box_y_max, o.visible_pixels, o.mask_rle{size_columns} "
        f"FROM objects o {join} WHERE o.batch = $batch",
        params={"batch": b.name},
    )
    # the query stays open while its rows are decoded: no progress bar printed meanwhile
    b.con.execute("SET enable_progress_bar = false")
    size = sizes[0] if len(sizes) == 1 else None
    problems: list[str] = []
    read = 0
    with query.to_arrow_reader(_CHUNK_ROWS) as chunks:
        for chunk in chunks:
            problems += _chunk_problems(chunk, size, _SHOWN - len(problems))
            read += chunk.num_rows
            if len(problems) == _SHOWN:
                break
    return problems, read


def _chunk_problems(chunk: pa.RecordBatch, size, limit: int) -> list[str]:
    """Objects of one chunk whose box or pixel count is not their mask's (the first
    ``limit``); its rows carry their frame's ``height`` and ``width`` unless all share
    ``size``."""
    columns = pa.Table.from_batches([chunk])
    masks = columns.column("mask_rle").combine_chunks().cast(pa.binary())  # zero-copy
    if size is not None:
        sizes = None
    else:
        heights, widths = (
            columns.column(c).to_numpy().astype(np.int64) for c in ("height", "width")
        )
        keys, sizes = np.unique(heights << 32 | widths, return_inverse=True)
        size = [[int(k >> 32), int(k & 0xFFFFFFFF)] for k in keys]
    boxes, areas = _decode(masks, size, sizes)
    stated = np.column_stack(
        [columns.column(c).to_numpy() for c in ("box_x_min", "box_y_min", "box_x_max", "box_y_max")]
    ).astype(float)
    actual = np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]])
    pixels = columns.column("visible_pixels").to_numpy()
    problems = []
    for i in np.flatnonzero(np.any(stated != actual, axis=1) | (pixels != areas))[:limit]:
        row = {c: columns.column(c)[int(i)].as_py() for c in ("job_id", "frame", "instance_id")}
        problems.append(
            f"job {row['job_id']} frame {row['frame']} instance {row['instance_id']}: box "
            f"{tuple(stated[i].astype(int).tolist())} / {pixels[i]} px, but its mask gives "
            f"{tuple(actual[i].astype(int).tolist())} / {int(areas[i])} px"
        )
    return problems


def _decode(masks: pa.Array, size, sizes) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' box (x, y, width, height) and area of every mask. ``size`` is the one
    ``(height, width)``, or with ``sizes`` (each mask's index into it) a list of them. The
    dicts pycocotools takes are built with the garbage collector paused (nothing they hold
    can form a cycle) and share their size lists."""
    counts = masks.to_pylist()
    per_mask = itertools.repeat(list(size)) if sizes is None else (size[i] for i in sizes.tolist())
    with _gc_paused():
        rles = [{"size": s, "counts": c} for s, c in zip(per_mask, counts, strict=False)]
        # pycocotools' area() sizes a uint8 array by the count: more than 255 masks per call
        # overflow under NumPy 2, so it is called in chunks; toBbox() too, which is a third
        # faster on chunks than on a million masks at once.
        chunks = [rles[i : i + 255] for i in range(0, len(rles), 255)]
        if not chunks:
            return np.zeros((0, 4)), np.zeros(0, np.uint32)
        boxes = np.concatenate([mask_utils.toBbox(chunk) for chunk in chunks])
        areas = np.concatenate([mask_utils.area(chunk) for chunk in chunks])
        del rles, chunks, counts
    return boxes, areas


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: allocating a million small containers otherwise
    triggers collections that scan them all again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _archive_problems(b: _Batch, job_id: str, archive: Path) -> list[str]:
    problems = []
    frames = b.con.execute(
        "SELECT frame, near, far, segmentation_path, depth_path, rgb_path "
        "FROM frames WHERE batch = $batch AND job_id = $job ORDER BY frame",
        {"batch": b.name, "job": job_id},
    ).fetchall()
    rows = b.con.execute(
        "SELECT frame, instance_id, mask_rle FROM objects WHERE batch = $batch AND job_id = $job",
        {"batch": b.name, "job": job_id},
    ).fetchall()
    with zipfile.ZipFile(archive) as z:
        for frame, near, far, seg_path, depth_path, rgb_path in frames:
            where = f"job {job_id} frame {frame}"
            seg = cv2.imdecode(np.frombuffer(z.read(seg_path), np.uint8), cv2.IMREAD_UNCHANGED)
            mine = [r for r in rows if r[0] == frame]
            if sorted(r[1] for r in mine) != sorted(set(np.unique(seg).tolist()) - {0}):
                problems.append(
                    f"{where}: objects {sorted(r[1] for r in mine)} but "
                    f"segmentation ids {sorted(set(np.unique(seg).tolist()) - {0})}"
                )
            for _, instance, rle in mine:
                mask = mask_utils.decode({"size": list(seg.shape), "counts": rle.encode()})
                if not np.array_equal(mask.astype(bool), seg == instance):
                    problems.append(
                        f"{where} instance {instance}: mask differs from the segmentation"
                    )
            depth = (
                cv2.imdecode(np.frombuffer(z.read(depth_path), np.uint8), cv2.IMREAD_UNCHANGED)
                / 1000.0
            )
            valid = depth[depth > 0]
            if not valid.size:
                problems.append(f"{where}: empty depth map")
            elif valid.min() < near - 1e-3 or valid.max() > far + 1e-3:
                problems.append(
                    f"{where}: depth {valid.min():.3f}..{valid.max():.3f} m outside "
                    f"the clip range [{near}, {far}]"
                )
            rgb = cv2.imdecode(np.frombuffer(z.read(rgb_path), np.uint8), cv2.IMREAD_COLOR)
            if rgb is None or rgb.std() == 0:
                problems.append(f"{where}: empty RGB image")
            for folder in ("normals", "object_coordinates"):  # dense maps, where rendered
                name = f"{folder}/{frame:05d}.png"
                if name in z.namelist():
                    values = cv2.imdecode(
                        np.frombuffer(z.read(name), np.uint8), cv2.IMREAD_UNCHANGED
                    )
                    if values is None or not values.any():
                        problems.append(f"{where}: empty {folder} map")
    return problems


CHECKS = {
    "coverage": check_coverage,
    "bias": check_bias,
    "balance": check_balance,
    "edge_cases": check_edge_cases,
    "novelty": check_novelty,
    "integrity": check_integrity,
}


def run_checks(
    store: DataStore, batch: str, tests: DatasetTests | None = None
) -> list[CheckResult]:
    """Every dataset test of the batch, in ``CHECKS`` order."""
    tests = tests or DatasetTests()
    b = _load(store, checked_batch(batch), tests)
    if b is None or b.jobs.empty:
        return [_empty(name, getattr(tests, name).severity, batch) for name in CHECKS]
    return [check(b, getattr(tests, name)) for name, check in CHECKS.items()]


# Recorded results: ``batches/<batch>/tests.json``. The checks run once (``vario dataset test``
# or the ``batch_dataset`` asset) and record what they found; the report reads the record, so
# showing a batch's results never re-runs its checks and shows the results that were acted on.


def results_path(store: DataStore, batch: str) -> Path:
    return store.batch_dir(batch) / "tests.json"


def record_results(store: DataStore, batch: str, results: list[CheckResult]) -> Path:
    """Write the batch's check results atomically (readers never see half a record)."""
    record = {
        "batch": batch,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": [asdict(r) for r in results],
    }
    path = results_path(store, batch)
    arc.write_atomic(path, json.dumps(record, indent=2).encode())
    return path


def recorded_results(store: DataStore, batch: str) -> list[CheckResult] | None:
    """The batch's last recorded check results, or None when its checks never ran."""
    path = results_path(store, batch)
    if not path.exists():
        return None
    return [CheckResult(**r) for r in json.loads(path.read_text())["results"]]
