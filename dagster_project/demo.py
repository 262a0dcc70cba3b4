"""``vario demo``: the demo batch (``batch_templates/demo.yaml``) run through Dagster on the
embedded defaults with ``vario batch run``'s code path, then a DuckDB slice of its labels.

Every run is recorded in the project's instance (SQLite in ``.dagster_home``) and shows in
``vario ui`` afterwards; the sensors there see the batch as done and launch nothing again.
"""

from __future__ import annotations

from pathlib import Path

from generators.settings import settings

QUERY = """SELECT o.category, count(*) AS objects, round(avg(o.visible_pixels)) AS avg_pixels,
       round(avg(o.occlusion), 3) AS avg_occlusion, count(DISTINCT o.job_id) AS jobs
FROM objects o JOIN jobs j USING (batch, job_id)
WHERE j.batch = 'demo' AND j.param_table_texture <> 'checker'
GROUP BY o.category ORDER BY objects DESC"""


def template() -> Path:
    return settings().templates_dir / "demo.yaml"


def print_summary() -> None:
    """The dataset's totals, the demo query's result, and where to look next."""
    from dagster_project.console import out
    from vario.store import views
    from vario.store.layout import DataStore

    s = settings()
    store = DataStore(s.data_dir)
    con = views.connect(store)
    totals = views.summary(con)
    out.print(
        f"\ndataset in {store.root}/tables: {totals['jobs']} jobs ({totals['jobs_failed']} "
        f"failed), {totals['frames']} frames, {totals['objects']} objects\n\n{QUERY}\n",
        markup=False,
    )
    con.sql(QUERY).show()
    out.print(
        f"Dagster instance: {s.dagster_home}\n"
        "Open the UI with its runs, partitions and previews:  uv run vario ui  "
        "(then http://127.0.0.1:3000)\n"
        'Query the dataset:  uv run vario query "SELECT count(*) FROM objects"',
        markup=False,
    )
