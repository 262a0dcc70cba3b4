"""Named random streams: each randomizer draws from its own, derived from the job seed and
its name, so one randomizer's draws never depend on another's (docs/conventions.md); and the
record of what each drew, kept in the scene."""

from __future__ import annotations

import zlib

import numpy as np

from generators.scene.description import Scene


def stream(seed: int, *names: str) -> np.random.Generator:
    """The stream named ``names`` (for example ``"textures", "duck_0"``) of job ``seed``."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def check_range(model: object, *names: str) -> None:
    """Each ``<name>_min`` at most its ``<name>_max`` (a parameter model's validator)."""
    for name in names:
        low, high = getattr(model, f"{name}_min"), getattr(model, f"{name}_max")
        if low > high:
            raise ValueError(f"{name}_min ({low}) is above {name}_max ({high})")


def recorded(scene: Scene, name: str, drawn: object, **changes: object) -> Scene:
    """``scene`` with ``changes`` made and what randomizer ``name`` drew in its record
    (``Scene.randomization``)."""
    return scene.model_copy(
        update={**changes, "randomization": {**scene.randomization, name: drawn}}
    )
