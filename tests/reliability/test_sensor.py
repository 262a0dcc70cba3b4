"""The inbox sensor cannot get stuck or lose a spec: a spec leaves the inbox only once its
batch, shards and runs are in the instance; a replayed tick registers nothing twice; a spec
that breaks planning in any way is rejected alone, with the specs behind it accepted."""

from __future__ import annotations

import dagster as dg
import yaml
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from dagster._core.utils import make_new_run_id

from assets_defs.batches import batches, shards
from assets_defs.storage import StorageResource
from dagster_project.local_run import evaluate_sensor
from dagster_project.sensors import inbox_sensor

SPEC = {
    "name": "steady",
    "generator": "tabletop",
    "seed": 3,
    "shard_size": 2,
    "fixed": {"resolution": 64, "n_objects": 2},
    "sampler": {"kind": "random", "count": 5, "ranges": {"fov": [30, 60]}},
}


def _drop(storage: StorageResource, name: str, spec: dict | bytes) -> None:
    storage.store.inbox.mkdir(parents=True, exist_ok=True)
    data = spec if isinstance(spec, bytes) else yaml.safe_dump(spec).encode()
    (storage.store.inbox / name).write_bytes(data)


def _launch(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the daemon does with a tick's run requests: a run per request, tagged
    with its run key (the runs themselves need not execute here)."""
    for request in result.run_requests:
        tags = {**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: "inbox_sensor"}
        instance.add_run(
            DagsterRun(
                job_name=request.job_name,
                run_id=make_new_run_id(),
                tags=tags,
                status=DagsterRunStatus.NOT_STARTED,
            )
        )


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_spec_leaves_the_inbox_only_once_its_runs_are_in_the_instance(tmp_path):
    storage = StorageResource(root=str(tmp_path))
    _drop(storage, "steady.yaml", SPEC)
    with dg.instance_for_test() as instance:
        first = evaluate_sensor(inbox_sensor, instance, storage)
        keys = {r.run_key for r in first.run_requests}
        assert len(keys) == 1 + 3  # the manifest and three shards of at most two jobs
        # the tick's runs were never launched (a daemon that died): the spec is still there,
        # and the replayed tick asks for the same runs and partitions, which are kept once
        assert storage.store.inbox_specs() == [storage.store.inbox / "steady.yaml"]
        replay = evaluate_sensor(inbox_sensor, instance, storage)
        assert {r.run_key for r in replay.run_requests} == keys
        assert instance.get_dynamic_partitions(batches.name) == ["steady"]
        assert instance.get_dynamic_partitions(shards.name) == [f"steady~{i:05d}" for i in range(3)]
        _launch(instance, replay)
        settled = evaluate_sensor(inbox_sensor, instance, storage)
        assert settled.run_requests == [] and settled.dynamic_partitions_requests == []
        assert storage.store.inbox_specs() == []
        assert _names(storage.store.inbox / "processed") == ["steady.yaml"]
        assert len(instance.get_runs()) == 4


def test_a_lost_run_keeps_its_spec_until_it_is_requested_again(tmp_path):
    """Partitions kept but one shard's run never made it: the spec waits and that run's
    request comes again, with the same key."""
    storage = StorageResource(root=str(tmp_path))
    _drop(storage, "steady.yaml", SPEC)
    with dg.instance_for_test() as instance:
        first = evaluate_sensor(inbox_sensor, instance, storage)
        lost, *kept = first.run_requests
        _launch(instance, dg.SensorResult(run_requests=kept))
        again = evaluate_sensor(inbox_sensor, instance, storage)
        assert lost.run_key in {r.run_key for r in again.run_requests}
        assert storage.store.inbox_specs()


def test_specs_that_break_planning_are_rejected_alone(tmp_path):
    storage = StorageResource(root=str(tmp_path))
    bug = {**SPEC, "name": "bug", "generator": "faulty", "fixed": {"fault": "validate"}}
    _drop(storage, "a-bug.yaml", bug)
    _drop(storage, "b-binary.yaml", b"name: x\ngenerator: \xff\xfe\n")
    _drop(storage, "c-unknown.yaml", {**SPEC, "name": "unknown", "generator": "nonesuch"})
    _drop(storage, "d-steady.yaml", SPEC)
    with dg.instance_for_test() as instance:
        result = evaluate_sensor(inbox_sensor, instance, storage)
        assert {r.tags["vario/batch"] for r in result.run_requests} == {"steady"}
        assert instance.get_dynamic_partitions(batches.name) == ["steady"]
    rejected = storage.store.inbox / "rejected"
    assert _names(rejected) == [
        f"{name}{suffix}"
        for name in ("a-bug.yaml", "b-binary.yaml", "c-unknown.yaml")
        for suffix in ("", ".error.txt")
    ]
    errors = {p.name: p.read_text() for p in rejected.glob("*.error.txt")}
    assert (
        "planning failed: RuntimeError: the faulty plugin's validator is broken"
        in errors["a-bug.yaml.error.txt"]
    )
    assert "not UTF-8" in errors["b-binary.yaml.error.txt"]
    assert "nonesuch" in errors["c-unknown.yaml.error.txt"]
    assert all(len(text) < 1000 for text in errors.values())
    assert storage.store.inbox_specs() == [storage.store.inbox / "d-steady.yaml"]
    assert storage.store.batches() == ["steady"]


def test_a_store_that_cannot_record_leaves_the_spec_for_the_next_tick(tmp_path):
    """The data folder's ``batches`` is a file, as on a broken volume: the spec cannot be
    recorded, is neither rejected nor lost, and the tick itself does not fail."""
    storage = StorageResource(root=str(tmp_path))
    _drop(storage, "steady.yaml", SPEC)
    (tmp_path / "batches").write_text("not a folder")
    with dg.instance_for_test() as instance:
        result = evaluate_sensor(inbox_sensor, instance, storage)
        assert result.run_requests == []
        assert instance.get_dynamic_partitions(batches.name) == []
    assert storage.store.inbox_specs() == [storage.store.inbox / "steady.yaml"]
    assert not (storage.store.inbox / "rejected").exists()


def test_settled_specs_never_overwrite_each_other(tmp_path):
    """The same file name twice, with different batches: both end in ``processed/``."""
    storage = StorageResource(root=str(tmp_path))
    with dg.instance_for_test() as instance:
        for name in ("one", "two"):
            _drop(storage, "spec.yaml", {**SPEC, "name": name})
            _launch(instance, evaluate_sensor(inbox_sensor, instance, storage))
            evaluate_sensor(inbox_sensor, instance, storage)
    processed = storage.store.inbox / "processed"
    assert _names(processed) == ["spec-2.yaml", "spec.yaml"]
    names = {yaml.safe_load(p.read_text())["name"] for p in processed.iterdir()}
    assert names == {"one", "two"}


def test_a_batch_resubmitted_with_other_content_is_rejected_and_the_first_kept(tmp_path):
    storage = StorageResource(root=str(tmp_path))
    _drop(storage, "steady.yaml", SPEC)
    with dg.instance_for_test() as instance:
        _launch(instance, evaluate_sensor(inbox_sensor, instance, storage))
        _drop(storage, "steady-again.yaml", {**SPEC, "seed": 4})
        result = evaluate_sensor(inbox_sensor, instance, storage)
        assert result.run_requests == []
    error = (storage.store.inbox / "rejected" / "steady-again.yaml.error.txt").read_text()
    assert "batch 'steady' exists with another spec" in error
    assert storage.store.spec("steady").seed == 3
