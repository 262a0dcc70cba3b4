"""The domain gap report on a real rendered batch and a "real" dataset made from another
batch's COCO export: distances that are zero between a dataset and itself, positive between
two that differ, and an HTML page that shows them."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner
from conftest import build_batch

from dagster_project import cli
from vario.export.run import export_batch
from vario.ingest.real import ingest_coco_dataset
from vario.quality.gap import DISTRIBUTIONS, domain_gap

BASE = {
    "generator": "tabletop",
    "seed": 5,
    "shard_size": 8,
    "sampler": {"kind": "sobol", "count": 6, "ranges": {"camera_azimuth": [0, 360]}},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Batch ``near`` (objects seen from close by) and real dataset ``far``: batch ``far``'s
    COCO export, ingested as real data into ``near``'s data folder, then that export's
    origin batch is gone: only the real copy is compared."""
    root = tmp_path_factory.mktemp("gap")
    fixed = {"resolution": 64, "n_frames": 1, "n_objects": 4, "n_distractors": 0}
    near = build_batch(root, {**BASE, "name": "near", "fixed": {**fixed, "camera_distance": 0.6}})
    far = build_batch(root, {**BASE, "name": "far", "fixed": {**fixed, "camera_distance": 1.6}})
    out = root / "far-coco"
    export_batch(far.store, "far", "coco", out, split={"train": 1.0})
    annotations = out / "annotations" / "instances_train.json"
    ingest_coco_dataset(near.store, "far_real", annotations, out / "images" / "train")
    return near


def test_a_dataset_has_no_gap_to_itself_and_a_farther_camera_shows(data):
    same = {d.name: d for d in domain_gap(data.store, "near", "near").distances}
    assert set(same) == set(DISTRIBUTIONS)
    assert all(d.wasserstein == 0 and d.ks == 0 for d in same.values())
    gap = domain_gap(data.store, "near", "far_real")
    by_name = {d.name: d for d in gap.distances}
    assert by_name["box size"].wasserstein > 2  # px: objects twice as far look half as big
    assert by_name["box size"].ks_p < 0.05
    assert all(d.n_real > 0 and not math.isnan(d.ks) for d in gap.distances)
    html = gap.report.read_text()
    assert "far_real" in html and html.count("<img") == len(DISTRIBUTIONS) + 1


def test_the_cli_prints_the_distances_and_refuses_unknown_datasets(data):
    env = {"VARIO_DATA_DIR": str(data.store.root), "COLUMNS": "200"}
    done = CliRunner().invoke(cli.main, ["dataset", "gap", "near", "far_real"], env=env)
    assert done.exit_code == 0, done.output
    assert "box size" in done.output and done.output.strip().endswith(".html")
    refused = CliRunner().invoke(cli.main, ["dataset", "gap", "near", "nowhere"], env=env)
    assert refused.exit_code == 2 and "no frames of 'nowhere'" in refused.output
