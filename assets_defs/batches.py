"""Batches as partitioned assets: a manifest per batch, then per shard the rendered archives
and the label tables, and the dataset over every shard.

A partition is a *shard* of jobs, not a job: Dagster's UI and backfills slow down past tens
of thousands of partitions and each run costs seconds to start, so a shard's run renders many
jobs in parallel worker processes.
"""

import base64

import dagster as dg

from assets_defs.storage import StorageResource
from generators import archive as arc
from generators import dataset as ds
from generators import shard as sh
from generators.batch import batch_of
from generators.preview import boxed_frame

batches = dg.DynamicPartitionsDefinition(name="batches")
shards = dg.DynamicPartitionsDefinition(name="shards")


def _markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return "\n".join(lines)


@dg.asset(partitions_def=batches, group_name="batches", kinds={"parquet"})
def batch_manifest(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    """The planned jobs of a batch: one row per job with its id, shard, seed and parameters.
    Written when the spec is accepted; this records its shape."""
    store, batch = storage.store, context.partition_key
    manifest, spec = store.manifest(batch), store.spec(batch)
    sample = [
        {"job": r["job_index"], "job_id": r["job_id"], "shard": r["shard"], "seed": r["seed"]}
        for r in manifest.slice(0, 5).to_pylist()
    ]
    return dg.MaterializeResult(
        metadata={
            "generator": spec.generator,
            "renderer": spec.renderer,
            "jobs": manifest.num_rows,
            "shards": len(set(manifest.column("shard").to_pylist())),
            "source": spec.sampler.kind if spec.sampler else "explicit",
            "manifest": dg.MetadataValue.path(str(store.manifest_path(batch))),
            "first jobs": dg.MetadataValue.md(_markdown_table(sample)),
        }
    )


@dg.asset(
    partitions_def=shards,
    group_name="batches",
    kinds={"pybullet", "blender"},
    deps=[dg.AssetDep(batch_manifest, partition_mapping=dg.AllPartitionMapping())],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    check_specs=[dg.AssetCheckSpec("archives_complete", asset="rendered_shard")],
)
def rendered_shard(context: dg.AssetExecutionContext, storage: StorageResource):
    """Every job of the shard rendered into its archive. A retry or a re-run skips jobs whose
    archive is complete; failed jobs are recorded and tolerated up to the batch's rate."""
    store, shard = storage.store, context.partition_key
    batch = batch_of(shard)
    spec = store.spec(batch)
    manifest = sh.shard_manifest(store.manifest(batch), shard)
    out_dir = store.archive_dir(batch)

    def progress(outcome: sh.JobOutcome, done: int, total: int) -> None:
        if outcome.status == "failed":
            context.log.warning(f"job {outcome.job_id} failed: {outcome.error}")
        if done == total or done % max(1, total // 10) == 0:
            context.log.info(f"{done}/{total} jobs rendered")

    outcomes = sh.run_shard(spec.generator, manifest, out_dir, on_job=progress)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    share = sh.failed_share(outcomes)
    if share > spec.max_failure_rate:
        raise dg.Failure(
            f"{counts['failed']} of {len(outcomes)} jobs failed, more than the batch's "
            f"max_failure_rate {spec.max_failure_rate}",
            metadata={
                "errors": dg.MetadataValue.md(
                    _markdown_table(
                        [
                            {"job_id": o.job_id, "error": (o.error or "").splitlines()[0]}
                            for o in outcomes
                            if o.status == "failed"
                        ][:20]
                    )
                )
            },
        )
    missing = [
        o.job_id
        for o in outcomes
        if o.status != "failed" and not sh.is_complete(sh.archive_path(out_dir, o.job_id))
    ]
    ok_archives = [sh.archive_path(out_dir, o.job_id) for o in outcomes if o.status != "failed"]
    metadata = {
        **{f"jobs {k}": v for k, v in counts.items()},
        "archives": dg.MetadataValue.path(str(out_dir)),
    }
    if ok_archives:
        png = base64.b64encode(boxed_frame(ok_archives[0])).decode()
        metadata["preview"] = dg.MetadataValue.md(f"![preview](data:image/png;base64,{png})")
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(
        check_name="archives_complete",
        passed=not missing and not counts["failed"],
        severity=dg.AssetCheckSeverity.ERROR if missing else dg.AssetCheckSeverity.WARN,
        metadata={
            "missing": dg.MetadataValue.json(missing),
            "failed": dg.MetadataValue.json([o.job_id for o in outcomes if o.status == "failed"]),
        },
    )


@dg.asset(partitions_def=shards, group_name="batches", kinds={"parquet"}, deps=[rendered_shard])
def shard_labels(context: dg.AssetExecutionContext, storage: StorageResource):
    """The shard's jobs, frames, objects and events tables: one Parquet file per table,
    hive-partitioned by batch, assembled in manifest order."""
    store, shard = storage.store, context.partition_key
    batch = batch_of(shard)
    spec = store.spec(batch)
    manifest = sh.shard_manifest(store.manifest(batch), shard)
    tables = sh.shard_tables(spec.generator, manifest, store.archive_dir(batch))
    metadata = {}
    for name, table in tables.items():
        path = store.table_path(name, batch, shard)
        arc.write_atomic(path, arc.parquet_bytes(table))
        metadata[f"{name} rows"] = table.num_rows
    metadata["tables"] = dg.MetadataValue.path(str(store.root / "tables"))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(group_name="dataset", kinds={"duckdb"}, deps=[shard_labels])
def dataset(storage: StorageResource) -> dg.MaterializeResult:
    """Every shard's tables as DuckDB views (jobs, frames, objects, events), in memory over
    the Parquet files, with the dataset's totals."""
    con = ds.connect(storage.store)
    per_batch = (
        con.sql(
            "SELECT batch, count(*) AS jobs, count(*) FILTER (status = 'failed') AS failed, "
            "round(sum(render_seconds), 1) AS render_seconds "
            "FROM jobs GROUP BY batch ORDER BY batch"
        )
        .to_arrow_table()
        .to_pylist()
    )
    return dg.MaterializeResult(
        metadata={
            **ds.summary(con),
            "batches": dg.MetadataValue.md(_markdown_table(per_batch)),
            "tables": dg.MetadataValue.path(str(storage.store.root / "tables")),
            "query": dg.MetadataValue.md('`uv run vario query "SELECT ... FROM objects"`'),
        }
    )


manifest_job = dg.define_asset_job("batch_manifest_job", selection=[batch_manifest])
render_shard_job = dg.define_asset_job("render_shard_job", selection=[rendered_shard, shard_labels])
dataset_job = dg.define_asset_job("dataset_job", selection=[dataset])
