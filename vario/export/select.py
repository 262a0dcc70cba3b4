"""What an export holds: the slice (a WHERE over the ``objects`` table), the frames kept of
each job, and the split of jobs into train, val and test.

The slice is one SQL expression, parsed as such by DuckDB (``1) OR (1`` and ``; DROP`` are
not expressions), and evaluated on the query sandbox's connection: it reads the dataset's
tables and nothing else. A split is by job, never by frame, so no video has frames on both
sides of a split.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field

import duckdb

from vario.export.frame import SPLITS

MAX_WHERE = 2000  # characters: a slice is a condition, not a program


class ExportRequestError(ValueError):
    """An export request that cannot run; the message names the option and what is allowed."""


@dataclass(frozen=True)
class Selection:
    """``where``: an expression over ``objects`` columns, as after ``WHERE`` in ``vario query
    "SELECT * FROM objects WHERE ..."``; ``frames``: ``every`` frame, each job's ``first``, or
    every Nth (``"N"``); ``split``: fractions by name; ``split_seed``: which jobs go where."""

    where: str | None = None
    frames: str = "every"
    split: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_where(self.where)
        frame_step(self.frames)
        check_split(self.split)

    def expression(self) -> duckdb.Expression | None:
        return duckdb.SQLExpression(self.where) if self.where else None


def check_where(where: str | None) -> None:
    if where is None:
        return
    if not where.strip() or len(where) > MAX_WHERE:
        raise ExportRequestError(f"--where: an expression of 1 to {MAX_WHERE} characters")
    try:
        duckdb.SQLExpression(where)
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0]
        raise ExportRequestError(f"--where: not one SQL expression ({reason})") from None


def frame_step(frames: str) -> int | None:
    """Every how many frames one is kept: 1 for ``every``, None for ``first``, N for ``N``."""
    if frames == "every":
        return 1
    if frames == "first":
        return None
    if re.fullmatch(r"[1-9][0-9]{0,5}", frames):
        return int(frames)
    raise ExportRequestError(f"--frames: every, first or a whole number N >= 1 (got {frames!r})")


def parse_split(text: str) -> dict[str, float]:
    """``train=0.8,val=0.1,test=0.1`` as fractions by split name."""
    split: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            fraction = float(value)
        except ValueError:
            fraction = math.nan
        if not sep or name in split or not math.isfinite(fraction):
            raise ExportRequestError(
                f"--split: name=fraction pairs, e.g. train=0.8,val=0.2 (got {part!r})"
            )
        split[name] = fraction
    check_split(split)
    return split


def check_split(split: dict[str, float]) -> None:
    unknown = sorted(set(split) - set(SPLITS))
    if unknown or not split:
        raise ExportRequestError(
            f"--split: names among {', '.join(SPLITS)} (got {unknown or 'none'})"
        )
    if any(not 0 <= f <= 1 for f in split.values()) or abs(sum(split.values()) - 1) > 1e-6:
        raise ExportRequestError(f"--split: fractions in [0, 1] that sum to 1 (got {split})")


def assign_splits(job_ids: list[str], split: dict[str, float], seed: int) -> dict[str, str]:
    """Each job's split. Jobs are ordered by a hash of the seed and their id, and each split
    takes its share of that order, with counts rounded by largest remainder: within one
    job of the requested fraction, the same for the same jobs and seed."""
    names = [s for s in SPLITS if s in split]
    n = len(job_ids)
    exact = [split[s] * n for s in names]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(names)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    order = sorted(job_ids, key=lambda j: hashlib.sha256(f"{seed}:{j}".encode()).digest())
    assigned, start = {}, 0
    for name, count in zip(names, counts, strict=True):
        assigned.update(dict.fromkeys(order[start : start + count], name))
        start += count
    return assigned
