"""Model evaluation as Dagster assets: a model's predictions scored per slice, its model unit
tests as blocking checks, and the release they guard.

``model_evaluation`` (partition: model x dataset) runs ``vario.evaluate.run.evaluate_model``
(the same code as ``vario eval``) with the dataset's model tests
(``<templates>/<template>.model_tests.yaml``). Its two checks hold the model tests by
severity: ``model_tests_error`` blocks, so ``model_release`` in the same run does not
materialise when an ERROR test fails. Models and datasets become partitions when their
predictions are ingested (``vario ingest predictions``) or evaluated (``vario eval``).
"""

import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from assets_defs import OWNERS, tags, with_code_references
from assets_defs.metadata import table_metadata
from assets_defs.storage import StorageResource
from generators.labels.archive import write_atomic
from vario.evaluate.run import evaluate_model, recorded_evaluations
from vario.evaluate.slices import EvaluationSpec, dataset_spec

models = dg.DynamicPartitionsDefinition(name="models")
datasets = dg.DynamicPartitionsDefinition(name="datasets")
model_and_dataset = dg.MultiPartitionsDefinition({"model": models, "dataset": datasets})
ERROR_CHECK, WARN_CHECK = "model_tests_error", "model_tests_warn"


class ModelTestsResource(dg.ConfigurableResource):
    """Where model tests files live: ``<templates>/<template>.model_tests.yaml``."""

    templates: str

    def for_dataset(self, storage: StorageResource, dataset: str) -> EvaluationSpec:
        return dataset_spec(storage.store, Path(self.templates), dataset)


def _described(severity: str) -> str:
    blocks = (
        "It blocks: `model_release` does not materialize."
        if severity == "ERROR"
        else "It warns only."
    )
    return (
        f"Every {severity} model test of the dataset's model tests file "
        "(`<template>.model_tests.yaml`) holds: a metric of a slice (mAP, AP50, AP75, AR, "
        "precision, recall) against its threshold. Metadata lists each test's value; a "
        f"failure names the tests that failed. {blocks} Remedy: improve the model on the "
        "failing slice (`vario regenerate` writes a batch targeted at it)."
    )


@dg.asset(
    partitions_def=model_and_dataset,
    group_name="evaluation",
    kinds={"parquet"},
    deps=["model_predictions"],
    owners=OWNERS,
    tags=tags("evaluation", "evaluation"),
    check_specs=[
        dg.AssetCheckSpec(
            ERROR_CHECK,
            asset="model_evaluation",
            blocking=True,
            partitions_def=model_and_dataset,  # each result is the model x dataset's
            description=_described("ERROR"),
        ),
        dg.AssetCheckSpec(
            WARN_CHECK,
            asset="model_evaluation",
            partitions_def=model_and_dataset,
            description=_described("WARN"),
        ),
    ],
)
def model_evaluation(
    context: dg.AssetExecutionContext, storage: StorageResource, model_tests: ModelTestsResource
):
    """A model's current predictions on a dataset, evaluated per slice (COCO metrics with
    faster-coco-eval): `metrics.parquet` and `tests.parquet` under `evaluations/`, its model
    tests as checks. Partition: model x dataset, added when predictions are ingested."""
    keys = context.partition_key.keys_by_dimension
    model, dataset = keys["model"], keys["dataset"]
    spec = model_tests.for_dataset(storage, dataset)
    result = evaluate_model(storage.store, model, dataset, spec)
    metrics_file = result.folder / "metrics.parquet"
    metadata: dict = {
        "evaluation": result.id,
        "folder": dg.MetadataValue.path(str(result.folder)),
        "unchanged": result.up_to_date,
        **table_metadata(pq.read_schema(metrics_file), pq.read_metadata(metrics_file).num_rows),
    }
    for name, m in result.metrics.items():
        for metric in ("map", "ap50", "recall"):
            value = getattr(m, metric)
            if value == value:  # NaN (no truth in the slice) is not plotted
                metadata[f"{name}/{metric}"] = float(value)
    yield dg.MaterializeResult(metadata=metadata)
    for check, severity in ((ERROR_CHECK, "ERROR"), (WARN_CHECK, "WARN")):
        tests = [t for t in result.tests if t.severity == severity]
        failed = [t.name for t in tests if not t.passed]
        yield dg.AssetCheckResult(
            check_name=check,
            passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR
            if severity == "ERROR"
            else dg.AssetCheckSeverity.WARN,
            metadata={
                "failed": dg.MetadataValue.json(failed),
                **{t.name: float(t.value) for t in tests if t.value == t.value},
            },
        )


@dg.asset(
    partitions_def=model_and_dataset,
    group_name="evaluation",
    kinds={"json"},
    deps=[model_evaluation],
    owners=OWNERS,
    tags=tags("evaluation", "evaluation"),
)
def model_release(context: dg.AssetExecutionContext, storage: StorageResource):
    """The model released for the dataset: `releases/<model>/<dataset>.json` names the
    evaluation it passed. It materializes only when no ERROR model test failed; the failed
    tests are on `model_evaluation`'s checks."""
    keys = context.partition_key.keys_by_dimension
    model, dataset = keys["model"], keys["dataset"]
    store = storage.store
    recorded = recorded_evaluations(store, model, dataset)
    if not recorded:
        raise dg.Failure(f"{model} was never evaluated on {dataset}", allow_retries=False)
    summary = json.loads((recorded[-1] / "evaluation.json").read_text())
    if not summary["passed"]:
        raise dg.Failure(f"{model} failed ERROR model tests on {dataset}", allow_retries=False)
    target = store.root / "releases" / model / f"{dataset}.json"
    release = {"model": model, "dataset": dataset, "evaluation": summary["id"]}
    write_atomic(target, json.dumps(release, indent=2).encode())
    return dg.MaterializeResult(metadata={"evaluation": summary["id"], "release": str(target)})


evaluation_job = dg.define_asset_job(
    "model_evaluation_job",
    selection=[model_evaluation, model_release],
    description="Evaluates a model's predictions on a dataset per slice and releases it if "
    "no ERROR model test failed (launched by `vario eval` or from the UI, one run per "
    "model x dataset).",
)

defs = dg.Definitions(
    assets=with_code_references([model_evaluation, model_release]),
    jobs=[evaluation_job],
)
