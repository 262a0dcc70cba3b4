"""Sensors: specs dropped in the inbox become partitions and runs; finished batches refresh
the dataset; (when switched on) failed model tests become targeted batches."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG

from assets_defs.batches import batches, dataset_job, manifest_job, render_shard_job, shards
from assets_defs.quality import release_job
from assets_defs.storage import StorageResource
from dagster_project.kubernetes import shard_run_tags
from generators.settings import settings
from vario.batch.plan import SHARD_SEPARATOR, Plan, plan
from vario.batch.spec import BatchSpec, SpecError, load_spec
from vario.evaluate.regenerate import regenerate
from vario.evaluate.run import EvaluationError, recorded_evaluations
from vario.store.layout import DataStore

INTERVAL = settings().sensor_interval
SHOWN_ERROR = 300  # characters of an unexpected error kept in a rejected spec's error file


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Accepted:
    """A valid spec's batch, recorded in the data folder, and the runs it needs."""

    spec: BatchSpec
    shards: list[str]
    requests: list[dg.RunRequest]


def _planned(store: DataStore, path: Path) -> tuple[BatchSpec, Plan | None]:
    """A spec validated and planned (None: its batch was recorded on an earlier tick);
    raises ``SpecError`` for a spec that cannot run."""
    spec = load_spec(path)
    return spec, None if store.recorded(spec) else plan(spec)


def batch_run_requests(spec: BatchSpec, shard_keys: list[str]) -> list[dg.RunRequest]:
    """The runs a batch needs: its manifest and one per shard. Run keys come from the spec's
    content, so Dagster launches each once however often the spec is seen. Shard runs are
    tagged with their renderer and device: the run queue limits them per device (see
    ``dagster_project.instance``) and on Kubernetes their pods ask for what the device needs."""
    digest = _digest(spec.model_dump_json())
    tags = {"vario/batch": spec.name}
    shard_tags = {
        **tags,
        "vario/renderer": spec.renderer,
        "vario/device": spec.device,
        **shard_run_tags(spec.device),
    }
    manifest = dg.RunRequest(
        run_key=f"manifest:{spec.name}:{digest}",
        job_name=manifest_job.name,
        partition_key=spec.name,
        tags=tags,
    )
    return [
        manifest,
        *(
            dg.RunRequest(
                run_key=f"shard:{key}:{digest}",
                job_name=render_shard_job.name,
                partition_key=key,
                tags=shard_tags,
            )
            for key in shard_keys
        ),
    ]


def _record(storage: StorageResource, spec: BatchSpec, batch_plan: Plan | None) -> _Accepted:
    """Record a planned batch (spec and manifest, published) and the runs it needs."""
    store = storage.store
    if batch_plan is not None:
        store.save_plan(batch_plan)
        storage.publish(store.manifest_path(spec.name), store.spec_path(spec.name))
    keys = batch_plan.shards if batch_plan is not None else store.shard_keys(spec.name)
    return _Accepted(spec, keys, batch_run_requests(spec, keys))


def _registered(instance: dg.DagsterInstance, accepted: _Accepted, shard_keys: set[str]) -> bool:
    """Whether the batch's partitions and every run it needs are in the instance: only then
    may its spec leave the inbox, since nothing of a tick is kept if the tick is lost."""
    name = accepted.spec.name
    if not instance.has_dynamic_partition(batches.name, name) or not shard_keys >= set(
        accepted.shards
    ):
        return False
    launched = set()
    for prefix in (f"manifest:{name}:", f"shard:{name}{SHARD_SEPARATOR}"):
        for _, values in instance.get_run_tags([RUN_KEY_TAG], value_prefix=prefix):
            launched |= values
    return all(request.run_key in launched for request in accepted.requests)


@dg.sensor(
    jobs=[manifest_job, render_shard_job],
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reads the batch specs in the inbox (`vario batch submit`, the API, the schedule). "
        "A valid spec is planned: its batch and shards become partitions, its manifest is "
        "written and one render run per shard is requested (a spec sent twice runs once); it "
        "then moves to `inbox/processed/`. An invalid spec moves to `inbox/rejected/` with "
        "its field errors beside it and launches nothing: fix the spec and submit it again. "
        "A failed tick (disk or network) leaves the spec for the next tick."
    ),
)
def inbox_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
    """Validates each spec in the inbox. A valid one is planned and recorded, its batch and
    shards are registered as dynamic partitions and one run per shard is requested; run keys
    come from the spec's content, so a spec submitted twice runs once. The spec stays in the
    inbox until a later tick finds all of that in the instance, then moves to
    ``inbox/processed/``: a tick lost before Dagster kept it is simply asked again, and a
    replayed tick registers nothing twice. An invalid spec, or one whose planning raises
    (a broken generator plugin), is moved to ``inbox/rejected/`` with its errors beside it
    and launches nothing; a disk or network fault leaves it for the next tick. Each spec's
    trouble stays its own: the specs behind it go on."""
    store = storage.store
    storage.pull_inbox()
    shard_keys = set(context.instance.get_dynamic_partitions(shards.name))
    requests, new_batches, new_shards = [], [], []
    for path in store.inbox_specs():
        try:
            spec, batch_plan = _planned(store, path)
        except SpecError as exc:
            _reject(context, storage, path, exc.messages)
            continue
        except OSError as exc:  # the file or the store, not the spec: try again next tick
            context.log.warning(f"{path.name} waits for the next tick: {exc}")
            continue
        except Exception as exc:  # a generator plugin that raises: this spec's own problem
            error = f"{path.name}: planning failed: {type(exc).__name__}: {exc}"
            _reject(context, storage, path, [error[:SHOWN_ERROR]])
            continue
        if spec.name in new_batches:  # the same batch twice in the inbox
            continue  # settled on a later tick, once the first is registered
        try:
            accepted = _record(storage, spec, batch_plan)
            if _registered(context.instance, accepted, shard_keys):
                storage.settle(path, store.mark_processed(path))
                context.log.info(f"registered {path.name}: {len(accepted.shards)} shards")
                continue
        except Exception as exc:  # a full disk, an unreachable store: try again next tick
            context.log.warning(f"{path.name} waits for the next tick: {exc}")
            continue
        new_batches.append(spec.name)
        new_shards += accepted.shards
        requests += accepted.requests
        context.log.info(f"accepted {path.name}: {len(accepted.shards)} shards requested")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[
            batches.build_add_request(new_batches),
            shards.build_add_request(new_shards),
        ]
        if new_batches
        else [],
    )


def _reject(
    context: dg.SensorEvaluationContext, storage: StorageResource, path: Path, errors: list[str]
) -> None:
    """Move a spec to ``rejected/`` with its errors; if even that fails (a full disk), it
    stays in the inbox for the next tick and the other specs go on."""
    try:
        rejected = storage.store.reject(path, errors)
        storage.settle(path, rejected, rejected.with_name(rejected.name + ".error.txt"))
    except Exception as exc:
        context.log.warning(f"{path.name} could not be moved to rejected/: {exc}")
        return
    context.log.warning(f"rejected {path.name}: {errors[0]}")


@dg.sensor(
    jobs=[dataset_job, release_job],
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches the shards' label tables. Once every shard of a batch has them, refreshes "
        "the `dataset` views and runs the release: `batch_dataset` with its dataset tests as "
        "blocking checks, then `batch_export`. A shard rendered again releases the batch "
        "again. A batch that never releases has a shard whose run failed: see its run."
    ),
)
def batch_complete_sensor(context: dg.SensorEvaluationContext):
    """Once every shard of a batch has its label tables: refresh the dataset, and test and
    release the batch. Once per state of the batch: the run keys name its latest shard
    tables, so a shard rendered again (its failed jobs retried) releases the batch again."""
    latest = context.instance.get_latest_storage_id_by_partition(
        dg.AssetKey("shard_labels"), dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    all_shards = context.instance.get_dynamic_partitions(shards.name)
    for batch in context.instance.get_dynamic_partitions(batches.name):
        mine = [s for s in all_shards if s.rsplit(SHARD_SEPARATOR, 1)[0] == batch]
        if mine and all(s in latest for s in mine):
            state = f"{batch}:{len(mine)}:{max(latest[s] for s in mine)}"
            yield dg.RunRequest(run_key=f"dataset:{state}", job_name=dataset_job.name)
            yield dg.RunRequest(
                run_key=f"release:{state}", job_name=release_job.name, partition_key=batch
            )


@dg.sensor(
    minimum_interval_seconds=INTERVAL,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Off by default. For every recorded model evaluation with a failed ERROR model test, "
        "writes a targeted batch spec (vario regenerate: the parameter region behind the "
        "failing slice, as many jobs as the evaluated batch) into the inbox, once per "
        "evaluation and slice; the inbox sensor then plans and runs it like any spec."
    ),
)
def regenerate_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
    """Targeted batches for failing slices, once each (the cursor lists what was submitted)."""
    store = storage.store
    done = set(filter(None, (context.cursor or "").split(",")))
    for folder in recorded_evaluations(store):
        evaluation = json.loads((folder / "evaluation.json").read_text())
        dataset = evaluation["inputs"]["dataset"]
        if evaluation["passed"] or dataset not in store.batches():
            continue
        failing = sorted(
            {
                t["slice"]
                for t in evaluation["tests"]
                if t["severity"] == "ERROR" and not t["passed"]
            }
        )
        for slice_name in failing:
            key = f"{evaluation['id']}:{slice_name}"
            if key in done:
                continue
            jobs = store.spec(dataset).job_count
            try:
                spec = regenerate(store, evaluation["id"], slice_name, jobs)
            except (EvaluationError, ValueError) as exc:
                context.log.warning(f"{key}: no targeted batch: {exc}")
            else:
                store.submit_spec(spec)
                context.log.info(f"{key}: submitted {spec['name']}")
            done.add(key)
    context.update_cursor(",".join(sorted(done)))
    return dg.SkipReason("targeted batches go through the inbox")
