"""The one place where Vario's Dagster ``Definitions`` are assembled."""

from __future__ import annotations

import dagster as dg

from assets_defs import batches, samples
from dagster_project import resources, sensors

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([samples, batches]),
    jobs=[batches.manifest_job, batches.render_shard_job, batches.dataset_job],
    sensors=[sensors.inbox_sensor, sensors.batch_complete_sensor],
    resources={"storage": resources.storage()},
)
