"""Named random streams: each randomizer draws from its own, derived from the job seed and
its name, so one randomizer's draws never depend on another's (docs/conventions.md)."""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, *names: str) -> np.random.Generator:
    """The stream named ``names`` (for example ``"textures", "duck_0"``) of job ``seed``."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def check_range(model: object, *names: str) -> None:
    """Each ``<name>_min`` at most its ``<name>_max`` (a parameter model's validator)."""
    for name in names:
        low, high = getattr(model, f"{name}_min"), getattr(model, f"{name}_max")
        if low > high:
            raise ValueError(f"{name}_min ({low}) is above {name}_max ({high})")
