"""The parameter rules on small hand-written models: what ``describe`` documents for each kind
of field, the exact messages of ``validate``, ``--set`` parsing and YAML model files."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field, model_validator

from generators.params import (
    GeneratorParams,
    ParamDoc,
    ParameterError,
    describe,
    field_schemas,
    load_yaml_model,
    parse_assignments,
    validate,
)


class Shade(StrEnum):  # an Enum field is a "$ref" into the schema's "$defs"
    light = "light"
    dark = "dark"


class Rules(GeneratorParams):
    count: int = Field(3, ge=1, le=9, description="An integer range.")
    scale: float = Field(0.5, ge=0, description="Only a lower bound.")
    offset: float = Field(0.0, le=2.5, description="Only an upper bound.")
    step: float = Field(0.5, ge=0, le=1, multiple_of=0.25, description="On a grid.")
    flag: bool = Field(True, description="A switch.")
    mode: Literal["a", "b"] = Field("a", description="A literal choice.")
    shade: Shade = Field(Shade.light, description="An enum choice.")
    tags: list[Literal["x", "y", "z"]] = Field(
        ["x"], min_length=1, max_length=3, description="Some tags."
    )
    shades: list[Shade] = Field([Shade.dark], max_length=2, description="Some shades.")
    sizes: list[Annotated[int, Field(ge=0, le=5)]] = Field([1], description="Some sizes.")

    @model_validator(mode="before")
    @classmethod
    def _lower_mode(cls, values: dict) -> dict:
        if isinstance(values.get("mode"), str):
            values = {**values, "mode": values["mode"].lower()}
        return values

    @model_validator(mode="after")
    def _scale_within_count(self) -> Rules:
        if self.scale > self.count:
            raise ValueError("scale must not exceed count")
        return self


KNOWN = "count, scale, offset, step, flag, mode, shade, tags, shades, sizes"


def test_describe_documents_each_kind_of_field():
    assert describe(Rules) == [
        ParamDoc("count", "int", 3, "[1, 9]", "An integer range."),
        ParamDoc("scale", "float", 0.5, "[0, inf]", "Only a lower bound."),
        ParamDoc("offset", "float", 0.0, "[-inf, 2.5]", "Only an upper bound."),
        ParamDoc("step", "float", 0.5, "[0, 1], a multiple of 0.25", "On a grid."),
        ParamDoc("flag", "bool", True, "true or false", "A switch."),
        ParamDoc("mode", "choice", "a", 'one of "a", "b"', "A literal choice."),
        ParamDoc("shade", "choice", "light", 'one of "light", "dark"', "An enum choice."),
        ParamDoc(
            "tags",
            "list[choice]",
            ["x"],
            'list of 1 to 3 items, each one of "x", "y", "z"',
            "Some tags.",
        ),
        ParamDoc(
            "shades",
            "list[choice]",
            ["dark"],
            'list of 0 to 2 items, each one of "light", "dark"',
            "Some shades.",
        ),
        ParamDoc("sizes", "list[int]", [1], "list of at least 0 items, each [0, 5]", "Some sizes."),
    ]


def test_describe_of_unbounded_and_undocumented_fields():
    class Loose(BaseModel):  # not a GeneratorParams: nothing refuses it
        text: str = "hi"
        number: float = 1.5
        names: list[str] = []
        pair: tuple[int, int] = (1, 2)  # an array schema without "items"

    docs = describe(Loose)
    assert docs[:3] == [
        ParamDoc("text", "str", "hi", "any", ""),
        ParamDoc("number", "float", 1.5, "any", ""),
        ParamDoc("names", "list[str]", [], "any", ""),
    ]
    assert docs[3].name == "pair" and docs[3].allowed == "any" and docs[3].type.startswith("list")


def test_field_schemas_resolve_references_into_self_contained_schemas():
    schemas = field_schemas(Rules)
    shade = {"enum": ["light", "dark"], "type": "string", "default": "light"}
    assert schemas["shade"].items() >= {**shade, "description": "An enum choice."}.items()
    assert schemas["shades"]["items"].items() >= {"enum": ["light", "dark"]}.items()
    assert "$ref" not in schemas["shade"] and "$ref" not in schemas["shades"]["items"]


def test_a_parameter_without_a_default_or_with_unbounded_items_fails_at_definition():
    with pytest.raises(TypeError, match=r"^Required\.x: every parameter needs a default$"):

        class Required(GeneratorParams):
            x: int = Field(ge=0, le=1, description="No default.")

    with pytest.raises(TypeError, match=r"^Items\.names: unbounded; add ge/le or choices"):

        class Items(GeneratorParams):
            names: list[str] = Field([], description="Unbounded items.")


def test_validate_returns_the_model_with_lax_values():
    params = validate(Rules, {"count": "5", "flag": "false", "tags": ["y", "z"], "mode": "B"})
    assert isinstance(params, Rules)
    assert (params.count, params.flag, params.tags, params.mode) == (5, False, ["y", "z"], "b")


def test_validate_messages_name_each_field_value_and_range():
    with pytest.raises(ParameterError) as err:
        validate(Rules, {"count": 0, "step": 0.3, "tags": ["x", "w"], "mode": "C"})
    expected = [
        "count: 0 is invalid (Input should be greater than or equal to 1); allowed: int [1, 9]",
        "step: 0.3 is invalid (Input should be a multiple of 0.25); "
        "allowed: float [0, 1], a multiple of 0.25",
        "mode: 'C' is invalid (Input should be 'a' or 'b'); allowed: choice one of \"a\", \"b\"",
        "tags[1]: 'w' is invalid (Input should be 'x', 'y' or 'z'); "
        'allowed: list[choice] list of 1 to 3 items, each one of "x", "y", "z"',
    ]
    assert err.value.messages == expected
    assert str(err.value) == "\n".join(expected)


def test_validate_names_the_position_of_a_bad_item_in_a_nested_list():
    class Grid(GeneratorParams):
        cells: list[list[Annotated[int, Field(ge=0, le=1)]]] = Field([[0]], description="Cells.")

    with pytest.raises(ParameterError) as err:
        validate(Grid, {"cells": [[0], [1, 2]]})
    assert err.value.messages == [
        "cells[1][1]: 2 is invalid (Input should be less than or equal to 1); allowed: "
        "list[list[int]] list of at least 0 items, each list of at least 0 items, each [0, 1]"
    ]


def test_validate_reports_every_unknown_parameter_with_the_known_ones():
    with pytest.raises(ParameterError) as err:
        validate(Rules, {"colour": "red", "size": 4})
    assert err.value.messages == [
        f"colour: unknown parameter (value 'red'); known: {KNOWN}",
        f"size: unknown parameter (value 4); known: {KNOWN}",
    ]


def test_a_model_level_error_is_reported_for_the_parameters_as_a_whole():
    values = {"count": 2, "scale": 4.0}
    with pytest.raises(ParameterError) as err:
        validate(Rules, values)
    assert err.value.messages == [
        f"parameters: {values!r} is invalid (Value error, scale must not exceed count)"
    ]


def test_parse_assignments_splits_names_values_and_lists():
    parsed = parse_assignments(
        Rules, ["count =5", "tags= x, y,,", "mode=a=b", "colour=red", "sizes=3"]
    )
    assert parsed == {
        "count": 5,  # typed as the field is: an integer
        "tags": ["x", "y"],
        "mode": "a=b",
        "colour": "red",
        "sizes": ["3"],
    }
    assert validate(Rules, parse_assignments(Rules, ["tags=z,x", "count=7"])).tags == ["z", "x"]


def test_parse_assignments_refuses_items_without_an_equals_sign():
    with pytest.raises(ParameterError) as err:
        parse_assignments(Rules, ["count=5", "verbose", "flag"])
    assert err.value.messages == ["'verbose': expected NAME=VALUE", "'flag': expected NAME=VALUE"]


class _Inner(BaseModel):
    model_config = {"extra": "forbid"}
    level: int = Field(1, ge=0, le=3)


class _File(BaseModel):
    model_config = {"extra": "forbid"}
    inner: _Inner = _Inner()
    name: str = "x"


def test_yaml_model_files_load_or_name_each_bad_field(tmp_path):
    path = tmp_path / "file.yaml"
    path.write_text("inner: {level: 2}\nname: y\n")
    assert load_yaml_model(_File, path, ParameterError) == _File(inner=_Inner(level=2), name="y")
    path.write_text("")
    assert load_yaml_model(_File, path, ParameterError) == _File()

    path.write_text("inner: {level: 7}\nnmae: y\n")
    with pytest.raises(ParameterError) as err:
        load_yaml_model(_File, path, ParameterError)
    assert err.value.messages == [
        f"{path}: inner.level: Input should be less than or equal to 3 (got 7)",
        f"{path}: nmae: Extra inputs are not permitted (got 'y')",
    ]

    path.write_text("- 1\n- 2\n")
    with pytest.raises(ParameterError) as err:
        load_yaml_model(_File, path, ParameterError)
    (message,) = err.value.messages
    assert message.startswith(f"{path}: file: Input should be") and message.endswith("(got [1, 2])")

    path.write_text("inner: [unclosed")
    with pytest.raises(ParameterError) as err:
        load_yaml_model(_File, path, ParameterError)
    (message,) = err.value.messages
    assert message.startswith(f"{path}: not YAML/JSON: ")


def test_yaml_model_files_are_bounded_before_they_are_parsed(tmp_path):
    path = tmp_path / "file.yaml"
    path.write_text("name: " + "a" * 994)  # exactly 1,000 bytes
    assert load_yaml_model(_File, path, ParameterError, max_bytes=1000).name == "a" * 994
    path.write_text("name: " + "a" * 995)
    with pytest.raises(ParameterError) as err:
        load_yaml_model(_File, path, ParameterError, max_bytes=1000)
    assert err.value.messages == [f"{path}: larger than 1,000 bytes"]

    path.write_bytes(b"name: \xff")
    with pytest.raises(ParameterError) as err:
        load_yaml_model(_File, path, ParameterError)
    assert err.value.messages == [f"{path}: not UTF-8 text (byte 6)"]

    path.write_text("a: &x 1\nb: *x\n")
    with pytest.raises(ParameterError) as err:
        load_yaml_model(_File, path, ParameterError)
    (message,) = err.value.messages
    assert message.startswith(f"{path}: not YAML/JSON: aliases (*name) are not allowed")
    assert "line 2, column 4" in message  # where the alias is


def test_yaml_model_file_errors_are_counted_past_ten_and_values_shortened(tmp_path):
    path = tmp_path / "file.yaml"
    path.write_text("".join(f"k{i}: {i}\n" for i in range(10)))
    with pytest.raises(ParameterError) as err:
        load_yaml_model(_File, path, ParameterError)
    assert len(err.value.messages) == 10  # all shown, nothing counted
    path.write_text("".join(f"k{i:02d}: {i}\n" for i in range(13)))
    with pytest.raises(ParameterError) as err:
        load_yaml_model(_File, path, ParameterError)
    assert len(err.value.messages) == 11
    assert err.value.messages[-1] == f"{path}: ... and 3 more problems"

    fits, long = "x" * 58, "y" * 59  # their reprs: 60 and 61 characters
    path.write_text(f"a: {fits}\nb: {long}\n")
    with pytest.raises(ParameterError) as err:
        load_yaml_model(_File, path, ParameterError)
    assert err.value.messages == [
        f"{path}: a: Extra inputs are not permitted (got '{fits}')",
        f"{path}: b: Extra inputs are not permitted (got '{'y' * 56}...)",
    ]


def test_set_values_are_typed_strictly_as_their_field():
    class Optional_(BaseModel):
        limit: float | None = None
        level: int | None = None

    parsed = parse_assignments(
        Rules,
        ["flag=TRUE", "count= +7 ", "scale=.5", "offset=-1e-1", "step=2.", "mode= a"],
    )
    assert parsed == {
        "flag": True,
        "count": 7,
        "scale": 0.5,
        "offset": -0.1,
        "step": 2.0,
        "mode": " a",  # a choice stays text as written
    }
    assert parse_assignments(Rules, ["flag=false"]) == {"flag": False}
    not_typed = ["flag=1", "flag=yes", "count=1_0", "count=7.0", "scale=nan", "scale=inf"]
    assert [next(iter(parse_assignments(Rules, [a]).values())) for a in not_typed] == [
        "1",
        "yes",
        "1_0",
        "7.0",
        "nan",
        "inf",
    ]
    assert parse_assignments(Optional_, ["limit=2.5", "level=-3"]) == {"limit": 2.5, "level": -3}
    assert parse_assignments(Optional_, ["limit=none"]) == {"limit": "none"}


def test_strict_validation_takes_only_values_of_the_fields_own_type():
    assert validate(Rules, {"count": "5", "flag": 1}).count == 5  # lax by default
    with pytest.raises(ParameterError) as err:
        validate(Rules, {"count": "5", "flag": 1}, strict=True)
    assert [m.split(":")[0] for m in err.value.messages] == ["count", "flag"]
    assert validate(Rules, {"count": 5, "flag": False}, strict=True).flag is False
