"""A batch run to completion from a terminal or a script, without the Dagster daemon.

It takes the path a deployment takes: the spec goes into the inbox; the inbox sensor is
evaluated in process against the project's instance; the partitions it asks for are added
and every run it requests is executed in process; then the completion sensor is evaluated
and its runs (the dataset, and the release: dataset tests as blocking checks, then the
export) are executed the same way. Each run is tagged with the sensor's name and run key,
which is how Dagster's sensor daemon recognises runs it already launched, so starting
``vario ui`` afterwards launches nothing for this batch again, and a repeated ``batch run``
skips runs that already succeeded.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from assets_defs.batches import render_shard_job
from assets_defs.storage import StorageResource
from dagster_project.definitions import defs
from dagster_project.instance import dagster_home
from dagster_project.resources import resolved_storage, storage
from dagster_project.sensors import batch_complete_sensor, batch_run_requests, inbox_sensor
from vario.batch.plan import Plan, read_manifest
from vario.quality import checks as quality
from vario.quality.checks import CheckResult
from vario.store.layout import DataStore


@dataclass(frozen=True)
class RunOutcome:
    job_name: str
    partition: str | None
    success: bool
    skipped: bool = False  # an earlier run with this run key had succeeded


@dataclass
class BatchRun:
    batch: str
    runs: list[RunOutcome] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)  # as the release recorded them

    @property
    def failed_runs(self) -> list[RunOutcome]:
        return [r for r in self.runs if not r.success]

    @property
    def blocking_failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.blocking]


def console_run_config(log_level: str) -> dict:
    """Run config that keeps Dagster's event log in the instance (and the UI): the console
    logger prints only at ``log_level`` and above."""
    return {"loggers": {"console": {"config": {"log_level": log_level}}}}


def _succeeded_before(instance: dg.DagsterInstance, run_key: str, sensor: str) -> bool:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}))
    return any(
        r.tags.get(SENSOR_NAME_TAG) == sensor and r.status == dg.DagsterRunStatus.SUCCESS
        for r in runs
    )


def _execute(
    instance: dg.DagsterInstance,
    sensor: str,
    request: dg.RunRequest,
    log_level: str,
    *,
    retry_failed: bool = False,
) -> RunOutcome:
    """A requested run, in process, unless a run with its key succeeded before; with
    ``retry_failed`` a shard's run is executed again, rendering its failed jobs again."""
    shard_retry = retry_failed and request.job_name == render_shard_job.name
    if request.run_key and not shard_retry and _succeeded_before(instance, request.run_key, sensor):
        return RunOutcome(request.job_name, request.partition_key, True, skipped=True)
    tags = {**request.tags, SENSOR_NAME_TAG: sensor}
    if request.run_key:
        tags[RUN_KEY_TAG] = request.run_key
    run_config = console_run_config(log_level)
    if shard_retry:
        run_config["ops"] = {"shard": {"config": {"retry_failed": True}}}
    result = defs.resolve_job_def(request.job_name).execute_in_process(
        run_config=run_config,
        instance=instance,
        partition_key=request.partition_key,
        tags=tags,
        raise_on_error=False,
    )
    return RunOutcome(request.job_name, request.partition_key, result.success)


def evaluate_sensor(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    storage_resource: StorageResource | None = None,
    verbose: bool = False,
) -> dg.SensorResult:
    """One tick of ``sensor``, with its partition requests applied as the daemon would
    (``storage_resource`` defaults to the configured one). The sensor's log lines (the
    daemon keeps them with the tick) are printed only if ``verbose``: Dagster builds a
    sensor's console logger on first use, bound to the ``sys.stderr`` of that moment, so
    they are caught by redirecting it."""
    captured = io.StringIO()
    resources = {"storage": storage_resource or storage()}
    with (
        contextlib.redirect_stderr(captured),
        dg.build_sensor_context(instance=instance, resources=resources) as ctx,
    ):
        result = sensor(ctx)
    if verbose:
        sys.stderr.write(captured.getvalue())
    if not isinstance(result, dg.SensorResult):  # a generator of run requests
        result = dg.SensorResult(run_requests=list(result or []))
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def watch_jobs(
    store: DataStore, plan: Plan, on_progress: Callable[[int, int], None]
) -> Callable[[], None]:
    """Report (done, failed) jobs of the batch twice a second from the archives folder, in a
    background thread, until the returned function is called."""
    folder = store.archive_dir(plan.spec.name)
    job_ids = set(read_manifest(plan.source(), columns=["job_id"])[0].to_pylist())
    stop = threading.Event()

    def poll() -> None:
        while True:
            names = {p.name for p in folder.iterdir()} if folder.exists() else set()
            done = sum(f"{j}.zip" in names for j in job_ids)
            failed = sum(f"{j}.failed.json" in names for j in job_ids)
            on_progress(done, failed)
            if stop.wait(0.5):
                return

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join()

    return finish


def _ours(request: dg.RunRequest, batch: str) -> bool:
    """Whether a completion-sensor request is for ``batch`` (others are left to the daemon)."""
    return request.partition_key == batch or (request.run_key or "").startswith(f"dataset:{batch}:")


def run_batch(
    spec_path: Path,
    plan: Plan,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    log_level: str = "ERROR",
    retry_failed: bool = False,
) -> BatchRun:
    """Submit a planned spec and run it, its dataset and its release to completion. Every run
    the inbox sensor requests is executed (another spec waiting in the inbox runs too, as the
    daemon would run it), and every run of this batch that has not succeeded yet (all its
    shards' again with ``retry_failed``); of the completion sensor's, only this batch's."""
    dagster_home()
    instance = dg.DagsterInstance.get()
    batch = plan.spec.name
    outcome = BatchRun(batch)
    resource = resolved_storage()
    resource.submit(spec_path)
    finish = watch_jobs(resource.store, plan, on_progress) if on_progress else (lambda: None)
    verbose = log_level == "DEBUG"

    def execute(sensor: str, requests: list[dg.RunRequest]) -> None:
        for request in requests:
            run = _execute(instance, sensor, request, log_level, retry_failed=retry_failed)
            outcome.runs.append(run)

    try:
        requested = evaluate_sensor(inbox_sensor, instance, verbose=verbose).run_requests
        ours = batch_run_requests(plan.spec, plan.shards)  # also when registered before
        execute(inbox_sensor.name, list({r.run_key: r for r in [*requested, *ours]}.values()))
        # the next tick moves the specs registered now to processed/
        execute(inbox_sensor.name, evaluate_sensor(inbox_sensor, instance).run_requests)
        completion = evaluate_sensor(batch_complete_sensor, instance, verbose=verbose)
        execute(batch_complete_sensor.name, [r for r in completion.run_requests if _ours(r, batch)])
    finally:
        finish()
    # the dataset tests as the release recorded them: this run's, or an earlier run's
    outcome.checks = quality.recorded_results(resource.store, batch) or []
    return outcome


def run_asset_job(
    job_name: str,
    partition_key: str | dg.MultiPartitionKey,
    dynamic: dict[str, str],
    run_config: dict,
    *,
    verbose: bool = False,
) -> dg.ExecuteInProcessResult:
    """One asset job, in process, against the project's instance, so the run, its events and
    its checks are in the UI as if the daemon had launched it. ``dynamic`` gives the key
    each dynamic partition set needs (``{"models": "yolo", "datasets": "demo"}``): missing
    ones are added first. A run that fails raises the step's own error (an ingestion's
    validation error, say), not Dagster's wrapper."""
    dagster_home()
    instance = dg.DagsterInstance.get()
    for name, key in dynamic.items():
        if not instance.has_dynamic_partition(name, key):
            instance.add_dynamic_partitions(name, [key])
    config = {**console_run_config("DEBUG" if verbose else "CRITICAL"), **run_config}
    try:
        return defs.resolve_job_def(job_name).execute_in_process(
            run_config=config, instance=instance, partition_key=partition_key
        )
    except dg.DagsterExecutionStepExecutionError as exc:
        raise exc.user_exception from None
