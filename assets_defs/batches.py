"""Batches as partitioned assets: a manifest per batch, then per shard the rendered archives
and the label tables, and the dataset over every shard.

A partition is a *shard* of jobs, not a job: Dagster's UI and backfills slow down past tens
of thousands of partitions and each run costs seconds to start, so a shard's run renders many
jobs in parallel worker processes.
"""

import base64
import time
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from assets_defs import OWNERS, generators_version, tags, with_code_references
from assets_defs.metadata import markdown_table, table_metadata
from assets_defs.storage import StorageResource
from generators.labels import archive as arc
from generators.labels.preview import contact_sheet
from vario.batch.plan import batch_of
from vario.run import shard as sh
from vario.store import views as ds
from vario.store.layout import DataStore

batches = dg.DynamicPartitionsDefinition(name="batches")
shards = dg.DynamicPartitionsDefinition(name="shards")


@dg.asset(
    partitions_def=batches,
    group_name="batches",
    kinds={"parquet"},
    owners=OWNERS,
    tags=tags("batches", "plan"),
)
def batch_manifest(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    """The planned jobs of a batch: one row per job with its id, shard, seed and parameters,
    in `batches/<batch>/manifest.parquet`. The inbox sensor writes it when it accepts the
    spec; this records its shape. A failure means the spec or manifest is missing from
    storage: submit the spec again."""
    store, batch = storage.store, context.partition_key
    storage.fetch(store.spec_path(batch), store.manifest_path(batch))
    spec = store.spec(batch)
    manifest = store.manifest(batch, columns=["job_index", "job_id", "shard", "seed"])
    sample = [
        {"job": r["job_index"], "job_id": r["job_id"], "shard": r["shard"], "seed": r["seed"]}
        for r in manifest.slice(0, 5).to_pylist()
    ]
    return dg.MaterializeResult(
        metadata={
            "generator": spec.generator,
            "renderer": spec.renderer,
            "jobs": manifest.num_rows,
            "shards": len(pc.unique(manifest.column("shard"))),
            "source": spec.sampler.kind if spec.sampler else "explicit",
            "manifest": dg.MetadataValue.path(str(store.manifest_path(batch))),
            **table_metadata(pq.read_schema(store.manifest_path(batch)), manifest.num_rows),
            "first jobs": dg.MetadataValue.md(markdown_table(sample)),
        }
    )


class ShardConfig(dg.Config):
    retry_failed: bool = Field(
        False,
        description="Render again the jobs that failed in an earlier run of the shard "
        "(by default their recorded failure stands).",
    )


_ABANDONED = (
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
    dg.DagsterRunStatus.CANCELING,
)


# With the data on S3, how often a shard looks there for its batch's cancel marker.
CANCEL_LOOK_SECONDS = 10.0
SHARD_PREVIEW_JOBS = 6  # frames on a shard's contact sheet


def preview_metadata(storage: StorageResource, path: Path, archives: list[Path]) -> dict:
    """Write a contact sheet of the archives' first frames to ``path``, publish it, and return
    the metadata that links it and shows it inline (a JPEG of about 100-300 KB as base64:
    Dagster's Markdown shows data URLs, and the file serves a larger look)."""
    sheet = contact_sheet(archives)
    arc.write_atomic(path, sheet)
    storage.publish(path)
    inline = base64.b64encode(sheet).decode()
    return {
        "contact sheet": dg.MetadataValue.path(str(path)),
        "preview": dg.MetadataValue.md(f"![contact sheet](data:image/jpeg;base64,{inline})"),
    }


def _stop_if_cancelled(store: DataStore, batch: str) -> None:
    """Raise before the next job once the batch is cancelled (``DataStore.cancel``, the API's
    ``POST /v1/batches/{name}/cancel``); the jobs rendered before are kept."""
    if store.cancelled(batch):
        raise dg.Failure(
            f"batch {batch} was cancelled: stopped before the next job; the jobs rendered are kept",
            allow_retries=False,
        )


def _stop_if_abandoned(context: dg.AssetExecutionContext) -> None:
    """Raise if the instance marked this run failed or canceled while its step went on (run
    monitoring does so when the run worker is lost): its results would contradict the run's
    recorded end."""
    run = context.instance.get_run_by_id(context.run.run_id)
    if run is not None and run.status in _ABANDONED:
        raise dg.Failure(
            f"run {context.run.run_id} was marked {run.status.value} while its step ran: "
            "stopped, nothing materialized",
            allow_retries=False,
        )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "rendered_shard",
            description="Every job of the shard rendered into its archive (frames, masks, "
            "depth, labels) in `archives/<batch>/`, from the batch manifest, with a contact "
            "sheet of its frames. A job that fails is recorded with its error; more failures "
            "than the batch's `max_failure_rate` fail the run: read the errors in its "
            "metadata, fix the generator or parameters, and run the shard again (it resumes).",
            deps=[dg.AssetDep(batch_manifest, partition_mapping=dg.AllPartitionMapping())],
            group_name="batches",
            kinds={"pybullet", "blender"},
            owners=OWNERS,
            tags=tags("batches", "render", renderer="fast-or-cycles"),
            code_version=generators_version(),
        ),
        dg.AssetSpec(
            "shard_labels",
            description="The shard's `jobs`, `frames`, `objects` and `events` label tables, "
            "read from its archives: one Parquet file per table under "
            "`tables/<table>/batch=<batch>/`, which the `dataset` views read.",
            deps=["rendered_shard"],
            group_name="batches",
            kinds={"parquet"},
            owners=OWNERS,
            tags=tags("batches", "labels"),
            code_version=generators_version(),
        ),
    ],
    partitions_def=shards,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    check_specs=[
        dg.AssetCheckSpec(
            "archives_complete",
            asset="rendered_shard",
            partitions_def=shards,
            description="Every job of the shard has a complete archive: ERROR when one is "
            "missing (the shard did not finish: run it again, it resumes), WARN when jobs "
            "failed within the batch's max_failure_rate (their errors are in the metadata).",
        )
    ],
)
def shard(context: dg.AssetExecutionContext, config: ShardConfig, storage: StorageResource):
    """Renders a shard's jobs in parallel worker processes and writes its label tables, in
    one step: fresh jobs hand their tables over in memory. A retry or re-run skips jobs whose
    archive is complete, and failed jobs unless ``retry_failed``; failed jobs are recorded
    and tolerated up to the batch's rate. A run marked failed or canceled meanwhile (its run
    worker was lost) stops at the next job and materializes nothing; so does a cancelled batch
    (its rendered jobs are kept)."""
    store, key = storage.store, context.partition_key
    batch = batch_of(key)
    storage.fetch(store.spec_path(batch), store.manifest_path(batch), store.cancel_path(batch))
    spec = store.spec(batch)
    manifest = store.shard_manifest(batch, key)
    out_dir = store.archive_dir(batch)
    job_ids = manifest.column("job_id").to_pylist()
    storage.fetch(*(f(out_dir, j) for j in job_ids for f in (sh.archive_path, sh.failure_path)))

    _stop_if_cancelled(store, batch)  # a run queued before the batch was cancelled

    looked = time.monotonic()

    def progress(outcome: sh.JobOutcome, done: int, total: int) -> None:
        nonlocal looked
        if time.monotonic() - looked > CANCEL_LOOK_SECONDS:  # cancelled on another machine?
            storage.fetch(store.cancel_path(batch))
            looked = time.monotonic()
        _stop_if_cancelled(store, batch)
        _stop_if_abandoned(context)
        if outcome.status == "failed":
            context.log.warning(f"job {outcome.job_id} failed: {outcome.error}")
        if done == total or done % max(1, total // 10) == 0:
            context.log.info(f"{done}/{total} jobs rendered")

    started = time.perf_counter()
    outcomes = sh.run_shard(
        spec.generator, manifest, out_dir, on_job=progress, retry_failed=config.retry_failed
    )
    seconds = time.perf_counter() - started
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    failed = [o for o in outcomes if o.status == "failed"]
    if sh.failed_share(outcomes) > spec.max_failure_rate:
        raise dg.Failure(
            f"{len(failed)} of {len(outcomes)} jobs failed, more than the batch's "
            f"max_failure_rate {spec.max_failure_rate}",
            metadata={
                "errors": dg.MetadataValue.md(
                    markdown_table(
                        [
                            {"job_id": o.job_id, "error": (o.error or "").splitlines()[0]}
                            for o in failed
                        ][:20]
                    )
                )
            },
            # each job had its try and its error is recorded; a retry would render the same
            # failures again (and a Cycles job start Blender again). Retries are for crashes
            # of the step itself; a re-run of the shard retries the failed jobs.
            allow_retries=False,
        )
    _stop_if_abandoned(context)
    done = [sh.archive_path(out_dir, o.job_id) for o in outcomes if o.status != "failed"]
    missing = [p.stem for p in done if not arc.is_complete(p)]
    tables = sh.shard_tables(spec.generator, manifest, out_dir, outcomes)
    render = pc.sum(tables["jobs"].column("render_seconds")).as_py() or 0.0
    metadata = {
        **{f"jobs {k}": v for k, v in counts.items()},
        "shard seconds": round(seconds, 2),
        "render seconds (sum over jobs)": round(render, 2),
        "archives": dg.MetadataValue.path(str(out_dir)),
    }
    complete = [p for p in done if p.stem not in missing]
    if complete:
        sheet = store.preview_path(batch, key)
        metadata |= preview_metadata(storage, sheet, complete[:SHARD_PREVIEW_JOBS])
    fresh = [sh.archive_path(out_dir, o.job_id) for o in outcomes if o.status == "ok"]
    storage.publish(*fresh, *(sh.failure_path(out_dir, o.job_id) for o in failed))
    yield dg.MaterializeResult(asset_key="rendered_shard", metadata=metadata)
    yield dg.AssetCheckResult(
        asset_key="rendered_shard",
        check_name="archives_complete",
        passed=not missing and not failed,
        severity=dg.AssetCheckSeverity.ERROR if missing else dg.AssetCheckSeverity.WARN,
        metadata={
            "jobs": len(outcomes),
            "missing archives": len(missing),
            "failed jobs": len(failed),
            "missing": dg.MetadataValue.json(missing),
            "failed": dg.MetadataValue.json([o.job_id for o in failed]),
        },
    )
    _stop_if_abandoned(context)
    # Dagster's table metadata describes the objects table: a row is one labelled object
    labels = {
        "tables": dg.MetadataValue.path(str(store.root / "tables")),
        **table_metadata(tables["objects"].schema, tables["objects"].num_rows),
    }
    for name, table in tables.items():
        path = store.table_path(name, batch, key)
        arc.write_atomic(path, arc.parquet_bytes(table))
        storage.publish(path)
        labels[f"{name} rows"] = table.num_rows
    yield dg.MaterializeResult(asset_key="shard_labels", metadata=labels)


@dg.asset(
    group_name="dataset",
    kinds={"duckdb"},
    deps=["shard_labels"],
    owners=OWNERS,
    tags=tags("batches", "labels"),
)
def dataset(storage: StorageResource) -> dg.MaterializeResult:
    """Every shard's tables as DuckDB views (`jobs`, `frames`, `objects`, `events`), in
    memory over the Parquet files, with the dataset's totals per batch. Query it with
    `vario query "SELECT ..."`. Refreshed when a batch's shards are all labelled."""
    con = ds.connect(storage.store, storage.arrow_filesystem())
    per_batch = (
        con.sql(
            "SELECT batch, count(*) AS jobs, count(*) FILTER (status = 'failed') AS failed, "
            "round(sum(render_seconds), 1) AS render_seconds "
            "FROM jobs GROUP BY batch ORDER BY batch"
        )
        .to_arrow_table()
        .to_pylist()
    )
    totals = ds.summary(con)
    objects = con.sql("SELECT * FROM objects LIMIT 0").to_arrow_table().schema
    return dg.MaterializeResult(
        metadata={
            **totals,
            **table_metadata(objects, totals["objects"]),
            "batches": dg.MetadataValue.md(markdown_table(per_batch)),
            "tables": dg.MetadataValue.path(str(storage.store.root / "tables")),
            "query": dg.MetadataValue.md('`uv run vario query "SELECT ... FROM objects"`'),
        }
    )


manifest_job = dg.define_asset_job(
    "batch_manifest_job",
    selection=[batch_manifest],
    description="Records a planned batch's manifest (launched by the inbox sensor and the "
    "nightly schedule, one run per batch).",
)
# One step: run in the run's own process. A step subprocess would load the code a second
# time (seconds per shard run), and the render workers are processes of their own anyway.
render_shard_job = dg.define_asset_job(
    "render_shard_job",
    selection=[shard],
    executor_def=dg.in_process_executor,
    description="Renders one shard's jobs and writes its label tables (launched by the inbox "
    "sensor, one run per shard, queued per device: `vario/device` cpu or gpu). A failed run "
    "resumes where it stopped when run again.",
)
dataset_job = dg.define_asset_job(
    "dataset_job",
    selection=[dataset],
    description="Refreshes the dataset's views (launched by the batch-complete sensor).",
)

defs = dg.Definitions(
    assets=with_code_references([batch_manifest, shard, dataset]),
    jobs=[manifest_job, render_shard_job, dataset_job],
)
