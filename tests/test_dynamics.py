"""Domain dynamics: the nightly schedule and new catalog assets become batches."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
import pytest
import trimesh
import yaml

from assets_defs.batches import shard
from assets_defs.storage import StorageResource
from dagster_project.local_run import evaluate_sensor
from dagster_project.schedules import catalog_sensor, nightly_batch
from dagster_project.sensors import inbox_sensor
from generators.scene import catalog
from vario.store import views as ds


def _accept(instance, storage):
    return evaluate_sensor(inbox_sensor, instance, storage)


def test_the_nightly_schedule_submits_the_template_with_a_new_seed(tmp_path):
    storage = StorageResource(root=str(tmp_path))
    when = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    with dg.build_schedule_context(
        scheduled_execution_time=when, resources={"storage": storage}
    ) as context:
        outcome = nightly_batch(context)
    assert "demo-20261122" in outcome.skip_message
    (spec_file,) = storage.store.inbox_specs()
    spec = yaml.safe_load(spec_file.read_text())
    assert spec["name"] == "demo-20261122" and spec["seed"] == 20261122
    with dg.instance_for_test() as instance:
        result = _accept(instance, storage)
    assert result.run_requests and storage.store.batches() == ["demo-20261122"]


@pytest.fixture
def user_catalog(tmp_path):
    """A user catalog folder with one new asset, widget/gear; the catalog is restored after."""
    folder = tmp_path / "catalog" / "widget"
    folder.mkdir(parents=True)
    trimesh.creation.box(extents=(1.0, 0.6, 0.4)).export(folder / "gear.obj")
    (folder / "gear.json").write_text(json.dumps({"size": 0.08, "color": [0.9, 0.1, 0.9, 1]}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VARIO_CATALOG_DIR", str(tmp_path / "catalog"))
        catalog.refresh()
        yield folder
    catalog.refresh()


def test_new_catalog_assets_are_covered_by_a_submitted_batch(tmp_path, user_catalog):
    storage = StorageResource(root=str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources={"storage": storage}) as ctx:
            first = catalog_sensor(ctx)
            cursor = ctx.cursor
        assert "covering widget" in first.skip_message
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"storage": storage}
        ) as ctx:
            assert catalog_sensor(ctx).skip_message == "no new assets"
        (spec_file,) = storage.store.inbox_specs()
        spec = yaml.safe_load(spec_file.read_text())
        assert spec["fixed"]["categories"] == ["widget"]
        spec["fixed"]["resolution"] = 64
        spec["sampler"]["count"] = 2
        spec_file.write_text(yaml.safe_dump(spec))
        result = _accept(instance, storage)
        (key,) = [r.partition_key for r in result.run_requests if r.job_name == "render_shard_job"]
        assert dg.materialize(
            [shard], partition_key=key, instance=instance, resources={"storage": storage}
        ).success
    con = ds.connect(storage.store)
    rows = con.execute(
        "SELECT DISTINCT category, asset_id FROM objects WHERE category <> 'distractor'"
    ).fetchall()
    assert rows == [("widget", "widget/gear")]
