"""The whole Definitions load, and the sample asset materialises for real."""

from __future__ import annotations

import zipfile

import dagster as dg

from assets_defs.samples import sample_job
from assets_defs.storage import StorageResource
from dagster_project.definitions import defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_assets_def("sample_job") is not None


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
    assert metadata["frames"].value == 2 and metadata["objects"].value > 0
    assert "labels/objects.parquet" in zipfile.ZipFile(archive).namelist()


def test_invalid_parameters_fail_the_run_with_the_field_error(tmp_path):
    result = dg.materialize(
        [sample_job],
        resources={"storage": StorageResource(root=str(tmp_path))},
        run_config={"ops": {"sample_job": {"config": {"assignments": ["n_objects=99"]}}}},
        raise_on_error=False,
    )
    assert not result.success
    assert not (tmp_path / "samples").exists() or not list((tmp_path / "samples").iterdir())
