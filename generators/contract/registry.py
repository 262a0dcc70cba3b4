"""Generators are found through the ``vario.generators`` entry point group, so a package outside
this repository adds one by declaring ``[project.entry-points."vario.generators"]``."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from generators.contract.generator import Generator

ENTRY_POINT_GROUP = "vario.generators"


def available() -> dict[str, type[Generator]]:
    """All installed generators by name."""
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        found[cls.name] = cls
    return dict(sorted(found.items()))


def get(name: str) -> Generator:
    """An instance of the named generator; ``KeyError`` lists the ones installed."""
    generators = available()
    if name not in generators:
        raise KeyError(f"unknown generator {name!r}; installed: {', '.join(generators)}")
    return generators[name]()
