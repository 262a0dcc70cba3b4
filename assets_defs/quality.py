"""Dataset tests as blocking Dagster asset checks, and the export they guard.

``batch_dataset`` is one batch's slice of the dataset; its six checks (coverage, bias,
balance, edge cases, novelty, integrity) run with it, with thresholds from the batch template's
version-controlled tests file. A check failing with ERROR severity blocks: ``batch_export``
in the same run does not materialise, so a failing dataset does not flow downstream.
"""

import base64
from pathlib import Path

import dagster as dg

from assets_defs.batches import batches
from assets_defs.storage import StorageResource
from vario.quality import checks as quality
from vario.quality.report import write_report
from vario.store import export
from vario.store import views as ds


class DatasetTestsResource(dg.ConfigurableResource):
    """Where tests files live: ``<templates>/<template>.tests.yaml``."""

    templates: str

    def for_spec(self, spec) -> quality.DatasetTests:
        path = Path(self.templates) / f"{spec.template or spec.name}.tests.yaml"
        return quality.load_tests(path) if path.exists() else quality.DatasetTests()


@dg.asset(
    partitions_def=batches,
    group_name="dataset",
    kinds={"duckdb"},
    deps=[dg.AssetDep("shard_labels", partition_mapping=dg.AllPartitionMapping())],
    check_specs=[
        dg.AssetCheckSpec(
            name,
            asset="batch_dataset",
            blocking=True,
            partitions_def=batches,  # each result is the batch's: its history per batch
            description=(check.__doc__ or "").strip().splitlines()[0] if check.__doc__ else name,
        )
        for name, check in quality.CHECKS.items()
    ],
)
def batch_dataset(
    context: dg.AssetExecutionContext, storage: StorageResource, dataset_tests: DatasetTestsResource
):
    """One batch of the dataset, tested: its label tables with the dataset tests as checks.
    The checks run once; their results are recorded and the report is drawn from them."""
    batch, store = context.partition_key, storage.store
    storage.fetch_batch(batch)
    tests = dataset_tests.for_spec(store.spec(batch))
    results = quality.run_checks(store, batch, tests)
    report, plots = write_report(store, batch, results)
    storage.publish(quality.record_results(store, batch, results), report)
    con = ds.connect(store)
    counts = {  # the batch is a bound parameter, never SQL text
        name: con.execute(
            f"SELECT count(*) FROM {name} WHERE batch = $batch", {"batch": batch}
        ).fetchall()[0][0]
        for name in ("jobs", "frames", "objects")
    }
    shown = {title: png for title, png in plots.items() if "frames" not in title}
    images = "\n\n".join(
        f"**{title}**\n\n![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"
        for title, png in shown.items()
    )
    yield dg.MaterializeResult(
        metadata={
            **counts,
            "tests": dg.MetadataValue.json(
                {r.name: {"passed": r.passed, "severity": r.severity} for r in results}
            ),
            "report": dg.MetadataValue.path(str(report)),
            "plots": dg.MetadataValue.md(images),
        }
    )
    for r in results:
        yield dg.AssetCheckResult(
            check_name=r.name,
            passed=r.passed,
            severity=dg.AssetCheckSeverity(r.severity),
            description=r.message,
            metadata={
                "message": r.message,
                **r.figures(),  # numbers: the Plots view charts them across batches
                "figures": dg.MetadataValue.json(r.metadata),
            },
        )


@dg.asset(partitions_def=batches, group_name="dataset", kinds={"parquet"}, deps=[batch_dataset])
def batch_export(context: dg.AssetExecutionContext, storage: StorageResource):
    """The batch's labels as one Parquet file per table in ``exports/<batch>/``; runs only
    after ``batch_dataset`` passed its ERROR checks."""
    batch, store = context.partition_key, storage.store
    storage.fetch_batch(batch, archives=False)
    metadata = {}
    for name, (path, rows) in export.export_batch(store, batch).items():
        storage.publish(path)
        metadata[f"{name} rows"] = rows
    metadata["export"] = dg.MetadataValue.path(str(export.export_dir(store, batch)))
    return dg.MaterializeResult(metadata=metadata)


release_job = dg.define_asset_job("release_job", selection=[batch_dataset, batch_export])

defs = dg.Definitions(assets=[batch_dataset, batch_export], jobs=[release_job])
