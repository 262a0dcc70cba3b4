"""``vario run`` takes parameters strictly: a value must be of the parameter's own type as
written (no ``1`` for a flag, no ``1_0`` or ``3.0`` for an integer, no ``nan``), the seed and
time limit are checked before any work, and each refusal exits 2 and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from generators.library.tabletop import TabletopGenerator
from generators.params import parse_assignments, validate


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "shadows=1"], "shadows: '1' is invalid (Input should be a valid boolean)"),
        (["--set", "n_objects=1_0"], "n_objects: '1_0' is invalid"),
        (["--set", "n_objects=3.0"], "n_objects: '3.0' is invalid"),
        (["--set", "fov=nan"], "fov: 'nan' is invalid"),
        (["--seed", "-1"], "-1 is not in the range 0<=x<=9223372036854775807"),
        (["--seed", str(2**64)], "is not in the range 0<=x<=9223372036854775807"),
        (["--time-limit", "nan"], "nan is not a finite number"),
        (["--time-limit", "-1"], "-1.0 is not in the range 0<x"),
    ],
)
def test_a_loose_value_is_refused_before_any_work(tmp_path, args, message):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", "run", "tabletop", *args, "--out", str(out)],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not out.exists()


def test_values_of_the_parameters_own_types_are_taken():
    model = TabletopGenerator.Params
    text = ["shadows=False", "n_objects=+7", "fov=4.5e1", "categories=duck, mug", "fov=.5e2"]
    params = validate(model, parse_assignments(model, text), strict=True)
    assert (params.shadows, params.n_objects, params.fov) == (False, 7, 50.0)
    assert params.categories == ["duck", "mug"]
