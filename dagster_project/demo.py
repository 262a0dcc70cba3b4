"""``vario demo``: a small batch through Dagster on the embedded defaults.

The spec goes into the inbox; the inbox sensor is evaluated once, in process, against the
project's Dagster instance (SQLite in ``.dagster_home``); each requested run executes in
process, so every materialisation is recorded and shows in ``vario ui`` afterwards.
"""

from __future__ import annotations

import click
import dagster as dg

from dagster_project.definitions import defs
from dagster_project.instance import dagster_home
from dagster_project.resources import storage
from dagster_project.sensors import inbox_sensor
from generators.settings import settings
from vario.store import views as dataset
from vario.store.layout import DataStore

TEMPLATE = "demo.yaml"
QUERY = """SELECT o.category, count(*) AS objects, round(avg(o.visible_pixels)) AS avg_pixels,
       round(avg(o.occlusion), 3) AS avg_occlusion, count(DISTINCT o.job_id) AS jobs
FROM objects o JOIN jobs j USING (job_id)
WHERE j.batch = 'demo' AND j.param_table_texture <> 'checker'
GROUP BY o.category ORDER BY objects DESC"""


def run_demo() -> None:
    home = dagster_home()
    instance = dg.DagsterInstance.get()
    store = DataStore(settings().data_dir)
    store.submit(settings().templates_dir / TEMPLATE)
    with dg.build_sensor_context(instance=instance, resources={"storage": storage()}) as ctx:
        result = inbox_sensor(ctx)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for request in result.run_requests:
        job = defs.resolve_job_def(request.job_name)
        outcome = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        )
        click.echo(
            f"{request.job_name} {request.partition_key}: {'ok' if outcome.success else 'FAILED'}"
        )
    defs.resolve_job_def("dataset_job").execute_in_process(instance=instance)
    release = defs.resolve_job_def("release_job").execute_in_process(
        instance=instance, partition_key="demo", raise_on_error=False
    )
    click.echo("\ndataset tests (batch_templates/demo.tests.yaml):")
    for check in release.get_asset_check_evaluations():
        result = "pass" if check.passed else "FAIL"
        click.echo(
            f"  {check.check_name:<11} {result:<5} {check.severity.value:<6} {check.description}"
        )
    click.echo(f"export: {'data/exports/demo/' if release.success else 'blocked by a check'}")
    con = dataset.connect(store)
    click.echo(f"\ndataset in {store.root}/tables: {dataset.summary(con)}\n\n{QUERY}\n")
    con.sql(QUERY).show()
    click.echo(
        f"\nDagster instance: {home}\n"
        "Open the UI with its runs, partitions and previews:  uv run vario ui  "
        "(then http://127.0.0.1:3000)\n"
        'Query the dataset:  uv run vario query "SELECT count(*) FROM objects"'
    )
