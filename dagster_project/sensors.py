"""Sensors: specs dropped in the inbox become partitions and runs; finished batches refresh
the dataset."""

from __future__ import annotations

import hashlib

import dagster as dg

from assets_defs.batches import batches, dataset_job, manifest_job, render_shard_job, shards
from assets_defs.quality import release_job
from assets_defs.storage import StorageResource
from generators.settings import settings
from vario.batch.plan import SHARD_SEPARATOR, plan
from vario.batch.spec import SpecError, load_spec

INTERVAL = settings().sensor_interval


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dg.sensor(
    jobs=[manifest_job, render_shard_job],
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def inbox_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
    """Validates each spec in the inbox. A valid one is planned, its batch and shards are
    registered as dynamic partitions and one run per shard is requested; run keys come from
    the spec's content, so a spec submitted twice runs once. An invalid one is moved to
    ``inbox/rejected/`` with its errors beside it, and launches nothing."""
    store = storage.store
    storage.pull_inbox()
    requests, new_batches, new_shards = [], [], []
    for path in store.inbox_specs():
        try:
            batch_plan = plan(load_spec(path))
            store.save_plan(batch_plan)
        except SpecError as exc:
            rejected = store.reject(path, exc.messages)
            storage.publish(rejected, rejected.with_name(rejected.name + ".error.txt"))
            context.log.warning(f"rejected {path.name}: {exc}")
            continue
        spec = batch_plan.spec
        storage.publish(store.spec_path(spec.name), store.manifest_path(spec.name))
        digest = _digest(spec.model_dump_json())
        new_batches.append(spec.name)
        new_shards += batch_plan.shards
        requests.append(
            dg.RunRequest(
                run_key=f"manifest:{spec.name}:{digest}",
                job_name=manifest_job.name,
                partition_key=spec.name,
            )
        )
        requests += [
            dg.RunRequest(
                run_key=f"shard:{shard}:{digest}",
                job_name=render_shard_job.name,
                partition_key=shard,
                tags={"vario/batch": spec.name},
            )
            for shard in batch_plan.shards
        ]
        store.mark_processed(path)
        context.log.info(f"accepted {path.name}: {len(batch_plan.shards)} shards")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[
            batches.build_add_request(new_batches),
            shards.build_add_request(new_shards),
        ]
        if new_batches
        else [],
    )


@dg.sensor(
    jobs=[dataset_job, release_job],
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def batch_complete_sensor(context: dg.SensorEvaluationContext):
    """Once every shard of a batch has its label tables: refresh the dataset, and test and
    release the batch (once per batch)."""
    done = context.instance.get_materialized_partitions(dg.AssetKey("shard_labels"))
    all_shards = context.instance.get_dynamic_partitions(shards.name)
    for batch in context.instance.get_dynamic_partitions(batches.name):
        mine = [s for s in all_shards if s.rsplit(SHARD_SEPARATOR, 1)[0] == batch]
        if mine and all(s in done for s in mine):
            yield dg.RunRequest(run_key=f"dataset:{batch}:{len(mine)}", job_name=dataset_job.name)
            yield dg.RunRequest(
                run_key=f"release:{batch}:{len(mine)}",
                job_name=release_job.name,
                partition_key=batch,
            )
