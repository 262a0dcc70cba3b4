"""The dataset report: one self-contained HTML page per batch with the dataset tests' results
and the plots that explain them (factor histograms, coverage pair plot, nuisance x target
association heat map, category balance, occlusion and truncation, sample frames with boxes).
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from generators.labels import archive as arc  # noqa: E402
from generators.labels.preview import boxed_frame  # noqa: E402
from vario.quality import checks as quality  # noqa: E402
from vario.run import shard as sh  # noqa: E402
from vario.store.layout import DataStore  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def figures(
    store: DataStore, batch: str, results: list[quality.CheckResult], samples: int = 8
) -> dict[str, bytes]:
    """Titled PNG plots of the batch, from its tables and its test results."""
    b = quality._load(store, batch)
    plots: dict[str, bytes] = {}
    if b is None or b.jobs.empty:
        return plots
    params = b.varied
    fig, axes = plt.subplots(
        1, max(len(params), 1), figsize=(3 * max(len(params), 1), 2.4), squeeze=False
    )
    for ax, p in zip(axes[0], params, strict=False):
        values = b.jobs[f"param_{p}"]
        if b.continuous(p):
            ax.hist(
                values.to_numpy(float),
                bins=20,
                range=(b.schemas[p]["minimum"], b.schemas[p]["maximum"]),
            )
        else:
            counts = values.astype(str).value_counts()
            ax.bar(counts.index, counts.to_numpy())
            ax.tick_params(axis="x", rotation=45)
        ax.set_title(p, fontsize=9)
    plots["Factor histograms (over each parameter's declared range)"] = _png(fig)
    continuous = [p for p in params if b.continuous(p)]
    if len(continuous) >= 2:
        k = len(continuous)
        fig, axes = plt.subplots(k, k, figsize=(2.2 * k, 2.2 * k), squeeze=False)
        for i, pi in enumerate(continuous):
            for j, pj in enumerate(continuous):
                ax = axes[i, j]
                x, y = b.jobs[f"param_{pj}"].to_numpy(float), b.jobs[f"param_{pi}"].to_numpy(float)
                ax.hist(x, bins=15) if i == j else ax.scatter(x, y, s=4, alpha=0.6)
                ax.set_xlim(b.schemas[pj]["minimum"], b.schemas[pj]["maximum"])
                if i == k - 1:
                    ax.set_xlabel(pj, fontsize=8)
                if j == 0:
                    ax.set_ylabel(pi, fontsize=8)
        plots["Coverage pair plot"] = _png(fig)
    bias = next((r for r in results if r.name == "bias"), None)
    pairs = bias.metadata.get("pairs", []) if bias else []
    if pairs:
        rows = sorted({p["nuisance"] for p in pairs})
        cols = sorted({p["target"] for p in pairs})
        grid = np.zeros((len(rows), len(cols)))
        for p in pairs:
            grid[rows.index(p["nuisance"]), cols.index(p["target"])] = p["cramers_v"]
        fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 2, 0.4 * len(rows) + 1.5))
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="Reds")
        ax.set_xticks(range(len(cols)), cols, rotation=30)
        ax.set_yticks(range(len(rows)), rows)
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
        fig.colorbar(image, ax=ax, label="bias-corrected Cramér's V")
        plots["Nuisance x target association"] = _png(fig)
    categories = b.con.execute(
        f"SELECT category, count(*) FROM objects WHERE batch = '{batch}' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    if categories:
        fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(categories)), 2.6))
        ax.bar([c for c, _ in categories], [n for _, n in categories])
        ax.tick_params(axis="x", rotation=45)
        ax.set_ylabel("objects")
        plots["Category balance"] = _png(fig)
    occlusion = b.con.sql(
        f"SELECT occlusion, truncation FROM objects WHERE batch = '{batch}'"
    ).fetchnumpy()
    if len(occlusion["occlusion"]):
        fig, axes = plt.subplots(1, 2, figsize=(7, 2.4))
        for ax, name in zip(axes, ("occlusion", "truncation"), strict=True):
            ax.hist(occlusion[name], bins=20, range=(0, 1), log=True)
            ax.set_title(name, fontsize=9)
        plots["Occlusion and truncation of objects"] = _png(fig)
    out = store.archive_dir(batch)
    jobs = [j for j in sorted(b.jobs["job_id"]) if sh.is_complete(sh.archive_path(out, j))]
    picks = np.random.default_rng(0).permutation(len(jobs))[:samples] if jobs else []
    if len(picks):
        fig, axes = plt.subplots(1, len(picks), figsize=(2.2 * len(picks), 2.4), squeeze=False)
        for ax, i in zip(axes[0], picks, strict=True):
            frame = boxed_frame(sh.archive_path(out, jobs[i]))
            image = plt.imread(io.BytesIO(frame), format="png")
            ax.imshow(image)
            ax.set_axis_off()
            ax.set_title(jobs[i][:8], fontsize=7)
        plots["Sample frames with their boxes"] = _png(fig)
    return plots


def write_report(store: DataStore, batch: str, tests: quality.DatasetTests | None = None):
    """Run the dataset tests, write ``reports/<batch>/report.html``; returns its path."""
    results = quality.run_checks(store, batch, tests)
    plots = figures(store, batch, results)
    rows = "".join(
        f"<tr class={'pass' if r.passed else r.severity.lower()}><td>{r.name}</td>"
        f"<td>{'pass' if r.passed else 'FAIL'}</td><td>{r.severity}</td>"
        f"<td>{html.escape(r.message)}</td></tr>"
        for r in results
    )
    images = "".join(
        f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
        f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        for title, png in plots.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Vario dataset report: {html.escape(batch)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:4px 10px;text-align:left}}
tr.pass{{background:#e8f5e9}} tr.error{{background:#ffebee}} tr.warn{{background:#fff8e1}}
img{{max-width:100%}}</style></head><body>
<h1>Dataset report: {html.escape(batch)}</h1>
<table><tr><th>check</th><th>result</th><th>severity</th><th>detail</th></tr>{rows}</table>
{images}</body></html>"""
    path = store.root / "reports" / batch / "report.html"
    arc.write_atomic(path, page.encode())
    return path, results, plots
