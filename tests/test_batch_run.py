"""``vario batch run``: a batch to completion from a terminal, through the sensors' code path,
recorded in the instance, quiet on the console, and complete in the daemon's eyes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile

import dagster as dg
import pytest
import yaml
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from assets_defs.storage import StorageResource
from dagster_project.local_run import evaluate_sensor
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec

SPEC = {
    "name": "cli-run",
    "generator": "tabletop",
    "seed": 4,
    "fixed": {"resolution": 64, "n_frames": 1, "n_objects": 3, "n_distractors": 0},
    "sampler": {"kind": "sobol", "count": 4, "ranges": {"light_azimuth": [0, 360]}},
    "shard_size": 2,
}


def vario(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh data folder and Dagster home, and the batch run once in them."""
    root = tmp_path_factory.mktemp("project")
    spec = root / "cli-run.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    env = {
        **os.environ,
        "VARIO_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "home"),
        "VARIO_CACHE_DIR": str(root / "cache"),
    }
    first = vario(env, "batch", "run", str(spec), "--workers", "2")
    return root, spec, env, first


def test_batch_runs_to_completion_quietly(project):
    root, _, _, result = project
    assert result.returncode == 0, result.stdout + result.stderr
    console = result.stdout + result.stderr
    for noise in ("DEBUG", "Warning", "telemetry", "pybullet build time", " - dagster - "):
        assert noise not in console, console
    assert "4/4" in console  # the progress bar ended with every job
    assert "integrity" in result.stdout and "5 runs (0 done before), 0 failed" in result.stdout
    tables = root / "data" / "tables" / "objects" / "batch=cli-run"
    assert sorted(p.name for p in tables.iterdir()) == [
        "cli-run~00000.parquet",
        "cli-run~00001.parquet",
    ]


def test_runs_are_in_the_instance_and_the_daemon_would_launch_nothing(project, monkeypatch):
    root, _, env, _ = project
    from dagster_project.sensors import batch_complete_sensor, inbox_sensor

    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        jobs = sorted(r.job_name for r in runs)
        assert jobs == [
            "batch_manifest_job",
            "dataset_job",
            "release_job",
            "render_shard_job",
            "render_shard_job",
        ]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        storage = StorageResource(root=str(root / "data"))
        for sensor in (inbox_sensor, batch_complete_sensor):
            requests = evaluate_sensor(sensor, instance, storage).run_requests
            if sensor is batch_complete_sensor:  # it asks again every tick: dataset, release
                assert len(requests) == 2
            for request in requests:  # the daemon's own test: a run with this key and sensor
                existing = instance.get_runs(
                    filters=dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key})
                )
                assert any(r.tags.get(SENSOR_NAME_TAG) == sensor.name for r in existing), request
        (release,) = [r for r in runs if r.job_name == "release_job"]
        checks = instance.all_logs(
            release.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
        names = {e.dagster_event.event_specific_data.check_name for e in checks}
        assert names == {"coverage", "bias", "balance", "edge_cases", "novelty", "integrity"}


def test_every_asset_of_the_merged_definitions_materialises(project, monkeypatch):
    """The batch run materialised every batch and dataset asset; a training export, the
    sample job and the evaluation loop add the last ones, so each asset the UI shows has been
    materialised for real at least once."""
    root, _, env, _ = project
    from dagster_project.definitions import defs

    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    monkeypatch.setenv("VARIO_DATA_DIR", env["VARIO_DATA_DIR"])  # the storage's EnvVar
    with dg.DagsterInstance.get() as instance:
        sample = defs.resolve_job_def("__ASSET_JOB").execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("sample_job")],
            run_config={
                "ops": {"sample_job": {"config": {"assignments": ["n_frames=1", "resolution=64"]}}}
            },
        )
        assert sample.success
        export = defs.resolve_job_def("dataset_export_job").execute_in_process(
            instance=instance,
            partition_key=dg.MultiPartitionKey({"batch": "cli-run", "format": "coco"}),
        )
        assert export.success
        coco = root / "data" / "exports" / "cli-run" / "coco"
        assert (coco / "export.json").exists()
        _close_the_loop(defs, instance, root, coco)
        keys = defs.resolve_asset_graph().get_all_asset_keys()
        missing = [k for k in keys if instance.get_latest_materialization_event(k) is None]
        assert not missing


def _close_the_loop(defs, instance, root, coco) -> None:
    """The evaluation assets, for real: the export's train split ingested as a real dataset,
    the batch's ground truth ingested as a model's predictions, evaluated and released."""
    import pyarrow.parquet as pq

    from vario.store import sandbox
    from vario.store.layout import DataStore

    truth = sandbox.connection(DataStore(root / "data")).sql(
        "SELECT job_id, frame, category, 1.0 AS score, box_x_min::DOUBLE AS box_x, "
        "box_y_min::DOUBLE AS box_y, (box_x_max - box_x_min)::DOUBLE AS box_w, "
        "(box_y_max - box_y_min)::DOUBLE AS box_h FROM objects WHERE batch = 'cli-run'"
    )
    pq.write_table(truth.to_arrow_table(), root / "oracle.parquet")
    instance.add_dynamic_partitions("datasets", ["cli-run", "cli-real"])
    instance.add_dynamic_partitions("models", ["oracle"])
    ingest = {"annotations": str(coco / "annotations" / "instances_train.json")}
    ingest["images"] = str(coco / "images" / "train")
    key = dg.MultiPartitionKey({"model": "oracle", "dataset": "cli-run"})
    for job, partition, config in (
        ("ingest_dataset_job", "cli-real", {"real_dataset": {"config": ingest}}),
        (
            "ingest_predictions_job",
            key,
            {"model_predictions": {"config": {"source": str(root / "oracle.parquet")}}},
        ),
        ("model_evaluation_job", key, {}),
    ):
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance, partition_key=partition, run_config={"ops": config}
        )
        assert result.success, job


def test_a_second_run_does_nothing_again(project):
    _, spec, env, _ = project
    again = vario(env, "batch", "run", str(spec))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 runs (5 done before), 0 failed" in again.stdout
    assert "integrity" in again.stdout  # the tests as the first run's release recorded them


def test_an_invalid_spec_exits_2_and_launches_nothing(project, tmp_path):
    root, _, env, _ = project
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "name": "bad-run", "fixed": {"n_objects": 99}}))
    result = vario(env, "batch", "run", str(bad))
    assert result.returncode == 2
    assert "n_objects" in result.stderr and "99" in result.stderr
    assert not (root / "data" / "batches" / "bad-run").exists()
    assert not (root / "data" / "inbox" / "bad.yaml").exists()


def test_another_spec_under_a_taken_name_exits_2(project, tmp_path):
    root, _, env, _ = project
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**SPEC, "seed": 5}))
    result = vario(env, "batch", "run", str(other))
    assert result.returncode == 2
    assert "exists with another spec" in result.stderr
    assert not (root / "data" / "inbox" / "other.yaml").exists()


def test_jobs_failing_beyond_tolerance_exit_1(project, tmp_path):
    """Every job of the test-only ``faulty`` generator raises; the shards fail past their
    tolerance, the run says which, and no dataset or release run follows."""
    root, _, env, _ = project
    spec = tmp_path / "faulty.yaml"
    faulty = {**SPEC, "name": "faulty-run", "generator": "faulty", "max_failure_rate": 0.0}
    spec.write_text(yaml.safe_dump({**faulty, "fixed": {**SPEC["fixed"], "fault": "raise"}}))
    result = vario(env, "batch", "run", str(spec))
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "2 failed" in result.stdout and "FAILED render_shard_job faulty-run~00000" in result.stdout
    )
    records = sorted((root / "data" / "archives" / "faulty-run").glob("*.failed.json"))
    assert len(records) == 4
    assert all("faulty generator asked to fail" in r.read_text() for r in records)
    assert not (root / "data" / "tables" / "jobs" / "batch=faulty-run").exists()
    # the fault is gone, but a plain re-run keeps the recorded failures: nothing is rendered
    healed = {**env, "VARIO_FAULTY_HEALED": "1"}
    recorded = {r: r.stat().st_mtime_ns for r in records}
    again = vario(healed, "batch", "run", str(spec))
    assert again.returncode == 1 and "2 failed" in again.stdout, again.stdout + again.stderr
    assert {r: r.stat().st_mtime_ns for r in records} == recorded
    assert not list((root / "data" / "archives" / "faulty-run").glob("*.zip"))
    # asked to, it renders them again: the batch completes and is tested and released
    retried = vario(healed, "batch", "run", str(spec), "--retry-failed")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    archives = root / "data" / "archives" / "faulty-run"
    assert len(list(archives.glob("*.zip"))) == 4 and not list(archives.glob("*.failed.json"))
    assert (root / "data" / "exports" / "faulty-run" / "jobs.parquet").exists()


def test_batch_status_counts_the_jobs_and_refuses_an_unknown_batch(project):
    _, _, env, _ = project
    status = vario(env, "batch", "status", "cli-run")
    assert status.returncode == 0, status.stderr
    rows = {line.split("│")[1].strip(): line for line in status.stdout.splitlines() if "│" in line}
    assert [c.strip() for c in rows["all"].split("│")[2:5]] == ["4", "0", "0"]
    unknown = vario(env, "batch", "status", "nope")
    assert unknown.returncode == 2 and "no batch 'nope'" in unknown.stderr
    assert "cli-run" in unknown.stderr  # the batches there are


def test_batch_submit_puts_a_valid_spec_in_the_inbox_and_refuses_a_taken_name(project, tmp_path):
    root, _, env, _ = project
    spec = tmp_path / "queued.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "name": "queued"}))
    submitted = vario(env, "batch", "submit", str(spec))
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted queued (4 jobs, 2 shards)" in submitted.stdout
    assert yaml.safe_load((root / "data" / "inbox" / "queued.yaml").read_text())["name"] == "queued"
    (root / "data" / "inbox" / "queued.yaml").unlink()  # not for the other tests' sensors
    taken = tmp_path / "taken.yaml"
    taken.write_text(yaml.safe_dump({**SPEC, "seed": 9}))
    refused = vario(env, "batch", "submit", str(taken))
    assert refused.returncode == 2 and "exists with another spec" in refused.stderr


def test_run_exits_1_on_a_failed_job_and_preview_uses_the_fast_renderer(project, tmp_path):
    _, _, env, _ = project
    small = ["--set", "resolution=64", "--set", "n_frames=1", "--out", str(tmp_path)]
    failed = vario(env, "run", "faulty", "--set", "fault=raise", *small)
    assert failed.returncode == 1
    assert "failed: RuntimeError: faulty generator asked to fail" in failed.stderr
    preview = vario(env, "run", "tabletop", "--set", "renderer=cycles", "--preview", *small)
    assert preview.returncode == 0, preview.stderr
    with zipfile.ZipFile(preview.stdout.strip().splitlines()[-1]) as z:
        assert json.loads(z.read("job.json"))["renderer"] == "tiny"


def test_run_time_limit_stops_an_isolated_job_and_must_be_positive(project, tmp_path):
    """Blender takes seconds to start, so a Cycles job with a half-second limit is stopped:
    a failed job (exit 1) naming the limit, with no archive and no render worker left."""
    _, _, env, _ = project
    small = ["--set", "resolution=64", "--set", "n_frames=1", "--out", str(tmp_path)]
    cycles = ["--set", "renderer=cycles", "--time-limit", "0.5"]
    stopped = vario(env, "run", "tabletop", *cycles, *small)
    assert stopped.returncode == 1
    assert "render worker exceeded the time limit of 0.5 s" in stopped.stderr
    assert list(tmp_path.iterdir()) == []
    workers = subprocess.run(["pgrep", "-f", "generators.worker"], capture_output=True, text=True)
    assert str(tmp_path) not in workers.stdout
    refused = vario(env, "run", "tabletop", "--time-limit", "-1", *small)
    assert refused.returncode == 2 and "--time-limit" in refused.stderr


def test_demo_runs_the_demo_batch_and_prints_its_tests_and_a_query(tmp_path):
    """``vario demo`` on a fresh data folder: the demo batch's dataset tests (every frame a
    distinct image, since its camera orbits; the small-object shares) and a DuckDB slice."""
    env = {
        **os.environ,
        "VARIO_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "COLUMNS": "250",
    }
    demo = vario(env, "demo")
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "16 distinct images of 16 frames" in demo.stdout
    assert "boxes under 64 px²:" in demo.stdout
    assert "8 jobs (0 failed), 16 frames" in demo.stdout
    assert re.search(r"│\s+category\s+│\s+objects\s+│", demo.stdout)  # the query's table


def test_batch_plan_prints_the_jobs_and_shards_and_writes_nothing(project, tmp_path):
    _, spec_path, env, _ = project
    data = tmp_path / "data"
    planned = vario({**env, "VARIO_DATA_DIR": str(data)}, "batch", "plan", str(spec_path))
    assert planned.returncode == 0, planned.stderr
    manifest = plan(BatchSpec.model_validate(SPEC)).manifest
    assert "batch cli-run: 4 jobs of tabletop (tiny), 2 shards of up to 2" in planned.stdout
    for row in manifest.select(["job_id", "shard"]).to_pylist():
        assert re.search(rf"{row['job_id']}\s+│\s+{row['shard']}", planned.stdout)
    assert not data.exists()


@pytest.mark.parametrize("niceness", ["10", "0"])
def test_render_workers_run_below_their_shards_priority(monkeypatch, niceness):
    """Rendering yields the CPU to what a person waits on: a pool worker's niceness is its
    parent's plus ``VARIO_WORKER_NICENESS`` (capped at 19, as the kernel caps it)."""
    from vario.run.pool import worker_pool

    monkeypatch.setenv("VARIO_WORKER_NICENESS", niceness)
    with worker_pool(1) as pool:
        worker = pool.submit(os.nice, 0).result()
    assert worker == min(os.nice(0) + int(niceness), 19)
