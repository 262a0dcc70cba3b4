"""``/v1/generators``: what can be generated, each generator's parameters as JSON Schema,
parameter validation, and valid random parameters for a seed."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from generators.contract import registry
from generators.params import field_schemas, validate
from vario.api.auth import require
from vario.api.models import (
    ID_PATTERN,
    GeneratorDetail,
    GeneratorSummary,
    Parameters,
    SampleRequest,
    ValidParameters,
)
from vario.api.problems import PROBLEM_RESPONSES, ApiError
from vario.batch.samplers import random_params

router = APIRouter(
    prefix="/generators",
    tags=["generators"],
    dependencies=[Depends(require("read"))],
    responses=PROBLEM_RESPONSES,
)
Name = Annotated[str, Path(pattern=ID_PATTERN, description="A generator's name.")]


@functools.cache
def _installed() -> dict[str, Any]:
    """The installed generators, found once (entry points do not change while serving)."""
    return registry.available()


def _generator(name: str) -> Any:
    found = _installed().get(name)
    if found is None:
        raise ApiError(404, f"no generator {name!r}; known: {', '.join(_installed())}")
    return found


@router.get("")
def list_generators() -> list[GeneratorSummary]:
    return [
        GeneratorSummary(name=n, version=c.version, description=c.description)
        for n, c in _installed().items()
    ]


@router.get("/{name}")
def show_generator(name: Name) -> GeneratorDetail:
    gen = _generator(name)
    return GeneratorDetail(
        name=name,
        version=gen.version,
        description=gen.description,
        parameters=gen.Params.model_json_schema(),
        semantic=list(gen.domain.semantic),
        nuisance=list(gen.domain.nuisance),
    )


@router.post("/{name}/validate")
def validate_parameters(name: Name, body: Parameters) -> ValidParameters:
    """The parameters with defaults filled in, or 422 naming each bad one."""
    gen = _generator(name)
    return ValidParameters(params=validate(gen.Params, body.params).model_dump(mode="json"))


@router.post("/{name}/sample")
def sample_parameters(name: Name, body: SampleRequest) -> ValidParameters:
    """The generator's domain parameters drawn at random for ``seed`` (the same seed, the
    same parameters), valid with the others at their defaults: a job for a batch spec as
    it is."""
    gen = _generator(name)
    drawn = random_params(field_schemas(gen.Params), gen.domain, body.seed)
    validate(gen.Params, drawn)
    return ValidParameters(params=drawn)
