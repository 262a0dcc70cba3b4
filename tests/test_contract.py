"""The generator contract, the registry and the CLI's handling of parameters."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner
from pydantic import Field

from dagster_project.cli import main
from generators.contract import registry
from generators.labels import archive as arc
from generators.library.tabletop import TabletopParams
from generators.params import GeneratorParams, ParameterError, describe, validate


def test_generators_are_found_through_entry_points():
    assert "tabletop" in registry.available()
    gen = registry.get("tabletop")
    assert gen.Params is TabletopParams and gen.version
    with pytest.raises(KeyError, match="installed: .*tabletop"):
        registry.get("nope")


@pytest.mark.parametrize("name", list(registry.available()))
def test_every_parameter_is_typed_documented_defaulted_and_bounded(name):
    params = registry.get(name).Params
    for doc in describe(params):
        assert doc.description and doc.allowed != "any" and doc.type
        field = params.model_fields[doc.name]
        assert not field.is_required()
    params()  # the defaults form a valid job


def test_a_parameter_model_that_breaks_the_contract_fails_at_definition():
    with pytest.raises(TypeError, match="unbounded"):

        class Unbounded(GeneratorParams):
            unbounded: int = Field(3, description="no range")

    with pytest.raises(TypeError, match="undocumented"):

        class Undocumented(GeneratorParams):
            undocumented: Literal["a", "b"] = "a"


def test_validation_names_the_parameter_the_value_and_the_range():
    with pytest.raises(ParameterError) as err:
        validate(TabletopParams, {"n_objects": -3, "fov": 500, "table_texture": "marble"})
    text = str(err.value)
    assert "n_objects: -3" in text and "[1, 20]" in text
    assert "fov: 500" in text and "[20, 90]" in text
    assert "table_texture: 'marble'" in text and '"wood"' in text


def test_step_rate_must_divide_into_frames():
    with pytest.raises(ParameterError, match="step_rate=250 must be a multiple of frame_rate=24"):
        validate(TabletopParams, {"step_rate": 250})


def test_cli_show_documents_every_parameter():
    result = CliRunner().invoke(main, ["generators", "show", "tabletop"])
    assert result.exit_code == 0
    rows = {}
    for line in result.output.splitlines():  # rich table rows: │ cell │ cell │ ... │
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 6:
            rows[cells[0]] = cells
    for doc in describe(TabletopParams):
        name, role, kind, default, allowed, description = rows[doc.name]
        assert (kind, allowed, description) == (doc.type, doc.allowed, doc.description)
        assert json.loads(default) == doc.default
    roles = [cells[1] for cells in rows.values()]  # semantic, then nuisance, then settings
    assert roles == sorted(roles, key=["semantic", "nuisance", "setting"].index)
    assert rows["n_objects"][1] == "semantic" and rows["fov"][1] == "nuisance"
    assert rows["resolution"][1] == "setting"
    schema = json.loads(
        CliRunner().invoke(main, ["generators", "show", "tabletop", "--json"]).output
    )
    assert schema["properties"]["n_objects"]["maximum"] == 20
    assert "tabletop" in CliRunner().invoke(main, ["generators", "list"]).output


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("n_objects=-3", ["n_objects", "-3", "[1, 20]"]),
        ("colour=red", ["colour", "unknown parameter", "'red'", "n_objects"]),
        ("n_objects=many", ["n_objects", "'many'", "valid integer", "[1, 20]"]),
        ("resolution=2048", ["resolution", "2048", "[64, 1024]"]),
        ("categories=duck,cat", ["categories[1]", "'cat'", '"duck"']),
    ],
)
def test_cli_rejects_bad_parameters_with_exit_2_and_writes_nothing(tmp_path, assignment, expected):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", "run", "tabletop"]
        + ["--set", assignment, "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    for fragment in expected:
        assert fragment in result.stderr
    assert not out.exists()


def test_cli_rejects_an_unknown_generator_with_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["run", "nope", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown generator 'nope'" in result.output
    assert not (tmp_path / "x").exists()


def test_cli_run_prints_the_archive_path(tmp_path):
    args = ["run", "tabletop", "--set", "n_objects=2", "--set", "resolution=64"]
    result = subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", *args, "--seed", "7", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    archive = result.stdout.strip()
    assert archive.endswith(".zip") and [str(p) for p in tmp_path.iterdir()] == [archive]
    with zipfile.ZipFile(archive) as z:
        job = json.loads(z.read("job.json"))
    frames = arc.read_tables(Path(archive))["frames"]
    assert (
        job["seed"] == 7 and job["params"]["n_objects"] == 2 and job["params"]["resolution"] == 64
    )
    assert set(frames.column("width").to_pylist()) == {64}  # rendered as asked
