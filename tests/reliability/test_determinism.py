"""Determinism recorded: what decides a job's pixels and labels (the fast renderer's backend,
the catalog's content) is part of its id and its description; COCO category ids come from the
catalog and built-in ones never move; a job planned with one catalog is never rendered with
another under the same batch. Real tabletop jobs at the small settings of ``conftest``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trimesh
from conftest import SMALL, read_member

from generators.job import job_id
from generators.library.tabletop import TabletopGenerator
from generators.render import tiny
from generators.render.tiny import EGLUnavailable
from generators.scene import catalog
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.run import shard as sh

GEN = TabletopGenerator()
PARAMS = GEN.Params(**SMALL)
SEED = 5
LABELS = ("frames", "objects", "events")
PLAN_IN_ANOTHER_PROCESS = """
import json, sys
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
print(json.dumps(plan(BatchSpec.model_validate_json(sys.argv[1])).manifest.to_pylist()[0]))
"""


@pytest.fixture
def user_catalog(tmp_path):
    """An empty user catalog folder, as ``VARIO_CATALOG_DIR``; the catalog is read again
    with it, and again with the session's own once the test is done."""
    folder = tmp_path / "catalog"
    folder.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VARIO_CATALOG_DIR", str(folder))
        catalog.refresh()
        yield folder
    catalog.refresh()


def add_mesh(
    folder: Path, category: str, color=(0.9, 0.1, 0.9, 1), extents=(1.0, 0.6, 0.4)
) -> Path:
    """A user mesh ``<category>/thing.obj`` (a box, 8 cm long) with its ``.json``."""
    (folder / category).mkdir(exist_ok=True)
    mesh = folder / category / "thing.obj"
    trimesh.creation.box(extents=extents).export(mesh)
    mesh.with_suffix(".json").write_text(json.dumps({"size": 0.08, "color": list(color)}))
    return mesh


def job_json(archive: Path) -> dict:
    return json.loads(read_member(archive, "job.json"))


def coco(archive: Path) -> dict:
    return json.loads(read_member(archive, "labels/coco.json"))


def spec(name: str) -> BatchSpec:
    """A one-job batch of the job the other tests run."""
    fixed = PARAMS.model_dump(mode="json", exclude={"renderer"})  # the spec's own field
    return BatchSpec.model_validate(
        {"name": name, "generator": "tabletop", "seed": 2, "fixed": fixed, "jobs": [{}]}
    )


def test_adding_a_user_mesh_changes_the_job_id_and_removing_it_restores_it(user_catalog, tmp_path):
    before = GEN.run(PARAMS, SEED, tmp_path / "before")
    mesh = add_mesh(user_catalog, "widget")
    catalog.refresh()
    after = GEN.run(PARAMS, SEED, tmp_path / "after")
    assert after.job_id != before.job_id
    assert after.archive.name == f"{after.job_id}.zip"
    assert job_json(after.archive)["catalog_hash"] != job_json(before.archive)["catalog_hash"]
    # the mesh is not in this scene: same labels, another catalog, another id
    for name in LABELS:
        assert getattr(after, name).drop(["job_id"]).equals(getattr(before, name).drop(["job_id"]))
    mesh.with_suffix(".json").write_text(json.dumps({"size": 0.09}))  # another size: another id
    assert job_id(GEN, PARAMS, SEED) == after.job_id  # read once per process...
    catalog.refresh()
    assert job_id(GEN, PARAMS, SEED) not in (before.job_id, after.job_id)  # ...until read again
    mesh.unlink()
    mesh.with_suffix(".json").unlink()
    catalog.refresh()
    assert job_id(GEN, PARAMS, SEED) == before.job_id  # content decides, not history


def test_the_catalog_hash_is_its_content_not_where_it_lies(user_catalog, tmp_path):
    add_mesh(user_catalog, "widget")
    here = catalog.refresh().content_hash
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    add_mesh(elsewhere, "widget")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VARIO_CATALOG_DIR", str(elsewhere))
        assert catalog.refresh().content_hash == here
        add_mesh(elsewhere, "widget", color=(0.1, 0.9, 0.1, 1))  # the same mesh, recoloured
        assert catalog.refresh().content_hash != here
        add_mesh(elsewhere, "widget", extents=(1.0, 0.5, 0.4))  # same size, another shape
        assert catalog.refresh().content_hash != here


def test_job_json_records_the_catalog_hash_and_the_backend_that_make_its_id(tabletop_job):
    """The id is the documented hash (docs/conventions.md) of what job.json records."""
    job = job_json(tabletop_job.archive)
    assert job["params"]["fast_backend"] == "tiny"  # the default, on every machine
    assert job["render_backend"] == "pybullet-tiny"
    key = {
        "catalog": job["catalog_hash"],
        "generator": job["generator"],
        "params": job["params"],
        "seed": job["seed"],
        "version": job["version"],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    assert digest == job["job_id"] == tabletop_job.job_id


def test_the_same_job_twice_has_the_same_id_and_identical_labels(tmp_path):
    first = GEN.run(PARAMS, SEED, tmp_path / "first")
    second = GEN.run(PARAMS, SEED, tmp_path / "second")
    assert first.job_id == second.job_id
    for name in LABELS:
        member = f"labels/{name}.parquet"
        assert read_member(first.archive, member) == read_member(second.archive, member), name
    assert coco(first.archive) == coco(second.archive)
    timings = [c for c in first.jobs.column_names if c.endswith("_seconds")]
    assert first.jobs.drop(timings).equals(second.jobs.drop(timings))


def test_the_fast_backend_is_a_parameter_in_the_id_and_is_drawn_by_what_it_names(tmp_path):
    egl = GEN.Params(**SMALL, fast_backend="egl")
    assert job_id(GEN, egl, SEED) != job_id(GEN, PARAMS, SEED)
    try:
        result = GEN.run(egl, SEED, tmp_path)
    except EGLUnavailable:
        pytest.skip("no EGL on this machine")  # the failure itself is tested below
    assert job_json(result.archive)["render_backend"] == "pybullet-egl"


def test_egl_that_does_not_load_fails_the_job_rather_than_falling_back(tmp_path, monkeypatch):
    monkeypatch.setattr(tiny.pkgutil, "get_loader", lambda name: None)
    with pytest.raises(EGLUnavailable, match="fast_backend=egl: .* did not load"):
        GEN.run(GEN.Params(**SMALL, fast_backend="egl"), SEED, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_job_planned_with_another_catalog_fails_clearly_and_leaves_no_archive(
    user_catalog, tmp_path
):
    mesh = add_mesh(user_catalog, "widget")
    catalog.refresh()
    manifest = plan(spec("drift")).manifest
    mesh.unlink()  # the catalog changes between planning and rendering
    out = tmp_path / "archives"
    (outcome,) = sh.run_shard("tabletop", manifest, out, workers=1)
    assert outcome.status == "failed"
    assert outcome.error.startswith("catalog changed since the batch was planned: ")
    assert "\n" not in outcome.error and str(user_catalog) in outcome.error
    assert not list(out.glob("*.zip")) and not list(out.glob(".*.partial"))
    (failed,) = sh.shard_tables("tabletop", manifest, out)["jobs"].to_pylist()
    assert failed["job_id"] == outcome.job_id and failed["error"] == outcome.error
    catalog.refresh()  # planned again with the catalog as it is now, the job renders
    (again,) = sh.run_shard("tabletop", plan(spec("drift")).manifest, out, workers=1)
    assert again.status == "ok" and (out / f"{again.job_id}.zip").exists()


def test_a_process_holding_an_older_catalog_reads_it_again_for_a_planned_job(
    user_catalog, tmp_path
):
    """As a warm worker does when a mesh was added after it read the catalog."""
    old = catalog.default_catalog().content_hash
    add_mesh(user_catalog, "widget")  # this process does not read the catalog again
    row = json.loads(
        subprocess.run(
            [sys.executable, "-c", PLAN_IN_ANOTHER_PROCESS, spec("fresh").model_dump_json()],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[-1]
    )
    params = GEN.Params.model_validate_json(row["params_json"])
    assert job_id(GEN, params, row["seed"]) != row["job_id"]  # this process is behind
    result = GEN.run(params, row["seed"], tmp_path, planned_id=row["job_id"])
    assert result.status == "ok" and result.job_id == row["job_id"]
    assert job_json(result.archive)["catalog_hash"] != old


def test_builtin_coco_ids_do_not_move_when_user_categories_are_added(user_catalog, tmp_path):
    before = coco(GEN.run(PARAMS, SEED, tmp_path / "before").archive)
    ids = {c["name"]: c["id"] for c in before["categories"]}
    assert set(ids) == set(catalog.default_catalog().categories())  # every built-in, no user's
    assert ids == {name: i + 1 for i, name in enumerate(sorted(ids))}  # by name, as they were
    for category in ("aardvark", "mmm", "zebra"):  # before, among and after the built-ins
        add_mesh(user_catalog, category)
    catalog.refresh()
    after = coco(GEN.run(PARAMS, SEED, tmp_path / "after").archive)
    moved = {c["name"]: c["id"] for c in after["categories"]}
    assert {name: moved[name] for name in ids} == ids
    assert after["annotations"] == before["annotations"]
    user = [moved[name] for name in ("aardvark", "mmm", "zebra")]
    assert user == sorted(user) and min(user) > max(ids.values())
    assert len(set(moved.values())) == len(moved)
