"""Training exports as a Dagster asset: one partition per batch and format.

``dataset_export`` writes ``exports/<batch>/<format>/`` with ``vario.export.run`` (the same
code as ``vario export``), every frame of the batch, split 80/10/10 by job, and publishes it
(with data on S3, under the same prefix). It follows the
blocking dataset tests: a batch whose recorded tests failed an ERROR check, or that was never
tested, is not exported.
"""

import base64

import dagster as dg

from assets_defs import OWNERS, tags, with_code_references
from assets_defs.batches import batches
from assets_defs.storage import StorageResource
from generators.labels.preview import boxed_frame
from vario.export.run import FORMATS, export_batch
from vario.quality import checks as quality

formats = dg.StaticPartitionsDefinition(list(FORMATS))
batch_and_format = dg.MultiPartitionsDefinition({"batch": batches, "format": formats})


@dg.asset(
    partitions_def=batch_and_format,
    group_name="dataset",
    kinds={"parquet", "json"},
    deps=["batch_dataset"],
    owners=OWNERS,
    tags=tags("exports", "export"),
)
def dataset_export(context: dg.AssetExecutionContext, storage: StorageResource):
    """The batch in a training format (COCO, YOLO, KITTI, BOP, Hugging Face) in
    `exports/<batch>/<format>/`, split 80/10/10 by job, with `export.json` and
    `checksums.sha256`. Refused for a batch that failed (or never ran) its blocking dataset
    tests: see `batch_dataset`'s checks. `vario export` gives slices, splits and
    augmentations."""
    keys = context.partition_key.keys_by_dimension
    batch, fmt = keys["batch"], keys["format"]
    storage.fetch_batch(batch)
    store = storage.store
    storage.fetch(quality.results_path(store, batch))
    results = quality.recorded_results(store, batch)
    blocking = [r.name for r in results or [] if r.blocking]
    if results is None or blocking:
        why = f"failed ERROR tests ({', '.join(blocking)})" if blocking else "was never tested"
        raise dg.Failure(f"batch {batch!r} {why}: not exported", allow_retries=False)
    summary = export_batch(store, batch, fmt, store.root / "exports" / batch / fmt)
    storage.publish_tree(summary.out)
    sample = next(iter(sorted(store.archive_dir(batch).glob("*.zip"))), None)
    metadata = {
        "export": dg.MetadataValue.path(str(summary.out)),
        "size on disk (MiB)": round(summary.bytes / 2**20, 2),
        "frames per split": dg.MetadataValue.json(summary.frames),
        "objects per split": dg.MetadataValue.json(summary.objects),
        "objects per category": dg.MetadataValue.json(summary.categories),
        "unchanged": summary.up_to_date,
    }
    if sample is not None:
        png = base64.b64encode(boxed_frame(sample)).decode()
        metadata["sample"] = dg.MetadataValue.md(f"![sample](data:image/png;base64,{png})")
    return dg.MaterializeResult(metadata=metadata)


export_job = dg.define_asset_job(
    "dataset_export_job",
    selection=[dataset_export],
    description="Exports a tested batch in one training format (launched from the UI or by "
    "the API, one run per batch x format).",
)

defs = dg.Definitions(assets=with_code_references([dataset_export]), jobs=[export_job])
