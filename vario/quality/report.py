"""The dataset report: one self-contained HTML page per batch with the dataset tests' recorded
results and the plots that explain them (factor histograms, coverage pair plot, nuisance x
target association heat map, category balance, occlusion and truncation, sample frames with
their labels, and the frames behind a failed test).

The report never runs the checks: it shows the results it is given (as recorded, see
``checks.recorded_results``). Plots are drawn from aggregates DuckDB computes over the label
tables, so a figure costs about the same at a thousand objects as at a million, and the page
comes from a Jinja template (autoescaped). Categorical plots show every declared category
and level, zero counts included, counted as the balance check counts them.
"""

from __future__ import annotations

import base64
import io
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import cv2
import jinja2
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402

from generators.labels import archive as arc  # noqa: E402
from generators.labels.preview import contact_image, read_frame  # noqa: E402
from vario.quality import checks as quality  # noqa: E402
from vario.run import shard as sh  # noqa: E402
from vario.store.layout import DataStore  # noqa: E402
from vario.store.views import connect  # noqa: E402

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    trim_blocks=True,
)
_HIST_BINS, _PAIR_BINS = 20, 15
_GRID_WIDTH, _GRID_COLUMNS, _SLICE_FRAMES = 768, 4, 6  # grids of frames; frames per slice
_SPACE_FRAMES = 12  # frames across the randomization space
_PROBLEM = re.compile(r"^job (\w+) frame (\d+)\b")  # how integrity names a problem's frame


class Report(NamedTuple):
    path: Path
    plots: dict[str, bytes]  # title -> PNG, in page order


def figure_png(figure) -> bytes:
    """PNG bytes of a figure, closed. No tight bounding box: it draws every figure twice."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72)
    plt.close(figure)
    return buffer.getvalue()


def _histogram_sql(column: str, lo: float, hi: float, bins: int) -> str:
    """SQL for a value's bin over [lo, hi] as an integer; ``_clipped`` then puts values at or
    past the edges in the end bins (as np.histogram). Clipping in SQL (least/greatest) costs
    DuckDB ten times the binning itself."""
    return f"CAST(floor(({column} - {lo}) / {hi - lo} * {bins}) AS INTEGER)"


def _clipped(bins: int, *keys) -> tuple:
    return tuple(min(max(int(k), 0), bins - 1) for k in keys)


def _factor_histograms(con, batch: str, d: quality.Design) -> bytes:
    """One panel per varied parameter: counts of jobs over its declared range or levels."""
    fig, axes = plt.subplots(1, max(len(d.varied), 1), figsize=(3 * max(len(d.varied), 1), 2.4))
    for ax, p in zip(np.atleast_1d(axes), d.varied, strict=False):
        if d.continuous(p):
            lo, hi = d.schemas[p]["minimum"], d.schemas[p]["maximum"]
            rows = _jobs_counts(con, batch, _histogram_sql(f"param_{p}", lo, hi, _HIST_BINS))
            counts = np.zeros(_HIST_BINS)
            for b, n in rows:
                counts[_clipped(_HIST_BINS, b)] += n
            ax.stairs(counts, np.linspace(lo, hi, _HIST_BINS + 1), fill=True)
            ax.set_xlim(lo, hi)
        else:
            counts = factor_counts(con, batch, d, p)
            ax.bar_label(ax.bar(list(counts), list(counts.values())), fontsize=7)
            ax.margins(y=0.2)  # room for the counts under the title
            ax.tick_params(axis="x", rotation=45)
        _light(ax, p, numeric_x=d.continuous(p))
    fig.subplots_adjust(bottom=0.3, wspace=0.35)
    return figure_png(fig)


def factor_counts(con, batch: str, d: quality.Design, param: str) -> dict[str, int]:
    """Jobs per level of a categorical parameter: every declared level, zero included, keyed
    as the balance check keys them (``checks.level_counts``); the levels seen when the
    parameter declares none."""
    seen = dict(_jobs_counts(con, batch, _level_sql(d, param)))
    return quality.level_counts(seen, d.levels(param)) or seen


def _level_sql(d: quality.Design, param: str) -> str:
    """SQL for a parameter's level as Python's ``str`` writes it, the text the balance check
    keys levels by: DuckDB writes booleans ``true``, Python ``True``."""
    column = f"param_{param}"
    if d.schemas.get(param, {}).get("type") == "boolean":
        return f"CASE {column} WHEN true THEN 'True' WHEN false THEN 'False' END"
    return f"CAST({column} AS VARCHAR)"


def _light(ax, title: str, *, numeric_x: bool) -> None:
    """A title placed once and few ticks: matplotlib re-lays out titles and builds every
    tick's text on each draw, which is most of what a small panel costs."""
    ax.text(0.5, 1.03, title, transform=ax.transAxes, ha="center", fontsize=9)
    ax.yaxis.set_major_locator(ticker.MaxNLocator(3))
    if numeric_x:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(4))


def _jobs_counts(con, batch: str, key_sql: str) -> list[tuple]:
    return con.execute(
        f"SELECT {key_sql} AS k, count(*) FROM jobs WHERE batch = $batch AND status = 'ok' "
        "GROUP BY k HAVING k IS NOT NULL ORDER BY k",
        {"batch": batch},
    ).fetchall()


def _pair_plot(con, batch: str, d: quality.Design, continuous: list[str]) -> bytes:
    """Every pair of continuous parameters as a 2-D histogram of jobs (a scatter of tens of
    thousands of points shows less and costs more), histograms on the diagonal."""
    k = len(continuous)
    bins = {
        p: _histogram_sql(
            f"param_{p}", d.schemas[p]["minimum"], d.schemas[p]["maximum"], _PAIR_BINS
        )
        for p in continuous
    }
    fig, axes = plt.subplots(k, k, figsize=(2.2 * k, 2.2 * k), squeeze=False)
    for i, pi in enumerate(continuous):
        for j, pj in enumerate(continuous):
            ax = axes[i, j]
            if i == j:
                counts = np.zeros(_PAIR_BINS)
                for b, n in _jobs_counts(con, batch, bins[pi]):
                    counts[_clipped(_PAIR_BINS, b)] += n
                ax.stairs(counts, fill=True)
            else:
                ax.imshow(_grid(con, batch, bins[pi], bins[pj]), origin="lower", cmap="Blues")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == k - 1:
                ax.set_xlabel(pj, fontsize=8)
            if j == 0:
                ax.set_ylabel(pi, fontsize=8)
    return figure_png(fig)


def _grid(con, batch: str, row_sql: str, col_sql: str) -> np.ndarray:
    grid = np.zeros((_PAIR_BINS, _PAIR_BINS))
    for r, c, n in con.execute(
        f"SELECT {row_sql} AS r, {col_sql} AS c, count(*) FROM jobs "
        "WHERE batch = $batch AND status = 'ok' GROUP BY r, c "
        "HAVING r IS NOT NULL AND c IS NOT NULL",
        {"batch": batch},
    ).fetchall():
        grid[_clipped(_PAIR_BINS, r, c)] += n
    return grid


def _association(pairs: list[dict]) -> bytes:
    """Bias-corrected Cramér's V of every nuisance x target pair the bias check tested."""
    rows = sorted({p["nuisance"] for p in pairs})
    cols = sorted({p["target"] for p in pairs})
    grid = np.zeros((len(rows), len(cols)))
    for p in pairs:
        grid[rows.index(p["nuisance"]), cols.index(p["target"])] = p["cramers_v"]
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 3, 0.4 * len(rows) + 2))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="Reds")
    ax.set_xticks(range(len(cols)), cols, rotation=30)
    ax.set_yticks(range(len(rows)), rows)
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="bias-corrected Cramér's V")
    fig.subplots_adjust(left=0.3, bottom=0.3)
    return figure_png(fig)


def _category_balance(categories: dict[str, int]) -> bytes:
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(categories)), 2.6))
    ax.bar_label(ax.bar(list(categories), list(categories.values())), fontsize=7)
    ax.tick_params(axis="x", rotation=45)
    ax.set_ylabel("objects")
    fig.subplots_adjust(bottom=0.3, left=0.2)
    return figure_png(fig)


def _occlusion(con, batch: str) -> bytes | None:
    """Histograms of objects' occlusion and truncation over [0, 1], counted by DuckDB in one
    scan of the objects (a joint histogram, summed either way here)."""
    joint = np.zeros((_HIST_BINS, _HIST_BINS))
    for o, t, n in con.execute(
        f"SELECT {_histogram_sql('occlusion', 0, 1, _HIST_BINS)} AS o, "
        f"{_histogram_sql('truncation', 0, 1, _HIST_BINS)} AS t, count(*) FROM objects "
        "WHERE batch = $batch AND occlusion IS NOT NULL AND truncation IS NOT NULL "
        "GROUP BY o, t",
        {"batch": batch},
    ).fetchall():
        joint[_clipped(_HIST_BINS, o, t)] += n
    if not joint.any():
        return None
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.4))
    for ax, name, counts in zip(
        axes, ("occlusion", "truncation"), (joint.sum(axis=1), joint.sum(axis=0)), strict=True
    ):
        ax.bar(
            np.linspace(0, 1, _HIST_BINS + 1)[:-1], counts, 1 / _HIST_BINS, align="edge", log=True
        )
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))  # no mathtext: slow
        ax.yaxis.set_minor_locator(ticker.NullLocator())  # a log axis's minor ticks: slow
        ax.set_xlim(0, 1)
        ax.text(0.5, 1.03, name, transform=ax.transAxes, ha="center", fontsize=9)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(4))
    fig.subplots_adjust(bottom=0.15, wspace=0.3)
    return figure_png(fig)


def sample_archives(store: DataStore, batch: str, limit: int) -> list[Path]:
    """Complete archives of up to ``limit`` of the batch's rendered jobs, the first in job id
    order: a fixed choice spread over the shards (ids are hashes). At most a few times
    ``limit`` archives are opened, however many jobs lack a complete one."""
    rows = connect(store).execute(
        "SELECT job_id FROM jobs WHERE batch = $batch AND status = 'ok' ORDER BY job_id LIMIT $n",
        {"batch": batch, "n": 4 * limit},
    )
    paths = [sh.archive_path(store.archive_dir(batch), j) for (j,) in rows.fetchall()]
    return [p for p in paths if arc.is_complete(p)][:limit]


def _frames_grid(store: DataStore, batch: str, frames: list[tuple[str, int]]) -> bytes | None:
    """PNG grid of the (job id, frame) pairs that can be drawn, None if none can: the frames
    behind an integrity failure may be in an archive too damaged to read."""
    out = store.archive_dir(batch)
    paths = [(sh.archive_path(out, job), frame) for job, frame in frames]
    drawable = [(archive, frame) for archive, frame in paths if _drawable(archive, frame)]
    if not drawable:
        return None
    grid = contact_image(drawable, width=_GRID_WIDTH, columns=_GRID_COLUMNS)
    return cv2.imencode(".png", grid)[1].tobytes()


def _randomization_frames(con, batch: str, d: quality.Design) -> list[tuple[str, int]]:
    """The first frame of the first job (by id) of each level each drawn factor took
    (``Domain.drawn``: a background kind, a light count...), at most ``_SPACE_FRAMES``."""
    present = set(con.sql("SELECT * FROM jobs LIMIT 0").columns)
    frames: list[tuple[str, int]] = []
    for factor in (f for f in d.domain.drawn if f in present):  # a column the code names
        frames += con.execute(
            f"SELECT min(job_id), 0 FROM jobs WHERE batch = $batch AND status = 'ok' "
            f"AND {factor} IS NOT NULL GROUP BY {factor} ORDER BY {factor}",
            {"batch": batch},
        ).fetchall()
    return list(dict.fromkeys(frames))[:_SPACE_FRAMES]


def _drawable(archive: Path, frame: int) -> bool:
    """Whether the frame reads back (read twice, for a handful of frames: the grid itself
    stays all or nothing)."""
    try:
        read_frame(archive, frame)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return True


def _failed_slices(
    con, batch: str, d: quality.Design, results: list[quality.CheckResult], jobs: set[str]
) -> dict[str, list[tuple[str, int]]]:
    """For each failed test whose result names the slice behind the failure, a title and up
    to ``_SLICE_FRAMES`` of its frames as (job id, frame): balance, the rarest level of each
    factor its message names (objects of that category, or jobs at that parameter level; a
    level never rendered has no frame); novelty, the first frame of its worst jobs; integrity,
    the frames its problems name. The others name no slice: coverage and bias give bin counts
    and associations, edge cases give shares and quantiles (what is short is absent). Job ids
    read from a result are kept only if they are the batch's rendered jobs (``jobs``)."""
    slices: dict[str, list[tuple[str, int]]] = {}
    for r in (r for r in results if not r.passed):
        if r.name == "balance":
            slices |= _balance_slices(con, batch, d, r)
        elif r.name == "novelty":
            worst = [(w.get("job_id"), 0) for w in r.metadata.get("worst jobs", [])]
            slices["novelty: the jobs whose frames repeat most"] = worst
        elif r.name == "integrity":
            named = [m.groups() for p in r.metadata.get("problems", []) if (m := _PROBLEM.match(p))]
            slices["integrity: frames with problems"] = [(j, int(f)) for j, f in named]
    shown = {t: list(dict.fromkeys(f for f in fs if f[0] in jobs)) for t, fs in slices.items()}
    return {t: fs[:_SLICE_FRAMES] for t, fs in shown.items() if fs}


def _balance_slices(
    con, batch: str, d: quality.Design, result: quality.CheckResult
) -> dict[str, list[tuple[str, int]]]:
    """The rarest level of each factor the failed balance check names, with its frames: the
    rarest is picked from the recorded counts as the check picks it."""
    slices = {}
    for factor, counts in result.metadata.items():
        if not isinstance(counts, dict) or f"{factor}: rarest " not in result.message:
            continue
        level = min(counts, key=counts.get)
        if factor == "category":
            query = (
                "SELECT job_id, min(frame) FROM objects WHERE batch = $batch "
                "AND category = $level GROUP BY job_id ORDER BY job_id LIMIT $n"
            )
        elif factor in d.schemas:  # a parameter: its name is a field's, safe in SQL
            query = (
                f"SELECT job_id, 0 FROM jobs WHERE batch = $batch AND status = 'ok' "
                f"AND {_level_sql(d, factor)} = $level ORDER BY job_id LIMIT $n"
            )
        else:
            continue
        params = {"batch": batch, "level": level, "n": _SLICE_FRAMES}
        slices[f"balance: {factor} {level!r}, the rarest"] = con.execute(query, params).fetchall()
    return slices


def figures(
    store: DataStore, batch: str, results: list[quality.CheckResult], samples: int = 8
) -> dict[str, bytes]:
    """Titled PNG plots of the batch, from its tables and its recorded test results."""
    d = quality.design(store, batch)
    con = connect(store)
    job_ids = [
        j
        for (j,) in con.execute(
            "SELECT job_id FROM jobs WHERE batch = $batch AND status = 'ok' ORDER BY job_id",
            {"batch": batch},
        ).fetchall()
    ]
    if d is None or not job_ids:
        return {}
    plots = {
        "Factor histograms (over each parameter's declared range)": _factor_histograms(
            con, batch, d
        )
    }
    continuous = [p for p in d.varied if d.continuous(p)]
    if len(continuous) >= 2:
        plots["Coverage pair plot"] = _pair_plot(con, batch, d, continuous)
    bias = next((r for r in results if r.name == "bias"), None)
    if bias and bias.metadata.get("pairs"):
        plots["Nuisance x target association"] = _association(bias.metadata["pairs"])
    categories = quality.category_counts(con, batch)
    if categories:
        plots["Category balance (objects per category, distractors aside)"] = _category_balance(
            categories
        )
    sampled = [(p.stem, 0) for p in sample_archives(store, batch, samples)]
    across = _randomization_frames(con, batch, d)
    drawn = {
        "Occlusion and truncation of objects": _occlusion(con, batch),
        "Sample frames with their labels": _frames_grid(store, batch, sampled),
        "Frames across the randomization space (a job for each level drawn of "
        f"{', '.join(d.domain.drawn)})": _frames_grid(store, batch, across) if across else None,
        **{
            f"Frames behind the failed test {title}": _frames_grid(store, batch, frames)
            for title, frames in _failed_slices(con, batch, d, results, set(job_ids)).items()
        },
    }
    return plots | {title: png for title, png in drawn.items() if png is not None}


def write_report(store: DataStore, batch: str, results: list[quality.CheckResult]) -> Report:
    """Write ``reports/<batch>/report.html`` from the batch's recorded check results (it does
    not run the checks) and its tables; returns its path and its plots."""
    plots = figures(store, batch, results)
    page = _TEMPLATES.get_template("report.html.j2").render(
        batch=batch,
        results=results,
        images=[(title, base64.b64encode(png).decode()) for title, png in plots.items()],
    )
    path = store.root / "reports" / batch / "report.html"
    arc.write_atomic(path, page.encode())
    return Report(path, plots)
