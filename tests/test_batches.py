"""Batch specs and their plans: validation, samplers, shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from pydantic import Field, ValidationError, model_validator

from generators.contract import registry
from generators.job import make_job_id
from generators.params import GeneratorParams, field_schemas
from generators.scene.catalog import default_catalog
from vario.batch.plan import _ParamsText, _strings, batch_of, plan
from vario.batch.samplers import sample
from vario.batch.spec import BatchSpec, SpecError, load_spec


def _spec(**overrides) -> BatchSpec:
    base = {
        "name": "b1",
        "generator": "tabletop",
        "seed": 3,
        "shard_size": 4,
        "fixed": {"resolution": 64},
        "sampler": {
            "kind": "sobol",
            "count": 16,
            "ranges": {
                "n_objects": [1, 6],
                "light_azimuth": [0, 360],
                "table_texture": {"choices": ["wood", "grid", "plain"]},
            },
        },
    }
    return BatchSpec.model_validate({**base, **overrides})


@pytest.mark.parametrize("kind", ["random", "sobol", "halton", "lhs"])
def test_samplers_cover_their_ranges_with_the_right_types(kind):
    spec = _spec(sampler={**_spec().sampler.model_dump(), "kind": kind, "count": 64})
    manifest = plan(spec).manifest
    params = [json.loads(p) for p in manifest.column("params_json").to_pylist()]
    n_objects = [p["n_objects"] for p in params]
    assert set(n_objects) == set(range(1, 7))  # every integer level, ends included
    azimuths = np.array([p["light_azimuth"] for p in params])
    assert azimuths.min() >= 0 and azimuths.max() <= 360 and np.ptp(azimuths) > 300
    assert {p["table_texture"] for p in params} == {"wood", "grid", "plain"}
    assert all(p["resolution"] == 64 and p["renderer"] == "tiny" for p in params)


def test_stratified_gives_every_cell_the_same_number_of_jobs():
    ranges = {
        "table_texture": {"choices": ["wood", "grid", "plain"]},
        "light_azimuth": [0, 360],
        "fov": [30, 60],
    }
    spec = _spec(
        sampler={
            "kind": "stratified",
            "count": 60,
            "levels": 4,
            "ranges": ranges,
            "strata": ["table_texture", "light_azimuth"],
        }
    )
    params = [json.loads(p) for p in plan(spec).manifest.column("params_json").to_pylist()]
    cells = {}
    for p in params:
        key = (p["table_texture"], int(p["light_azimuth"] // 90))
        cells[key] = cells.get(key, 0) + 1
    assert len(cells) == 12 and set(cells.values()) == {5}
    fov = np.array([p["fov"] for p in params])
    assert fov.min() >= 30 and fov.max() <= 60
    with pytest.raises(ValueError, match="strata among its ranges"):
        _spec(sampler={"kind": "stratified", "count": 4, "ranges": ranges, "strata": ["x"]})


def test_grid_is_the_full_product():
    spec = _spec(
        sampler={
            "kind": "grid",
            "levels": 3,
            "ranges": {"fov": [30, 60], "shadows": {"choices": [True, False]}},
        }
    )
    params = [json.loads(p) for p in plan(spec).manifest.column("params_json").to_pylist()]
    assert sorted((p["fov"], p["shadows"]) for p in params) == sorted(
        (f, s) for f in (30.0, 45.0, 60.0) for s in (True, False)
    )


def test_plans_are_deterministic_and_sharded():
    first, again = plan(_spec()), plan(_spec())
    assert first.manifest.equals(again.manifest)
    assert first.shards == [f"b1~{i:05d}" for i in range(4)]
    assert all(batch_of(s) == "b1" for s in first.shards)
    assert len(set(first.manifest.column("job_id").to_pylist())) == 16
    other = plan(_spec(seed=4))
    assert other.manifest.column("params_json") != first.manifest.column("params_json")


def test_explicit_jobs_are_validated_one_by_one():
    with pytest.raises(SpecError) as err:
        plan(_spec(sampler=None, jobs=[{"n_objects": 2}, {"n_objects": 99}, {"fov": 5}]))
    text = str(err.value)
    assert "job 1: n_objects: 99" in text and "[1, 20]" in text
    assert "job 2: fov: 5" in text and "job 0" not in text


def test_sampler_ranges_are_checked_against_the_parameters():
    ranges = {"fov": [10, 50], "colour": [0, 1]}
    with pytest.raises(SpecError) as err:
        plan(_spec(sampler={"kind": "random", "count": 4, "ranges": ranges}))
    text = str(err.value)
    assert "sampler.ranges.fov: 10" in text and "[20, 90]" in text
    assert "sampler.ranges.colour: unknown parameter" in text


def test_spec_files_give_field_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "Bad Name!", "generator": "tabletop"}))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "name: String should match pattern" in str(err.value)
    path.write_text(yaml.safe_dump({"name": "ok", "generator": "tabletop"}))
    with pytest.raises(SpecError, match="give exactly one of 'jobs' .explicit. or 'sampler'"):
        load_spec(path)
    path.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not YAML/JSON"):
        load_spec(path)


def test_a_batch_of_100000_jobs_is_representable():
    spec = _spec(
        shard_size=256, sampler={"kind": "random", "count": 100_000, "ranges": {"fov": [20, 90]}}
    )
    batch = plan(spec)
    assert batch.manifest.num_rows == 100_000 and len(batch.shards) == 391


def test_a_large_sampled_batch_plans_as_validating_each_job_would():
    spec = _spec(
        shard_size=64,
        fixed={"resolution": 128, "n_frames": 2},
        sampler={
            "kind": "sobol",
            "count": 20_000,
            "ranges": {
                "n_objects": [1, 12],
                "light_azimuth": [0, 360],
                "camera_distance": [0.3, 2.5],
                "table_texture": {"choices": ["wood", "grid", "plain"]},
                "shadows": {"choices": [True, False]},
                "categories": {"choices": [["duck"], ["cube", "duck"]]},
            },
        },
    )
    gen = registry.get(spec.generator)
    manifest = plan(spec).manifest
    assert manifest.num_rows == 20_000
    assert manifest.column("job_index").to_pylist() == list(range(20_000))
    jobs = sample(spec.sampler, field_schemas(gen.Params), spec.seed)
    seeds = np.random.default_rng(spec.seed).integers(0, 2**31 - 1, size=20_000).tolist()
    catalog = default_catalog().content_hash  # the planning process's
    for i in np.random.default_rng(0).choice(20_000, size=200, replace=False).tolist():
        row = {name: manifest.column(name)[i].as_py() for name in manifest.column_names}
        expected = gen.Params.model_validate({**spec.fixed, "renderer": "tiny", **jobs[i]})
        dumped = expected.model_dump(mode="json")
        assert row["params_json"] == json.dumps(dumped, sort_keys=True)
        again = gen.Params.model_validate(json.loads(row["params_json"]))
        assert json.dumps(again.model_dump(mode="json"), sort_keys=True) == row["params_json"]
        assert row["seed"] == seeds[i] and row["shard"] == f"b1~{i // 64:05d}"
        assert row["job_id"] == make_job_id(gen.name, gen.version, dumped, seeds[i], catalog)


def test_invalid_values_are_reported_with_their_job_index():
    with pytest.raises(SpecError) as err:  # a bad fixed value fails every job that keeps it
        plan(_spec(sampler=None, fixed={"fov": 5}, jobs=[{}, {"fov": 30}, {"n_objects": 2}]))
    assert err.value.messages == [
        f"job {i}: fov: 5 is invalid (Input should be greater than or equal to 20); "
        "allowed: float [20, 90]"
        for i in (0, 2)
    ]
    jobs = [{"n_objects": 2}] * 30
    jobs[7], jobs[12] = {"light_azimuth": 400}, {"table_texture": "marble"}
    with pytest.raises(SpecError) as err:
        plan(_spec(sampler=None, jobs=jobs))
    assert [m.split(" is invalid")[0] for m in err.value.messages] == [
        "job 7: light_azimuth: 400",
        "job 12: table_texture: 'marble'",
    ]
    assert "allowed: float [0, 360]" in err.value.messages[0]


def test_a_sampled_job_a_model_validator_refuses_is_reported_up_to_twenty():
    # both range ends divide step_rate 240 (so the spec passes), most rates between do not
    ranges = {"frame_rate": [20, 30], "fov": [20, 90]}
    spec = _spec(
        fixed={"step_rate": 240}, sampler={"kind": "random", "count": 200, "ranges": ranges}
    )
    schemas = field_schemas(registry.get("tabletop").Params)
    rates = [job["frame_rate"] for job in sample(spec.sampler, schemas, spec.seed)]
    bad = [i for i, rate in enumerate(rates) if 240 % rate]
    with pytest.raises(SpecError) as err:
        plan(spec)
    messages = err.value.messages
    assert len(bad) > 20 and len(messages) == 20
    for i, message in zip(bad, messages, strict=False):
        assert message.startswith(f"job {i}: parameters: ")
        assert f"step_rate=240 must be a multiple of frame_rate={rates[i]}" in message


class _Derived(GeneratorParams):
    """A model whose validator derives a field the jobs do not set."""

    a: int = Field(1, ge=0, le=10, description="Set by the jobs.")
    b: int = Field(0, ge=0, le=20, description="Twice a, whatever the input says.")

    @model_validator(mode="before")
    @classmethod
    def _double(cls, values: dict) -> dict:
        return {**values, "b": 2 * values.get("a", 1)}


def test_params_text_is_exact_when_a_validator_derives_other_fields():
    models = [_Derived.model_validate({"a": a}) for a in (1, 1, 3, 0)]
    text = _ParamsText(models[0], ["a"])
    for model in models:
        text.add(model)
    assert text.texts() == [json.dumps(m.model_dump(mode="json"), sort_keys=True) for m in models]


def test_long_text_columns_are_split_into_chunks():
    texts = ["a", "bb", "", "cccc", "d", "é%"]
    column = _strings(texts, chunk_bytes=3)
    assert column.num_chunks == 4 and column.to_pylist() == texts


@pytest.mark.parametrize(
    "place",
    [
        {"fixed": {"renderer": "cycles"}, "jobs": [{}]},
        {"jobs": [{"renderer": "cycles"}]},
        {"sampler": {"kind": "random", "count": 2, "ranges": {"renderer": {"choices": ["tiny"]}}}},
    ],
)
def test_a_renderer_among_the_parameters_is_refused_not_overridden(place):
    """The spec's top-level ``renderer`` decides; one among the parameters would silently
    lose to it, so it is an error that says where to put it."""
    with pytest.raises(ValidationError, match="set the renderer at the top level"):
        BatchSpec.model_validate({"name": "r", "generator": "tabletop", **place})
