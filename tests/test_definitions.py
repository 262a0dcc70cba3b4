"""The whole merged Definitions load, and the sample asset materialises for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg

from assets_defs.samples import sample_job
from assets_defs.storage import StorageResource
from dagster_project.definitions import defs
from generators.labels import archive as arc


def test_definitions_load_with_every_domain():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "sample_job",
        "batch_manifest",
        "rendered_shard",
        "shard_labels",
        "dataset",
        "batch_dataset",
        "batch_export",
        "dataset_export",
        "real_dataset",
        "model_predictions",
        "model_evaluation",
        "model_release",
    }
    jobs = {"batch_manifest_job", "render_shard_job", "dataset_job", "release_job"}
    jobs |= {"dataset_export_job", "ingest_dataset_job", "ingest_predictions_job"}
    jobs |= {"model_evaluation_job"}
    assert jobs <= {j.name for j in defs.resolve_all_job_defs()}
    assert {s.name for s in defs.sensors} == {
        "inbox_sensor",
        "batch_complete_sensor",
        "regenerate_sensor",
        "catalog_sensor",
    }


def test_sample_job_materialises_an_archive(tmp_path):
    config = {"assignments": ["n_frames=2", "resolution=64", "n_objects=3"], "seed": 5}
    result = dg.materialize(
        [sample_job],
        resources={"storage": StorageResource(root=str(tmp_path))},
        run_config={"ops": {"sample_job": {"config": config}}},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("sample_job")[0].metadata
    archive = metadata["archive"].value
    assert archive.startswith(str(tmp_path / "samples"))
    tables = arc.read_tables(archive)
    assert tables["frames"].num_rows == metadata["frames"].value == 2
    assert tables["objects"].num_rows == metadata["objects"].value > 0
    jobs = tables["jobs"].to_pylist()[0]
    assert (jobs["param_n_objects"], jobs["param_resolution"], jobs["seed"]) == (3, 64, 5)


def test_invalid_parameters_fail_the_run_with_the_field_error(tmp_path):
    result = dg.materialize(
        [sample_job],
        resources={"storage": StorageResource(root=str(tmp_path))},
        run_config={"ops": {"sample_job": {"config": {"assignments": ["n_objects=99"]}}}},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.user_failure_data
    assert "invalid parameters for tabletop" in failure.step_failure_data.error.message
    assert "n_objects" in error.metadata["errors"].value and "99" in error.metadata["errors"].value
    assert not (tmp_path / "samples").exists() or not list((tmp_path / "samples").iterdir())


def test_importing_the_definitions_changes_no_environment_variable():
    """Settings are read, never written: a test or a worker sees only its own environment."""
    code = (
        "import json, os; before = dict(os.environ); import dagster_project.definitions; "
        "print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))"
    )
    # without any setting in the environment, where a setdefault would show
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VARIO_", "DAGSTER_"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    changed = json.loads(result.stdout.strip().splitlines()[-1])
    changed.pop("LD_LIBRARY_PATH", None)  # OpenCV's own loader sets it when cv2 is imported
    assert changed == {}
