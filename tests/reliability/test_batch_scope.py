"""Batches stay apart: two batches holding the same jobs (same generator, parameters and
seed, hence the same job ids) each test clean, and a name that is not a batch name never
reaches a path or a query."""

from __future__ import annotations

import shutil

import pytest
from conftest import build_batch

from vario.batch.plan import batch_of
from vario.quality import checks as quality
from vario.store.layout import DataStore

SPEC = {
    "generator": "tabletop",
    "seed": 4,
    "shard_size": 4,
    "fixed": {"resolution": 64, "n_frames": 1, "n_objects": 3, "n_distractors": 0},
    "jobs": [{"light_azimuth": a} for a in (0, 120, 240)],
}


def test_two_batches_with_the_same_jobs_both_pass_integrity(tmp_path):
    first = build_batch(tmp_path, {**SPEC, "name": "first"}).store
    second = build_batch(tmp_path, {**SPEC, "name": "second"}).store
    # one data folder holding both batches, as a dataset that grew
    store = DataStore(tmp_path / "both")
    for source in (first, second):
        shutil.copytree(source.root, store.root, dirs_exist_ok=True)
    ids = {b: sorted(store.manifest(b).column("job_id").to_pylist()) for b in ("first", "second")}
    assert ids["first"] == ids["second"]  # the same jobs
    for batch in ("first", "second"):
        results = {r.name: r for r in quality.run_checks(store, batch)}
        integrity = results["integrity"]
        assert integrity.passed, integrity.message
        assert integrity.metadata["jobs"] == 3
        assert results["novelty"].metadata["frames"] == 3  # its own frames only


@pytest.mark.parametrize("name", ["../etc", "a'; DROP TABLE jobs; --", "UPPER", "", "a/b"])
def test_a_name_that_is_not_a_batch_name_is_refused(tmp_path, name):
    store = DataStore(tmp_path)
    for use in (store.batch_dir, store.archive_dir, lambda b: store.table_dir("jobs", b)):
        with pytest.raises(ValueError, match="not a batch name"):
            use(name)
    with pytest.raises(ValueError, match="not a batch name"):
        quality.run_checks(store, name)
    with pytest.raises(ValueError, match="not a"):
        batch_of(f"{name}~00001")
    assert list(tmp_path.iterdir()) == []
