"""The loop, end to end on a real rendered batch: predictions ingested, evaluated per slice,
model tests as CLI verdicts and blocking Dagster checks, and a targeted batch regenerated
where the model fails."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from conftest import build_batch

from assets_defs.evaluation import ModelTestsResource, model_evaluation, model_release
from dagster_project import cli
from dagster_project.sensors import regenerate_sensor
from vario.evaluate.regenerate import regenerate
from vario.evaluate.run import EvaluationError, evaluate_model
from vario.evaluate.slices import EvaluationSpec
from vario.ingest.predictions import ingest_predictions
from vario.store import sandbox

# cluttered tables seen from low cameras hide objects behind each other: occlusion varies
RANGES = {"n_objects": [2, 16], "spread": [0.05, 0.35], "camera_elevation": [15, 89]}
SPEC = {
    "name": "loop",
    "generator": "tabletop",
    "seed": 3,
    "shard_size": 32,
    "fixed": {"resolution": 96, "n_frames": 1, "n_distractors": 0, "start_time": 0.5},
    "sampler": {"kind": "sobol", "count": 32, "ranges": RANGES},
}
TESTS = {
    "slices": {"occluded": "occlusion > 0.5", "clear": "occlusion <= 0.5"},
    "model_tests": [
        {"slice": "occluded", "metric": "recall", "op": ">=", "threshold": 0.8},
        {"slice": "clear", "metric": "ap50", "op": ">=", "threshold": 0.95},
        {"slice": "all", "metric": "precision", "op": ">=", "threshold": 0.95, "severity": "WARN"},
    ],
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    return build_batch(tmp_path_factory.mktemp("evaluate"), SPEC)


def _predictions(storage, tmp_path, where: str = "TRUE", name: str = "p.parquet"):
    """The batch's ground truth as predictions (score 0.9), for the objects ``where`` keeps."""
    rows = (
        sandbox.connection(storage.store)
        .sql(
            "SELECT job_id, frame, category, 0.9 AS score, box_x_min::DOUBLE AS box_x, "
            "box_y_min::DOUBLE AS box_y, (box_x_max - box_x_min)::DOUBLE AS box_w, "
            f"(box_y_max - box_y_min)::DOUBLE AS box_h, mask_rle FROM objects WHERE {where}"
        )
        .to_arrow_table()
    )
    path = tmp_path / name
    pq.write_table(rows, path)
    return path


def _occluded_share(storage) -> float:
    return (
        sandbox.connection(storage.store)
        .execute("SELECT avg((occlusion > 0.5)::INT) FROM objects")
        .fetchone()[0]
    )


def test_ground_truth_as_predictions_scores_one_on_every_slice(batch, tmp_path):
    ingest_predictions(batch.store, "oracle", "loop", _predictions(batch, tmp_path))
    for iou_type in ("bbox", "segm"):
        spec = EvaluationSpec.model_validate({**TESTS, "iou_type": iou_type})
        result = evaluate_model(batch.store, "oracle", "loop", spec)
        assert result.passed and all(t.passed for t in result.tests)
        for name, m in result.metrics.items():
            assert (m.map, m.ap50, m.recall) == (1.0, 1.0, 1.0), (iou_type, name)
    again = evaluate_model(batch.store, "oracle", "loop", spec)
    assert again.up_to_date and again.id == result.id


def test_a_model_blind_to_occluded_objects_fails_only_there(batch, tmp_path):
    assert _occluded_share(batch) > 0.01  # the batch has occluded objects to miss
    source = _predictions(batch, tmp_path, "occlusion <= 0.5")
    ingest_predictions(batch.store, "blind", "loop", source)
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump(TESTS))
    env = {"VARIO_DATA_DIR": str(batch.store.root), "COLUMNS": "200"}
    result = CliRunner().invoke(cli.main, ["eval", "blind", "loop", "--tests", str(tests)], env=env)
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if "FAIL" in line]
    assert len(failed) == 1 and "occluded" in failed[0]  # the clear and all slices pass
    evaluation = evaluate_model(batch.store, "blind", "loop", EvaluationSpec.model_validate(TESTS))
    assert evaluation.up_to_date and not evaluation.passed
    assert evaluation.metrics["occluded"].recall == 0.0
    assert evaluation.metrics["clear"].ap50 == 1.0

    # the targeted batch: its share of occluded objects at least twice the original's
    spec = regenerate(batch.store, evaluation.id, "occluded", 32)
    assert spec["provenance"]["slice"] == "occluded" and spec["generator"] == "tabletop"
    assert spec["template"] == "loop" and spec["sampler"]["count"] == 32
    for name, (low, high) in spec["sampler"]["ranges"].items():
        assert RANGES[name][0] <= low <= high <= RANGES[name][1]
    again = build_batch(tmp_path, spec)
    assert _occluded_share(again) >= 2 * _occluded_share(batch)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("no_such_column > 1", "slice 'bad'.*no_such_column"),
        ("length(read_text('/etc/passwd')) > 0", "slice 'bad'"),
    ],
)
def test_a_wrong_or_hostile_slice_is_refused(batch, tmp_path, condition, message):
    ingest_predictions(batch.store, "oracle", "loop", _predictions(batch, tmp_path))
    spec = EvaluationSpec.model_validate({"slices": {"bad": condition}})
    with pytest.raises(EvaluationError, match=message):
        evaluate_model(batch.store, "oracle", "loop", spec)


def test_model_tests_are_blocking_checks_on_the_evaluation(batch, tmp_path):
    ingest_predictions(
        batch.store, "blind", "loop", _predictions(batch, tmp_path, "occlusion <= 0.5")
    )
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "loop.model_tests.yaml").write_text(yaml.safe_dump(TESTS))
    resources = {"storage": batch, "model_tests": ModelTestsResource(templates=str(templates))}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("models", ["blind"])
        instance.add_dynamic_partitions("datasets", ["loop"])
        key = dg.MultiPartitionKey({"model": "blind", "dataset": "loop"})
        result = dg.materialize(
            [model_evaluation, model_release],
            partition_key=key,
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert not checks["model_tests_error"].passed and checks["model_tests_warn"].passed
        materialized = {m.asset_key.path[-1] for m in result.get_asset_materialization_events()}
        assert materialized == {"model_evaluation"}  # the release was blocked
    assert not (batch.store.root / "releases").exists()


def test_the_regenerate_sensor_submits_one_targeted_batch_per_failing_slice(batch, tmp_path):
    ingest_predictions(
        batch.store, "blind", "loop", _predictions(batch, tmp_path, "occlusion <= 0.5")
    )
    evaluation = evaluate_model(batch.store, "blind", "loop", EvaluationSpec.model_validate(TESTS))
    assert not evaluation.passed
    inbox = batch.store.inbox
    before = set(inbox.glob("*.yaml"))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"storage": batch})
        regenerate_sensor(context)
        submitted = set(inbox.glob("*.yaml")) - before
        assert len(submitted) == 1  # the occluded slice's ERROR test failed; nothing else
        spec = yaml.safe_load(next(iter(submitted)).read_text())
        assert spec["provenance"] == {
            **spec["provenance"],
            "evaluation": evaluation.id,
            "slice": "occluded",
        }
        again = dg.build_sensor_context(
            instance=instance, resources={"storage": batch}, cursor=context.cursor
        )
        regenerate_sensor(again)
        assert set(inbox.glob("*.yaml")) - before == submitted  # once per evaluation and slice
