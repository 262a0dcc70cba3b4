"""Dataset tests as blocking Dagster asset checks, and the export they guard.

``batch_dataset`` is one batch's slice of the dataset; its six checks (coverage, bias,
balance, edge cases, novelty, integrity) run with it, with thresholds from the batch template's
version-controlled tests file. A check failing with ERROR severity blocks: ``batch_export``
in the same run does not materialise, so a failing dataset does not flow downstream.
"""

import base64
import inspect
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from assets_defs import OWNERS, tags, with_code_references
from assets_defs.batches import batches, preview_metadata
from assets_defs.metadata import table_metadata
from assets_defs.storage import StorageResource
from vario.quality import checks as quality
from vario.store import export
from vario.store import views as ds

BATCH_PREVIEW_JOBS = 12  # frames on a batch's contact sheet: first jobs in id order


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
    owners=OWNERS,
    tags=tags("quality", "tests"),
    check_specs=[
        dg.AssetCheckSpec(
            name,
            asset="batch_dataset",
            blocking=True,
            partitions_def=batches,  # each result is the batch's: its history per batch
            # the check's docstring, as Markdown
            description=inspect.cleandoc(check.__doc__ or name).replace("``", "`"),
        )
        for name, check in quality.CHECKS.items()
    ],
)
def batch_dataset(
    context: dg.AssetExecutionContext, storage: StorageResource, dataset_tests: DatasetTestsResource
):
    """One batch of the dataset, tested: its label tables with the dataset tests (coverage,
    bias, balance, edge cases, novelty, integrity) as blocking checks, thresholds from the
    batch template's `.tests.yaml`. Writes `batches/<batch>/tests.json` and the HTML report
    beside it, with a contact sheet of the batch. An ERROR check that fails stops the
    release: read its message and figures, then fix the batch spec or the thresholds."""
    # Imported here: matplotlib is slow to import and the definitions load in every
    # process (the UI's code server among them); only this step draws.
    from vario.quality.report import sample_archives, write_report

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
    # grids of frames stay in the report (the contact sheet below is the inline look)
    shown = {title: png for title, png in plots.items() if "frames" not in title.lower()}
    sample = sample_archives(store, batch, BATCH_PREVIEW_JOBS)
    preview = preview_metadata(storage, store.preview_path(batch, batch), sample) if sample else {}
    images = "\n\n".join(
        f"**{title}**\n\n![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"
        for title, png in shown.items()
    )
    objects = con.sql("SELECT * FROM objects LIMIT 0").to_arrow_table().schema
    yield dg.MaterializeResult(
        metadata={
            **counts,
            **table_metadata(objects, counts["objects"]),
            "tests": dg.MetadataValue.json(
                {r.name: {"passed": r.passed, "severity": r.severity} for r in results}
            ),
            "report": dg.MetadataValue.path(str(report)),
            "plots": dg.MetadataValue.md(images),
            **preview,
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


@dg.asset(
    partitions_def=batches,
    group_name="dataset",
    kinds={"parquet"},
    deps=[batch_dataset],
    owners=OWNERS,
    tags=tags("quality", "export"),
)
def batch_export(context: dg.AssetExecutionContext, storage: StorageResource):
    """The batch's label tables as one Parquet file per table in `exports/<batch>/`.
    Materializes only after `batch_dataset` passed its ERROR checks: a batch missing here
    failed one, shown on `batch_dataset`'s checks."""
    batch, store = context.partition_key, storage.store
    storage.fetch_batch(batch, archives=False)
    metadata = {}
    for name, (path, rows) in export.export_batch(store, batch).items():
        storage.publish(path)
        metadata[f"{name} rows"] = rows
        if name == "objects":
            metadata.update(table_metadata(pq.read_schema(path), rows))
    metadata["export"] = dg.MetadataValue.path(str(export.export_dir(store, batch)))
    return dg.MaterializeResult(metadata=metadata)


release_job = dg.define_asset_job(
    "release_job",
    selection=[batch_dataset, batch_export],
    description="Tests a batch (its dataset tests as blocking checks) and exports it if no "
    "ERROR test failed (launched by the batch-complete sensor, one run per batch).",
)

defs = dg.Definitions(
    assets=with_code_references([batch_dataset, batch_export]), jobs=[release_job]
)
