"""Generator parameters: the contract every field meets, their documentation, and turning
``--set name=value`` strings into a validated model with field-level errors."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class FieldErrors(ValueError):
    """Invalid input; each message names the field, the value and what is allowed."""

    def __init__(self, messages: list[str]):
        super().__init__("\n".join(messages))
        self.messages = messages


class ParameterError(FieldErrors):
    """Invalid generator parameters."""


MAX_FILE_BYTES = 1 << 20  # a spec or tests file: far more than any real one needs
MAX_ERRORS = 10  # messages shown of a file's errors; the rest are counted
_SHOWN_INPUT = 60  # characters of a bad value shown in its message


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: ``*name`` can expand a few hundred bytes into gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)


def load_yaml_model(
    model: type[BaseModel], path: Path, error: type[FieldErrors], *, max_bytes: int = MAX_FILE_BYTES
) -> BaseModel:
    """A YAML (or JSON) file validated by ``model``; ``error`` names the file and each bad
    field with its value. The file is bounded before it is parsed: at most ``max_bytes``,
    UTF-8, no YAML aliases; at most ``MAX_ERRORS`` messages, each value shortened."""
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    return parse_yaml_model(model, raw, error, source=str(path), max_bytes=max_bytes)


def parse_yaml_model(
    model: type[BaseModel],
    raw: bytes,
    error: type[FieldErrors],
    *,
    source: str = "",
    max_bytes: int = MAX_FILE_BYTES,
) -> BaseModel:
    """``load_yaml_model`` for bytes already read (an HTTP request's body); each message
    starts with ``source`` when given, then the field's path."""
    at = f"{source}: " if source else ""
    if len(raw) > max_bytes:
        raise error([f"{at}larger than {max_bytes:,} bytes"])
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_NoAliasLoader) or {}
    except UnicodeDecodeError as exc:
        raise error([f"{at}not UTF-8 text (byte {exc.start})"]) from None
    except yaml.YAMLError as exc:
        raise error([f"{at}not YAML/JSON: {exc}"]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors()
        messages = [
            f"{at}{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']} (got {_shown(e['input'])})"
            for e in problems[:MAX_ERRORS]
        ]
        if len(problems) > MAX_ERRORS:
            messages.append(f"{at}... and {len(problems) - MAX_ERRORS} more problems")
        raise error(messages) from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_INPUT else text[: _SHOWN_INPUT - 3] + "..."


class GeneratorParams(BaseModel):
    """Base for a generator's parameter model.

    Every field must be typed, documented, defaulted, and bounded: ``ge``/``le`` for numbers,
    a ``Literal`` (or a list of one) for choices, or ``bool``. A model that breaks this
    fails at import, so ``vario generators show`` can always print a complete table.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for doc in describe(cls):
            if not doc.description:
                raise TypeError(f"{cls.__name__}.{doc.name}: undocumented; add a description")
            if doc.allowed == "any":
                raise TypeError(
                    f"{cls.__name__}.{doc.name}: unbounded; add ge/le or choices (Literal)"
                )
        for name, field in cls.model_fields.items():
            if field.is_required():
                raise TypeError(f"{cls.__name__}.{name}: every parameter needs a default")


def check_range(model: object, *names: str) -> None:
    """Each ``<name>_min`` at most its ``<name>_max``: a range given as two parameters (a
    parameter model's ``model_validator`` calls it)."""
    for name in names:
        low, high = getattr(model, f"{name}_min"), getattr(model, f"{name}_max")
        if low > high:
            raise ValueError(f"{name}_min ({low}) is above {name}_max ({high})")


@dataclass(frozen=True)
class ParamDoc:
    name: str
    type: str
    default: Any
    allowed: str
    description: str


def _allowed(schema: dict) -> str:
    if "anyOf" in schema:  # an optional value: its type's bounds, or null
        options = [_allowed(s) for s in schema["anyOf"] if s.get("type") != "null"]
        if "any" in options:
            return "any"
        return " or ".join(options + ["null"] * (len(options) < len(schema["anyOf"])))
    if schema.get("type") == "string" and "maxLength" in schema:
        return f"text of at most {schema['maxLength']} characters"
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if schema.get("type") == "boolean":
        return "true or false"
    if schema.get("type") == "array":
        items = _allowed(schema.get("items", {}))
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        size = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
        return f"list of {size} items, each {items}" if items != "any" else "any"
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is None and hi is None:
        return "any"
    text = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    if "multipleOf" in schema:
        text += f", a multiple of {schema['multipleOf']}"
    return text


def _type_name(schema: dict) -> str:
    if "anyOf" in schema:
        names = [_type_name(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return " | ".join(names + ["None"] * (len(names) < len(schema["anyOf"])))
    if schema.get("type") == "array":
        return f"list[{_type_name(schema.get('items', {}))}]"
    if "enum" in schema:
        return "choice"
    return {"integer": "int", "number": "float", "boolean": "bool"}.get(schema.get("type"), "str")


def field_schemas(model: type[BaseModel]) -> dict[str, dict]:
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})

    def resolve(s: dict) -> dict:
        if "$ref" in s:
            s = {**defs[s["$ref"].split("/")[-1]], **{k: v for k, v in s.items() if k != "$ref"}}
        if "items" in s:
            s = {**s, "items": resolve(s["items"])}
        return s

    return {name: resolve(s) for name, s in schema["properties"].items()}


def describe(model: type[BaseModel]) -> list[ParamDoc]:
    """One row per parameter: type, default, allowed values, description."""
    return [
        ParamDoc(name, _type_name(s), s.get("default"), _allowed(s), s.get("description", ""))
        for name, s in field_schemas(model).items()
    ]


_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_BOOLEANS = {"true": True, "false": False}


def _typed(text: str, schema: dict) -> Any:
    """A ``--set`` text as the field's type, strictly: ``true``/``false`` for a flag (not
    ``1`` or ``yes``), plain decimal digits for an integer (not ``1_0``), a finite decimal
    number for a number (not ``nan``), commas between a list's items. Text that is none of
    these stays text, and validation names the parameter and what it allows."""
    kind = schema.get("type") or next(
        (option["type"] for option in schema.get("anyOf", []) if option.get("type") != "null"),
        None,
    )
    if kind == "array":
        return [part.strip() for part in text.split(",") if part.strip()]
    value = text.strip()
    if kind == "boolean" and value.lower() in _BOOLEANS:
        return _BOOLEANS[value.lower()]
    if kind == "integer" and _INTEGER.fullmatch(value):
        return int(value)
    if kind == "number" and _NUMBER.fullmatch(value):
        return float(value)
    return text


def parse_assignments(model: type[BaseModel], assignments: list[str]) -> dict[str, Any]:
    """``["n_objects=5", "categories=duck,cube"]`` to a dict of values for ``validate``."""
    schemas = field_schemas(model)
    values, errors = {}, []
    for item in assignments:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            errors.append(f"{item!r}: expected NAME=VALUE")
        else:  # unknown names pass through: ``validate`` reports them with the other errors
            values[name] = _typed(text, schemas.get(name, {}))
    if errors:
        raise ParameterError(errors)
    return values


def validate(model: type[BaseModel], values: dict[str, Any], *, strict: bool = False) -> BaseModel:
    """The validated model, or a ``ParameterError`` naming each bad parameter, value and range.
    ``strict`` takes values only of the field's own type (no ``"5"`` for 5, no 1 for True).

    It calls the model's validator as ``model_validate`` does, without that method's keyword
    handling: planning validates every job of a batch, 100,000 at a time."""
    try:
        return model.__pydantic_validator__.validate_python(values, strict=strict)
    except ValidationError as exc:
        docs = {d.name: d for d in describe(model)}
        messages = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "parameters"
            if err["type"] == "extra_forbidden":
                messages.append(
                    f"{name}: unknown parameter (value {err['input']!r}); known: {', '.join(docs)}"
                )
                continue
            doc = docs.get(name)
            allowed = f"; allowed: {doc.type} {doc.allowed}" if doc else ""
            where = "".join(f"[{p}]" for p in err["loc"][1:])
            value = values.get(name, err["input"]) if not where else err["input"]
            messages.append(f"{name}{where}: {value!r} is invalid ({err['msg']}){allowed}")
        raise ParameterError(messages) from None
