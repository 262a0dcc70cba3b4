"""Domain dynamics: batches that follow the calendar and the catalog.

Both submit specs through the inbox, so the inbox sensor validates, plans and deduplicates
them like any other submission.
"""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import yaml

from assets_defs.batches import manifest_job
from assets_defs.storage import StorageResource
from dagster_project.sensors import INTERVAL
from generators.scene import catalog
from generators.settings import settings

NIGHTLY_TEMPLATE = settings().nightly_template or "demo"


def template(name: str) -> dict:
    return yaml.safe_load((settings().templates_dir / f"{name}.yaml").read_text())


@dg.schedule(
    cron_schedule=settings().nightly_cron,
    job=manifest_job,
    default_status=dg.DefaultScheduleStatus.RUNNING
    if settings().nightly_template
    else dg.DefaultScheduleStatus.STOPPED,
    description=(
        "Each night (`VARIO_NIGHTLY_CRON`) submits the batch template "
        "`VARIO_NIGHTLY_TEMPLATE` with a new seed, as batch `<template>-<YYYYMMDD>`, through "
        "the inbox. Running only when `VARIO_NIGHTLY_TEMPLATE` is set. A missing template "
        "fails the tick: its error names the file."
    ),
)
def nightly_batch(context: dg.ScheduleEvaluationContext, storage: StorageResource):
    """Regenerates the batch template ``$VARIO_NIGHTLY_TEMPLATE`` (default ``demo``) with a new
    batch seed each night: batch ``<template>-<YYYYMMDD>``, seed ``YYYYMMDD``."""
    day = context.scheduled_execution_time.strftime("%Y%m%d")
    spec = {
        **template(NIGHTLY_TEMPLATE),
        "name": f"{NIGHTLY_TEMPLATE}-{day}",
        "seed": int(day),
        "template": NIGHTLY_TEMPLATE,
    }
    path = storage.store.submit_spec(spec)
    return dg.SkipReason(f"submitted {spec['name']} to the inbox ({path})")


@dg.sensor(
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches the user catalog folder (`VARIO_CATALOG_DIR`). New meshes are indexed and "
        "the `catalog_update` batch template is submitted over their categories, so the "
        "dataset covers them."
    ),
)
def catalog_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
    """New meshes in the catalog folder: submits the ``catalog_update`` template over the new
    assets' categories, so the dataset covers them."""
    known = set(json.loads(context.cursor or "[]"))
    current = [str(p.relative_to(catalog.user_catalog_dir())) for p in catalog.user_asset_files()]
    new = [p for p in current if p not in known]
    if not new:
        return dg.SkipReason("no new assets")
    catalog.refresh()
    categories = sorted({p.split("/")[0] for p in new})
    base = template("catalog_update")
    digest = hashlib.sha256("\n".join(new).encode()).hexdigest()[:8]
    spec = {
        **base,
        "name": f"catalog-{digest}",
        "fixed": {**base.get("fixed", {}), "categories": categories},
    }
    storage.store.submit_spec(spec)
    context.update_cursor(json.dumps(current))
    return dg.SkipReason(f"submitted {spec['name']} covering {', '.join(categories)}")
