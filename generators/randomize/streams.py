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


def recorded(scene: Scene, name: str, drawn: object, **changes: object) -> Scene:
    """``scene`` with ``changes`` made and what randomizer ``name`` drew in its record
    (``Scene.randomization``)."""
    return scene.model_copy(
        update={**changes, "randomization": {**scene.randomization, name: drawn}}
    )
