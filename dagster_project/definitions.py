"""The one place where Vario's Dagster ``Definitions`` are assembled."""

from __future__ import annotations

import dagster as dg

from assets_defs import batches, quality, samples
from dagster_project import resources, schedules, sensors

resources.user_catalog()  # render workers started from this process see the user's assets

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([samples, batches, quality]),
    jobs=[batches.manifest_job, batches.render_shard_job, batches.dataset_job, quality.release_job],
    sensors=[sensors.inbox_sensor, sensors.batch_complete_sensor, schedules.catalog_sensor],
    schedules=[schedules.nightly_batch],
    resources={"storage": resources.storage(), "dataset_tests": resources.dataset_tests()},
)
