"""Ingestion as Dagster assets, so every ingestion is a run in the UI with what it added.

``real_dataset`` (partition: the dataset's name) brings a COCO-format dataset in beside the
synthetic data; ``model_predictions`` (partitions: model x dataset) a model's predictions on a
batch or a real dataset. Both call ``vario.ingest``, which validates everything before
writing, writes a new version only when the input changed, and leaves the earlier versions
queryable. The paths come as run config. ``vario ingest`` runs these same assets in process
(``dagster_project.local_run.run_asset_job``) and shows their progress through
``progress_sink``; the run's event log gets a line per step.
"""

import time
from contextvars import ContextVar
from pathlib import Path

import dagster as dg
import pyarrow as pa
from pydantic import Field

from assets_defs import OWNERS, tags, with_code_references
from assets_defs.evaluation import datasets, model_and_dataset
from assets_defs.metadata import table_metadata
from assets_defs.storage import StorageResource
from vario.ingest.common import IngestSummary, Progress
from vario.ingest.predictions import ingest_predictions
from vario.ingest.real import ingest_coco_dataset, load_category_map
from vario.store import views

# where a run executed in this process also reports progress (the CLI's progress bars)
progress_sink: ContextVar[Progress | None] = ContextVar("progress_sink", default=None)
_LOG_EVERY = 10.0  # seconds between progress lines in the run's event log


class RealDatasetConfig(dg.Config):
    annotations: str = Field(description="The COCO instances JSON.")
    images: str = Field(description="The folder the JSON's file names are relative to.")
    category_map: str | None = Field(
        None, description="YAML mapping the file's category names to the catalog's."
    )


class PredictionsConfig(dg.Config):
    source: str = Field(description="COCO results JSON, or Parquet (docs/real-data.md).")
    images: str | None = Field(
        None, description="For COCO results on a batch: the COCO JSON of a Vario export."
    )


def _progress(context: dg.AssetExecutionContext) -> Progress:
    """Progress to the run's event log (a line per step at most every ``_LOG_EVERY`` s, and
    at its end) and to the ``progress_sink`` of this process, if any."""
    sink, logged = progress_sink.get(), {}

    def report(step: str, done: int, total: int | None) -> None:
        if sink is not None:
            sink(step, done, total)
        now = time.monotonic()
        if done == total or now - logged.get(step, 0.0) >= _LOG_EVERY:
            logged[step] = now
            context.log.info(f"{step}: {done:,}{f' of {total:,}' if total else ''}")

    return report


def _result(summary: IngestSummary, schema: pa.Schema, rows: int) -> dg.MaterializeResult:
    """The ingest's summary, and its table's columns and rows (``rows`` of ``schema``)."""
    return dg.MaterializeResult(
        metadata={
            **table_metadata(schema, rows),
            "summary": summary.line(),
            "version": summary.version,
            "folder": dg.MetadataValue.path(str(summary.folder)),
            "rows": summary.rows,
            "objects": summary.objects,
            "skipped": dg.MetadataValue.json(summary.skipped),
            "unchanged": summary.up_to_date,
        }
    )


@dg.asset(
    partitions_def=datasets,
    group_name="evaluation",
    kinds={"parquet"},
    owners=OWNERS,
    tags=tags("ingest", "ingest"),
)
def real_dataset(
    context: dg.AssetExecutionContext, config: RealDatasetConfig, storage: StorageResource
):
    """A real dataset in COCO format, ingested beside the synthetic data.

    Reads the run config's COCO annotations file and images folder (and an optional
    category map). Writes the images by content hash and the labels as a new version of
    the `frames` and `objects` tables: the views show the current version, `real_frames`
    and `real_objects` every one. On failure it names the refused rows and writes nothing:
    fix the file (or map its categories) and ingest again with `vario ingest dataset`."""
    mapping = load_category_map(Path(config.category_map)) if config.category_map else None
    summary = ingest_coco_dataset(
        storage.store,
        context.partition_key,
        Path(config.annotations),
        Path(config.images),
        category_map=mapping,
        on_progress=_progress(context),
    )
    return _result(summary, views.REAL_OBJECTS, summary.objects)


@dg.asset(
    partitions_def=model_and_dataset,
    group_name="evaluation",
    kinds={"parquet"},
    owners=OWNERS,
    tags=tags("ingest", "ingest"),
)
def model_predictions(
    context: dg.AssetExecutionContext, config: PredictionsConfig, storage: StorageResource
):
    """A model's predictions on a dataset (a batch or a real dataset), validated row by row.

    Reads the run config's predictions file (COCO results JSON or Parquet). Writes a new
    version of the `predictions` table, which `model_evaluation` scores. On failure it
    names the refused rows and writes nothing: fix them and ingest again with
    `vario ingest predictions`."""
    keys = context.partition_key.keys_by_dimension
    summary = ingest_predictions(
        storage.store,
        keys["model"],
        keys["dataset"],
        Path(config.source),
        images=Path(config.images) if config.images else None,
        on_progress=_progress(context),
    )
    return _result(summary, views.PREDICTIONS, summary.rows)


ingest_dataset_job = dg.define_asset_job(
    "ingest_dataset_job",
    selection=[real_dataset],
    description="Ingests a real COCO dataset (launched by `vario ingest dataset` or from the "
    "UI with the paths as run config).",
)
ingest_predictions_job = dg.define_asset_job(
    "ingest_predictions_job",
    selection=[model_predictions],
    description="Ingests a model's predictions on a dataset (launched by `vario ingest "
    "predictions` or from the UI with the paths as run config).",
)

defs = dg.Definitions(
    assets=with_code_references([real_dataset, model_predictions]),
    jobs=[ingest_dataset_job, ingest_predictions_job],
)
