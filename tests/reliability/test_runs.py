"""Runs end once: the project's instance retries lost runs and watches stuck ones; a shard
whose run was marked failed while its step went on materializes nothing; a shard run again
keeps its jobs' recorded failures unless asked to retry them."""

from __future__ import annotations

import threading
import time

import dagster as dg
import yaml

from assets_defs.batches import shard
from assets_defs.storage import StorageResource
from dagster_project.instance import dagster_home
from dagster_project.local_run import evaluate_sensor
from dagster_project.sensors import batch_complete_sensor, inbox_sensor
from generators.labels import archive as arc
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.run import shard as sh

SLOW = {
    "name": "abandoned",
    "generator": "tabletop",
    "seed": 5,
    "shard_size": 6,
    "fixed": {"resolution": 128, "n_frames": 4, "n_objects": 3},
    "sampler": {"kind": "random", "count": 6, "ranges": {"light_azimuth": [0, 360]}},
}
FAULTY = {
    "name": "flaky",
    "generator": "faulty",
    "seed": 2,
    "fixed": {"resolution": 64, "n_frames": 1, "n_objects": 2, "fault": "raise"},
    "sampler": {"kind": "random", "count": 2, "ranges": {"light_azimuth": [0, 360]}},
}


def _submitted(tmp_path, spec: dict, instance: dg.DagsterInstance) -> StorageResource:
    """A data folder with ``spec`` planned and registered in ``instance`` by the sensor."""
    storage = StorageResource(root=str(tmp_path / "data"))
    storage.store.inbox.mkdir(parents=True)
    (storage.store.inbox / "spec.yaml").write_text(yaml.safe_dump(spec))
    evaluate_sensor(inbox_sensor, instance, storage)
    return storage


def test_the_project_instance_monitors_and_retries_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # old
    dagster_home()
    with dg.DagsterInstance.get() as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure
    own = "telemetry:\n  enabled: true\n"  # a user's own configuration is kept
    (tmp_path / "home" / "dagster.yaml").write_text(own)
    dagster_home()
    assert (tmp_path / "home" / "dagster.yaml").read_text() == own


def test_a_run_marked_failed_while_its_shard_renders_materializes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("VARIO_WORKERS", "1")
    with dg.instance_for_test() as instance:
        storage = _submitted(tmp_path, SLOW, instance)
        archives = storage.store.archive_dir("abandoned")

        def mark_failed() -> None:
            """Run monitoring's part: the run is declared failed while its step goes on."""
            deadline = time.monotonic() + 120
            while not list(archives.glob("*.zip")) and time.monotonic() < deadline:
                time.sleep(0.02)
            (run,) = instance.get_runs()
            instance.report_run_failed(run)

        marker = threading.Thread(target=mark_failed)
        marker.start()
        result = dg.materialize(
            [shard],
            partition_key="abandoned~00000",
            instance=instance,
            resources={"storage": storage},
            raise_on_error=False,
        )
        marker.join()
        assert not result.success
        failure = [e for e in result.all_events if e.is_step_failure][0]
        assert "was marked FAILURE while its step ran" in str(failure.step_failure_data.error)
        assert instance.get_latest_materialization_event(dg.AssetKey("shard_labels")) is None
        assert instance.get_latest_materialization_event(dg.AssetKey("rendered_shard")) is None
    assert len(list(archives.glob("*.zip"))) < 6  # it stopped at the next job
    assert not (storage.store.root / "tables").exists()


def test_a_shard_run_again_keeps_recorded_failures_unless_asked(tmp_path, monkeypatch):
    manifest = plan(BatchSpec.model_validate(FAULTY)).manifest
    first = sh.run_shard("faulty", manifest, tmp_path, workers=1)
    assert [o.status for o in first] == ["failed", "failed"]
    records = {p: p.read_bytes() for p in tmp_path.glob("*.failed.json")}
    assert len(records) == 2
    monkeypatch.setenv("VARIO_FAULTY_HEALED", "1")  # the fault is gone
    again = sh.run_shard("faulty", manifest, tmp_path, workers=1)
    assert [(o.status, o.worker_pid) for o in again] == [("failed", None)] * 2  # not run
    assert [o.error for o in again] == [o.error for o in first]
    assert {p: p.read_bytes() for p in tmp_path.glob("*.failed.json")} == records
    retried = sh.run_shard("faulty", manifest, tmp_path, workers=1, retry_failed=True)
    assert [o.status for o in retried] == ["ok", "ok"]
    assert not list(tmp_path.glob("*.failed.json"))
    assert all(arc.is_complete(sh.archive_path(tmp_path, o.job_id)) for o in retried)
    tables = sh.shard_tables("faulty", manifest, tmp_path, retried)
    assert tables["jobs"].column("status").to_pylist() == ["ok", "ok"]


def test_a_retried_shard_releases_its_batch_again(tmp_path, monkeypatch):
    """The completion sensor's run keys follow the shards' latest tables: a shard rendered
    again asks for a new release, an unchanged batch the same one."""
    spec = {**FAULTY, "fixed": {**FAULTY["fixed"], "fault": "none"}}
    with dg.instance_for_test() as instance:
        storage = _submitted(tmp_path, spec, instance)
        (key,) = instance.get_dynamic_partitions("shards")

        def release_keys() -> set[str]:
            requests = evaluate_sensor(batch_complete_sensor, instance, storage).run_requests
            return {r.run_key for r in requests}

        assert release_keys() == set()
        seen = []
        for _ in range(2):
            dg.materialize(
                [shard], partition_key=key, instance=instance, resources={"storage": storage}
            )
            seen.append(release_keys())
            assert release_keys() == seen[-1] and len(seen[-1]) == 2
        assert seen[0].isdisjoint(seen[1])
