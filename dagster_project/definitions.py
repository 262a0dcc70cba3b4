"""The one place where Vario's Dagster ``Definitions`` are assembled: each domain's own
``Definitions`` merged, with the sensors, the schedule and the resources."""

from __future__ import annotations

import dagster as dg

from assets_defs import batches, evaluation, exports, ingest, quality, samples
from dagster_project import resources, schedules, sensors

defs = dg.Definitions.merge(
    batches.defs,
    evaluation.defs,
    exports.defs,
    ingest.defs,
    quality.defs,
    samples.defs,
    dg.Definitions(
        sensors=[
            sensors.inbox_sensor,
            sensors.batch_complete_sensor,
            sensors.regenerate_sensor,
            schedules.catalog_sensor,
        ],
        schedules=[schedules.nightly_batch],
        resources={
            "storage": resources.storage(),
            "dataset_tests": resources.dataset_tests(),
            "model_tests": resources.model_tests(),
        },
    ),
)
