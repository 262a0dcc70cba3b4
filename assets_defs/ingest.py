"""Ingestion as Dagster assets, so every ingestion is a run in the UI with what it added.

``real_dataset`` (partition: the dataset's name) brings a COCO-format dataset in beside the
synthetic data; ``model_predictions`` (partitions: model x dataset) a model's predictions on a
batch or a real dataset. Both call ``vario.ingest`` (the same code as ``vario ingest``), which
validates everything before writing, writes a new version only when the input changed, and
leaves the earlier versions queryable. The paths come as run config.
"""

from pathlib import Path

import dagster as dg
import yaml
from pydantic import Field

from assets_defs.evaluation import datasets, model_and_dataset
from assets_defs.storage import StorageResource
from vario.ingest.predictions import ingest_predictions
from vario.ingest.real import ingest_coco_dataset


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


def _metadata(summary) -> dict:
    """Every plain field of an ingestion's summary, for the UI."""
    shown = {}
    for name, value in vars(summary).items():
        if isinstance(value, bool | int | float | str):
            shown[name] = value
        elif isinstance(value, Path):
            shown[name] = dg.MetadataValue.path(str(value))
        elif isinstance(value, dict | list):
            shown[name] = dg.MetadataValue.json(value)
    return shown


@dg.asset(partitions_def=datasets, group_name="evaluation", kinds={"parquet"})
def real_dataset(
    context: dg.AssetExecutionContext, config: RealDatasetConfig, storage: StorageResource
):
    """A real dataset in COCO format, ingested beside the synthetic data: its images stored
    by content, its labels as a new version of the ``frames`` and ``objects`` tables (the
    views show the current one; ``real_frames`` and ``real_objects`` every one)."""
    mapping = None
    if config.category_map:
        mapping = yaml.safe_load(Path(config.category_map).read_text()) or {}
    summary = ingest_coco_dataset(
        storage.store,
        context.partition_key,
        Path(config.annotations),
        Path(config.images),
        category_map=mapping,
    )
    return dg.MaterializeResult(metadata=_metadata(summary))


@dg.asset(partitions_def=model_and_dataset, group_name="evaluation", kinds={"parquet"})
def model_predictions(
    context: dg.AssetExecutionContext, config: PredictionsConfig, storage: StorageResource
):
    """A model's predictions on a dataset, validated row by row and stored as a version of
    the ``predictions`` table, which ``model_evaluation`` scores."""
    keys = context.partition_key.keys_by_dimension
    summary = ingest_predictions(
        storage.store,
        keys["model"],
        keys["dataset"],
        Path(config.source),
        images=Path(config.images) if config.images else None,
    )
    return dg.MaterializeResult(metadata=_metadata(summary))


ingest_dataset_job = dg.define_asset_job("ingest_dataset_job", selection=[real_dataset])
ingest_predictions_job = dg.define_asset_job(
    "ingest_predictions_job", selection=[model_predictions]
)

defs = dg.Definitions(
    assets=[real_dataset, model_predictions], jobs=[ingest_dataset_job, ingest_predictions_job]
)
