"""The domain gap between a synthetic batch and a real dataset: how far apart their label and
image statistics lie, one distance per distribution, drawn in one HTML page.

Each distribution is read from the dataset's views for both sides (DuckDB; the names are bound
parameters) and compared with SciPy: the Wasserstein distance (in the distribution's own
unit) and the two-sample Kolmogorov-Smirnov statistic with its p-value. Categories are
compared as shares (total variation distance: half the sum of the share differences). With a
model, its latest evaluation on each side is shown slice by slice, side by side.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
from scipy import stats

from generators.labels import archive as arc
from vario.quality.report import figure_png, plt
from vario.store.layout import DataStore
from vario.store.views import connect

_OBJECT_BOX = (
    "SELECT {expr} AS v FROM objects o JOIN frames f USING (batch, job_id, frame) "
    "WHERE o.batch = $d AND o.box_x_max > o.box_x_min AND o.box_y_max > o.box_y_min"
)
DISTRIBUTIONS = {  # name: (unit, SQL giving one value per row as v)
    "box size": (
        "px, sqrt of the area",
        _OBJECT_BOX.format(expr="sqrt((o.box_x_max - o.box_x_min) * (o.box_y_max - o.box_y_min))"),
    ),
    "box aspect": (
        "width / height",
        _OBJECT_BOX.format(expr="(o.box_x_max - o.box_x_min) / (o.box_y_max - o.box_y_min)"),
    ),
    "box centre x": (
        "share of the width",
        _OBJECT_BOX.format(expr="(o.box_x_min + o.box_x_max) / 2 / f.width"),
    ),
    "box centre y": (
        "share of the height",
        _OBJECT_BOX.format(expr="(o.box_y_min + o.box_y_max) / 2 / f.height"),
    ),
    "objects per image": (
        "objects",
        (
            "SELECT count(o.job_id) AS v FROM frames f LEFT JOIN objects o "
            "USING (batch, job_id, frame) WHERE f.batch = $d GROUP BY f.job_id, f.frame"
        ),
    ),
    "brightness": ("mean luma in [0, 1]", "SELECT brightness AS v FROM frames WHERE batch = $d"),
    "contrast": ("luma std in [0, 1]", "SELECT contrast AS v FROM frames WHERE batch = $d"),
}
_TEMPLATE = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html><html><head><meta charset="utf-8"><title>Domain gap: {{ synthetic }} vs
{{ real }}</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}</style>
</head><body><h1>Domain gap: synthetic <code>{{ synthetic }}</code> vs real <code>{{ real }}
</code></h1><h2>Distributions</h2><table><tr><th>distribution</th><th>unit</th>
<th>synthetic n</th><th>real n</th><th>Wasserstein</th><th>KS statistic</th><th>KS p</th></tr>
{% for d in distances %}<tr><td style="text-align:left">{{ d.name }}</td><td>{{ d.unit }}</td>
<td>{{ d.n_synthetic }}</td><td>{{ d.n_real }}</td><td>{{ "%.4g"|format(d.wasserstein) }}</td>
<td>{{ "%.3f"|format(d.ks) }}</td><td>{{ "%.3g"|format(d.ks_p) }}</td></tr>{% endfor %}
</table><p>Categories: total variation distance {{ "%.3f"|format(categories) }}.</p>
{% if metrics %}<h2>Model <code>{{ model }}</code> per slice</h2><table><tr><th>slice</th>
<th>metric</th><th>synthetic</th><th>real</th></tr>{% for row in metrics %}<tr>
<td style="text-align:left">{{ row[0] }}</td><td>{{ row[1] }}</td><td>{{ row[2] }}</td>
<td>{{ row[3] }}</td></tr>{% endfor %}</table>{% endif %}
{% for title, png in plots %}<h3>{{ title }}</h3><img src="data:image/png;base64,{{ png }}">
{% endfor %}</body></html>"""
)


@dataclass(frozen=True)
class Distance:
    name: str
    unit: str
    n_synthetic: int
    n_real: int
    wasserstein: float  # NaN when a side has no value
    ks: float
    ks_p: float


@dataclass(frozen=True)
class Gap:
    distances: list[Distance]
    categories: float  # total variation distance between the category shares
    report: Path


def domain_gap(store: DataStore, synthetic: str, real: str, model: str | None = None) -> Gap:
    """Compare batch ``synthetic`` with real dataset ``real``; the page goes to
    ``reports/gap/<synthetic>--<real>.html`` in the data folder."""
    con = connect(store)
    for name in (synthetic, real):
        if not con.execute("SELECT count(*) FROM frames WHERE batch = $d", {"d": name}).fetchone()[
            0
        ]:
            raise ValueError(f"no frames of {name!r}: not a batch or real dataset of {store.root}")
    distances, plots = [], []
    for name, (unit, sql) in DISTRIBUTIONS.items():
        a, b = (_values(con, sql, d) for d in (synthetic, real))
        distances.append(_distance(name, unit, a, b))
        plots.append((f"{name} ({unit})", _overlaid(name, a, b, synthetic, real)))
    shares = {d: _shares(con, d) for d in (synthetic, real)}
    names = sorted(set(shares[synthetic]) | set(shares[real]))
    tvd = 0.5 * sum(abs(shares[synthetic].get(n, 0) - shares[real].get(n, 0)) for n in names)
    plots.insert(0, ("category shares", _categories(names, shares, synthetic, real)))
    metrics = _metrics_side_by_side(store, model, synthetic, real) if model else []
    html = _TEMPLATE.render(
        synthetic=synthetic,
        real=real,
        distances=distances,
        categories=tvd,
        model=model,
        metrics=metrics,
        plots=[(t, base64.b64encode(p).decode()) for t, p in plots],
    )
    report = store.root / "reports" / "gap" / f"{synthetic}--{real}.html"
    arc.write_atomic(report, html.encode())
    return Gap(distances, tvd, report)


def _values(con, sql: str, dataset: str) -> np.ndarray:
    rows = con.execute(sql, {"d": dataset}).fetchnumpy()["v"]
    values = np.asarray(rows, float)
    return values[np.isfinite(values)]


def _distance(name: str, unit: str, a: np.ndarray, b: np.ndarray) -> Distance:
    if not (a.size and b.size):
        return Distance(name, unit, a.size, b.size, float("nan"), float("nan"), float("nan"))
    ks = stats.ks_2samp(a, b)
    return Distance(
        name,
        unit,
        a.size,
        b.size,
        float(stats.wasserstein_distance(a, b)),
        float(ks.statistic),
        float(ks.pvalue),
    )


def _shares(con, dataset: str) -> dict[str, float]:
    rows = con.execute(
        "SELECT category, count(*) FROM objects WHERE batch = $d GROUP BY category", {"d": dataset}
    ).fetchall()
    total = sum(n for _, n in rows) or 1
    return {c: n / total for c, n in rows}


def _overlaid(name: str, a: np.ndarray, b: np.ndarray, left: str, right: str) -> bytes:
    figure, ax = plt.subplots(figsize=(6, 2.6))
    both = np.concatenate([a, b]) if a.size + b.size else np.zeros(1)
    bins = np.histogram_bin_edges(both, bins=30)
    for values, label in ((a, f"synthetic {left}"), (b, f"real {right}")):
        if values.size:
            ax.hist(values, bins=bins, density=True, alpha=0.55, label=label)
    ax.set_xlabel(name)
    ax.legend(fontsize=8)
    return figure_png(figure)


def _categories(names: list[str], shares: dict, left: str, right: str) -> bytes:
    figure, ax = plt.subplots(figsize=(max(6, 0.5 * len(names)), 2.8))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [shares[left].get(n, 0) for n in names], 0.4, label=f"synthetic {left}")
    ax.bar(x + 0.2, [shares[right].get(n, 0) for n in names], 0.4, label=f"real {right}")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)  # zero shares shown too
    ax.set_ylabel("share of objects")
    ax.legend(fontsize=8)
    return figure_png(figure)


def _metrics_side_by_side(store: DataStore, model: str, left: str, right: str) -> list[tuple]:
    """Slice, metric, synthetic value, real value: the model's latest evaluation on each."""
    latest = {}
    for dataset in (left, right):
        found = sorted(
            store.root.glob(f"evaluations/model={model}/dataset={dataset}/*/evaluation.json"),
            key=lambda p: p.stat().st_mtime,
        )
        latest[dataset] = json.loads(found[-1].read_text())["metrics"] if found else {}
    rows = []
    for slice_name in sorted(set(latest[left]) | set(latest[right])):
        for metric in ("map", "ap50", "recall"):
            shown = [latest[d].get(slice_name, {}).get(metric) for d in (left, right)]
            rows.append((slice_name, metric, *("-" if v is None else f"{v:.3f}" for v in shown)))
    return rows
