"""Batches through Dagster: the sensor, real in-process materialisations, DuckDB on the result,
resuming a killed shard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets_defs.batches import batches, dataset, shard, shards
from assets_defs.storage import StorageResource
from dagster_project.local_run import evaluate_sensor
from dagster_project.sensors import batch_complete_sensor, inbox_sensor
from generators.labels import archive as arc
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.run import shard as sh
from vario.store import views as ds

SPEC = {
    "name": "demo",
    "generator": "tabletop",
    "seed": 7,
    "shard_size": 3,
    "fixed": {"resolution": 64, "n_objects": 3, "n_distractors": 1},
    "sampler": {
        "kind": "lhs",
        "count": 5,
        "ranges": {"light_azimuth": [0, 360], "n_objects": [1, 4]},
    },
}


def _write_spec(folder: Path, spec: dict, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return path


def _run_shard_step(instance, storage, key: str) -> dg.ExecuteInProcessResult:
    """One shard's run, which may fail."""
    return dg.materialize(
        [shard],
        partition_key=key,
        instance=instance,
        resources={"storage": storage},
        raise_on_error=False,
    )


def _materialize_batch(instance, storage, shard_keys) -> None:
    for key in shard_keys:
        result = dg.materialize(
            [shard],
            partition_key=key,
            instance=instance,
            resources={"storage": storage},
        )
        assert result.success


def test_sensor_turns_a_spec_into_partitions_and_runs(tmp_path):
    storage = StorageResource(root=str(tmp_path))
    _write_spec(storage.store.inbox, SPEC)
    with dg.instance_for_test() as instance:
        result = evaluate_sensor(inbox_sensor, instance, storage)
        shard_requests = [r for r in result.run_requests if r.job_name == "render_shard_job"]
        assert [r.partition_key for r in shard_requests] == ["demo~00000", "demo~00001"]
        added = {
            r.partitions_def_name: list(r.partition_keys)
            for r in result.dynamic_partitions_requests
        }
        assert added == {"batches": ["demo"], "shards": ["demo~00000", "demo~00001"]}
        assert storage.store.manifest("demo").num_rows == 5
        assert storage.store.inbox_specs()  # until its runs are in the instance
        # the same spec again: the same run keys, which Dagster runs only once
        _write_spec(storage.store.inbox, SPEC, "again.yaml")
        again = evaluate_sensor(inbox_sensor, instance, storage)
        assert {r.run_key for r in again.run_requests} == {r.run_key for r in result.run_requests}


def test_an_invalid_spec_launches_nothing_and_leaves_its_error_beside_it(tmp_path):
    storage = StorageResource(root=str(tmp_path))
    bad = {**SPEC, "fixed": {"resolution": 5000}}
    _write_spec(storage.store.inbox, bad, "bad.yaml")
    with dg.instance_for_test() as instance:
        result = evaluate_sensor(inbox_sensor, instance, storage)
        assert result.run_requests == [] and result.dynamic_partitions_requests == []
    rejected = storage.store.inbox / "rejected"
    assert (rejected / "bad.yaml").exists()
    error = (rejected / "bad.yaml.error.txt").read_text()
    assert "resolution: 5000" in error and "[64, 1024]" in error
    assert storage.store.batches() == []


def test_a_batch_materialises_into_tables_that_duckdb_reads(tmp_path):
    storage = StorageResource(root=str(tmp_path))
    _write_spec(storage.store.inbox, SPEC)
    with dg.instance_for_test() as instance:
        evaluate_sensor(inbox_sensor, instance, storage)
        keys = instance.get_dynamic_partitions(shards.name)
        assert instance.get_dynamic_partitions(batches.name) == ["demo"]
        _materialize_batch(instance, storage, keys[:1])
        assert not evaluate_sensor(batch_complete_sensor, instance, storage).run_requests  # not yet
        _materialize_batch(instance, storage, keys[1:])
        complete = evaluate_sensor(batch_complete_sensor, instance, storage).run_requests
        assert [r.run_key.rsplit(":", 1)[0] for r in complete] == [
            "dataset:demo:2",
            "release:demo:2",
        ]
        assert dg.materialize([dataset], instance=instance, resources={"storage": storage}).success
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("rendered_shard"), "archives_complete")]
        )
        (execution,) = check.values()
        evaluation = execution.event.dagster_event.event_specific_data
        assert evaluation.passed and evaluation.metadata["missing"].value == []
    con = ds.connect(storage.store)
    assert con.execute("SELECT count(*), count(DISTINCT batch) FROM jobs").fetchall()[0] == (5, 1)
    frames = con.execute("SELECT count(*) FROM frames").fetchall()[0][0]
    assert frames == 5
    per_job = con.execute(
        "SELECT j.param_n_objects, count(o.instance_id) FROM jobs j "
        "LEFT JOIN objects o USING (job_id) GROUP BY j.job_id, j.param_n_objects"
    ).fetchall()
    assert all(seen <= n + 1 for n, seen in per_job)  # objects of interest + 1 distractor
    assert ds.summary(con)["jobs_ok"] == 5


def _tables_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted((root / "tables").rglob("*.parquet"))
    }


def test_a_shard_killed_partway_ends_with_the_same_tables_when_run_again(tmp_path):
    spec = {
        **SPEC,
        "shard_size": 12,
        "sampler": {**SPEC["sampler"], "count": 12},
        "fixed": {**SPEC["fixed"], "resolution": 128, "n_frames": 4},
    }
    runs = {}
    for name in ("uninterrupted", "killed"):
        storage = StorageResource(root=str(tmp_path / name))
        _write_spec(storage.store.inbox, spec)
        with dg.instance_for_test() as instance:
            evaluate_sensor(inbox_sensor, instance, storage)
            (key,) = instance.get_dynamic_partitions(shards.name)
            if name == "killed":
                archives = storage.store.archive_dir("demo")
                worker = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        (
                            "import sys; from vario.run import shard as sh; "
                            "from vario.store.layout import DataStore; from pathlib import Path; "
                            "s = DataStore(Path(sys.argv[1])); "
                            "sh.run_shard('tabletop', s.shard_manifest('demo', "
                            "sys.argv[2]), s.archive_dir('demo'), workers=1)"
                        ),
                        storage.root,
                        key,
                    ],
                    start_new_session=True,
                )
                deadline = time.monotonic() + 120
                while len(list(archives.glob("*.zip"))) < 3:
                    assert worker.poll() is None and time.monotonic() < deadline
                    time.sleep(0.05)
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
                done_before = len(list(archives.glob("*.zip")))
                assert 3 <= done_before < 12
            _materialize_batch(instance, storage, [key])
            materialization = instance.get_latest_materialization_event(
                dg.AssetKey("rendered_shard")
            ).asset_materialization
            if name == "killed":
                assert materialization.metadata["jobs skipped"].value == done_before
        runs[name] = _tables_bytes(Path(storage.root))
    clean, resumed = runs["uninterrupted"], runs["killed"]
    assert clean.keys() == resumed.keys() and len(clean) == 4
    for path in clean:
        if "/jobs/" not in path:
            assert resumed[path] == clean[path], path  # byte-identical Parquet

    import pyarrow as pa
    import pyarrow.parquet as pq

    timing = [
        c
        for c in pq.ParquetFile(
            pa.BufferReader(clean["tables/jobs/batch=demo/demo~00000.parquet"])
        ).schema_arrow.names
        if c.endswith("_seconds")
    ]
    jobs = [
        pq.ParquetFile(pa.BufferReader(r["tables/jobs/batch=demo/demo~00000.parquet"]))
        .read()
        .drop(timing)
        for r in (clean, resumed)
    ]
    assert jobs[0].equals(jobs[1])


# Runs a shard of six jobs on two workers in a process of its own, as a Dagster step would,
# and reports which workers ran the jobs, which of them are still there once ``run_shard`` has
# returned, and the process's own children (forkserver, resource tracker) just before it exits.
POOL_SCRIPT = """
import json, os, sys
from pathlib import Path
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.run import shard as sh

def children():
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found

jobs = [{"n_objects": n, "n_frames": 2} for n in (1, 2, 3, 1, 2, 3)]
spec = {"name": "pool", "generator": "tabletop", "fixed": {"resolution": 64}, "jobs": jobs}
manifest = plan(BatchSpec.model_validate(spec)).manifest
outcomes = sh.run_shard("tabletop", manifest, Path(sys.argv[1]), workers=2)
pids = sorted({o.worker_pid for o in outcomes})
report = {
    "statuses": [o.status for o in outcomes],
    "worker_pids": pids,
    "workers_left": [p for p in pids if Path(f"/proc/{p}").exists()],
    "children": children(),
}
print(json.dumps(report), flush=True)
"""


def _gone(pids: list[int], within: float = 30.0) -> list[int]:
    """The pids still running after waiting up to ``within`` seconds for them to end."""
    deadline = time.monotonic() + within
    left = pids
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if Path(f"/proc/{p}").exists()]
    return left


def test_a_shard_reuses_its_workers_and_its_process_leaves_nothing_behind(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", POOL_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        report = json.loads(process.stdout.readline())
        process.wait(timeout=60)  # a pool left running would hang the process at exit
    finally:
        process.kill()
    assert process.returncode == 0
    assert report["statuses"] == ["ok"] * 6
    assert 1 <= len(report["worker_pids"]) <= 2  # six jobs, at most two workers: reused
    assert report["workers_left"] == []  # the pool ended with run_shard
    assert _gone(report["children"]) == []  # its forkserver ended with the process


@pytest.mark.parametrize(("rate", "shard_ok"), [(0.5, True), (0.1, False)])
def test_a_failed_job_is_recorded_and_fails_the_shard_only_past_the_rate(tmp_path, rate, shard_ok):
    """One job of four raises (the test-only ``faulty`` generator). Within the batch's rate the
    shard succeeds with a ``failed`` jobs row; past it the step fails once, with the failure
    count and the job's error, and is not retried (each job already had its try)."""
    ok = {"fault": "none"}
    spec = {
        "name": "mixed",
        "generator": "faulty",
        "shard_size": 4,
        "max_failure_rate": rate,
        "fixed": {"resolution": 64},
        "jobs": [{**ok, "n_objects": 1}, {**ok, "n_objects": 2}, ok, {"fault": "raise"}],
    }
    storage = StorageResource(root=str(tmp_path))
    _write_spec(storage.store.inbox, spec)
    with dg.instance_for_test() as instance:
        evaluate_sensor(inbox_sensor, instance, storage)
        result = _run_shard_step(instance, storage, "mixed~00000")
        assert result.success is shard_ok
        events = instance.all_logs(result.run_id)
        kinds = [e.dagster_event.event_type_value for e in events if e.dagster_event]
        assert "STEP_RESTARTED" not in kinds and "STEP_UP_FOR_RETRY" not in kinds
    records = list((tmp_path / "archives" / "mixed").glob("*.failed.json"))
    assert len(records) == 1 and "faulty generator asked to fail" in records[0].read_text()
    if shard_ok:
        con = ds.connect(storage.store)
        rows = con.execute("SELECT job_id, status, error FROM jobs ORDER BY status").fetchall()
        assert [r[1] for r in rows] == ["failed", "ok", "ok", "ok"]
        assert "RuntimeError: faulty generator asked to fail" in rows[0][2]
        (check,) = result.get_asset_check_evaluations()  # a failed job: a warning, not missing
        assert (check.check_name, check.passed) == ("archives_complete", False)
        assert check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["failed"].value == [rows[0][0]]
        assert check.metadata["missing"].value == []
    else:
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        data = failure.step_failure_data
        assert "1 of 4 jobs failed, more than the batch's max_failure_rate 0.1" in (
            data.user_failure_data.description
        )
        assert "faulty generator asked to fail" in data.user_failure_data.metadata["errors"].value


def test_dagster_definitions_validate():
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def _faulty_manifest(faults: list[str]):
    jobs = [{"fault": f, "n_objects": 1 + i % 3} for i, f in enumerate(faults)]
    spec = {"name": "crash", "generator": "faulty", "fixed": {"resolution": 64, "n_frames": 1}}
    return plan(BatchSpec.model_validate({**spec, "jobs": jobs})).manifest


def test_a_job_that_kills_its_worker_fails_alone_and_the_shard_goes_on(tmp_path):
    """The second job SIGKILLs its pool worker: that job is a failed job naming the dead
    worker, the job running beside it is rendered again, and no partial file is left."""
    manifest = _faulty_manifest(["none", "crash", "none", "none"])
    outcomes = sh.run_shard("faulty", manifest, tmp_path, workers=2)
    assert [o.status for o in outcomes] == ["ok", "failed", "ok", "ok"]
    assert outcomes[1].error.startswith("WorkerDied: the worker process running this job died")
    tables = sh.shard_tables("faulty", manifest, tmp_path, outcomes)
    assert tables["jobs"].column("status").to_pylist() == ["ok", "failed", "ok", "ok"]
    ids = [o.job_id for o in outcomes]
    expected = {f"{ids[0]}.zip", f"{ids[1]}.failed.json", f"{ids[2]}.zip", f"{ids[3]}.zip"}
    assert {p.name for p in tmp_path.iterdir()} == expected
    assert all(arc.is_complete(sh.archive_path(tmp_path, i)) for i in (ids[0], ids[2], ids[3]))


def test_a_worker_killed_from_outside_loses_no_job(tmp_path):
    """A pool worker killed between jobs (as the OOM killer would) breaks the pool; every job
    still ends rendered, by the new pool or alone. A job another worker had finished when
    the pool broke is ``skipped`` when run again (its archive is whole), not rendered twice."""
    manifest = _faulty_manifest(["none"] * 4)
    killed = []

    def kill_first_worker(outcome: sh.JobOutcome, done: int, total: int) -> None:
        if not killed:
            killed.append(outcome.worker_pid)
            os.kill(outcome.worker_pid, signal.SIGKILL)

    outcomes = sh.run_shard("faulty", manifest, tmp_path, workers=2, on_job=kill_first_worker)
    assert [o.status for o in outcomes].count("ok") >= 3  # the race above may skip one
    assert all(o.status in ("ok", "skipped") for o in outcomes)
    assert sum(o.worker_pid == killed[0] for o in outcomes) == 1  # the dead worker ran one
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".zip"] * 4


def test_a_crashing_shard_step_is_retried_twice_and_then_fails(tmp_path):
    """The shard's retry policy, observed in the instance: a step that raises (here its archive
    folder is a file) starts three times, with two retries announced, then fails once."""
    storage = StorageResource(root=str(tmp_path))
    _write_spec(storage.store.inbox, {**SPEC, "name": "retry"})
    with dg.instance_for_test() as instance:
        evaluate_sensor(inbox_sensor, instance, storage)
        storage.store.archive_dir("retry").parent.mkdir(parents=True, exist_ok=True)
        storage.store.archive_dir("retry").write_text("not a folder")
        result = _run_shard_step(instance, storage, "retry~00000")
        kinds = [
            e.dagster_event.event_type_value
            for e in instance.all_logs(result.run_id)
            if e.dagster_event and e.dagster_event.step_key == "shard"
        ]
    assert not result.success
    assert kinds.count("STEP_START") + kinds.count("STEP_RESTARTED") == 3
    assert kinds.count("STEP_UP_FOR_RETRY") == 2
    assert kinds.count("STEP_FAILURE") == 1


def test_an_archive_lost_after_its_job_fails_archives_complete_as_an_error(tmp_path):
    """A job reports success but its archive is gone when the shard checks (the ``vanish``
    fault): ``archives_complete`` fails with ERROR severity and names the job as missing."""
    ok = {"fault": "none"}
    spec = {
        "name": "lost",
        "generator": "faulty",
        "shard_size": 3,
        "fixed": {"resolution": 64, "n_frames": 1},
        "jobs": [{**ok, "n_objects": 1}, {"fault": "vanish"}, {**ok, "n_objects": 2}],
    }
    storage = StorageResource(root=str(tmp_path))
    _write_spec(storage.store.inbox, spec)
    with dg.instance_for_test() as instance:
        evaluate_sensor(inbox_sensor, instance, storage)
        result = _run_shard_step(instance, storage, "lost~00000")
    lost = storage.store.manifest("lost").column("job_id").to_pylist()[1]
    (check,) = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == ("archives_complete", False)
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["missing"].value == [lost] and check.metadata["failed"].value == []
