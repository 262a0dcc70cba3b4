"""The dataset report: one self-contained HTML page per batch with the dataset tests' recorded
results and the plots that explain them (factor histograms, coverage pair plot, nuisance x
target association heat map, category balance, occlusion and truncation, sample frames with
boxes).

The report never runs the checks: it shows the results it is given (as recorded, see
``checks.recorded_results``). Plots are drawn from aggregates DuckDB computes over the label
tables, so a figure costs about the same at a thousand objects as at a million, and the page
comes from a Jinja template (autoescaped).
"""

from __future__ import annotations

import base64
import io
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
from generators.labels.preview import boxed_frame  # noqa: E402
from vario.quality import checks as quality  # noqa: E402
from vario.run import shard as sh  # noqa: E402
from vario.store.layout import DataStore  # noqa: E402
from vario.store.views import connect  # noqa: E402

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    trim_blocks=True,
)
_HIST_BINS, _PAIR_BINS, _FRAME_HEIGHT = 20, 15, 160


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
            rows = _jobs_counts(con, batch, f"CAST(param_{p} AS VARCHAR)")
            ax.bar([str(b) for b, _ in rows], [n for _, n in rows])
            ax.tick_params(axis="x", rotation=45)
        _light(ax, p, numeric_x=d.continuous(p))
    fig.subplots_adjust(bottom=0.3, wspace=0.35)
    return figure_png(fig)


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


def _category_balance(categories: list[tuple[str, int]]) -> bytes:
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(categories)), 2.6))
    ax.bar([c for c, _ in categories], [n for _, n in categories])
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


def _sample_frames(store: DataStore, batch: str, job_ids: list[str], samples: int) -> bytes | None:
    """First frames of up to ``samples`` random jobs with their boxes, side by side. At most
    a few times ``samples`` archives are opened, however many jobs lack a complete one."""
    out = store.archive_dir(batch)
    tiles = []
    for i in np.random.default_rng(0).permutation(len(job_ids))[: 4 * samples]:
        path = sh.archive_path(out, job_ids[i])
        if arc.is_complete(path):
            tiles.append(_tile(boxed_frame(path), job_ids[i][:8]))
            if len(tiles) == samples:
                break
    if not tiles:
        return None
    gap = np.full((_FRAME_HEIGHT, 6, 3), 255, np.uint8)
    strip = np.hstack([part for tile in tiles for part in (tile, gap)][:-1])
    return cv2.imencode(".png", strip)[1].tobytes()


def _tile(png: bytes, label: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    width = round(image.shape[1] * _FRAME_HEIGHT / image.shape[0])
    image = cv2.resize(image, (width, _FRAME_HEIGHT), interpolation=cv2.INTER_AREA)
    cv2.putText(image, label, (3, _FRAME_HEIGHT - 4), cv2.FONT_HERSHEY_PLAIN, 0.9, (255, 255, 255))
    return image


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
    categories = con.execute(
        "SELECT category, count(*) FROM objects WHERE batch = $batch GROUP BY 1 ORDER BY 1",
        {"batch": batch},
    ).fetchall()
    if categories:
        plots["Category balance"] = _category_balance(categories)
    drawn = {
        "Occlusion and truncation of objects": _occlusion(con, batch),
        "Sample frames with their boxes": _sample_frames(store, batch, job_ids, samples),
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
