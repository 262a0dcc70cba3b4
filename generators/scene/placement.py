"""Scene-building helpers shared by generators: drop positions, light colours, colour jitter."""

from __future__ import annotations

import colorsys
import math

import numpy as np

RGBA = tuple[float, float, float, float]


def free_spot(
    placed: list[tuple[np.ndarray, float]],
    radius: float,
    half_width: float,
    height: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A drop position in the square ``[-half_width, half_width]^2`` at ``height`` whose
    bounding sphere misses every earlier one (rising 5 cm at a time if crowded)."""
    z = height + radius
    while True:
        for _ in range(30):
            xy = rng.uniform(-half_width, half_width, 2)
            spot = np.array([xy[0], xy[1], z])
            if all(np.linalg.norm(spot - p) > r + radius + 0.005 for p, r in placed):
                return spot
        z += 0.05


def kelvin_to_rgb(kelvin: float) -> tuple[float, float, float]:
    """Approximate black-body colour (Tanner Helland's fit), normalised to a max of 1."""
    t = kelvin / 100
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    if t <= 66:
        g = 99.4708025861 * math.log(t) - 161.1195681661
    else:
        g = 288.1221695283 * (t - 60) ** -0.0755148492
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927)
    rgb = np.clip([r, g, b], 0, 255) / 255
    return tuple(float(c) for c in rgb / rgb.max())


def jitter_hue(rgba: RGBA, amount: float, rng: np.random.Generator) -> RGBA:
    """Shift the hue by up to ``amount / 2`` turns; grey colours get some saturation."""
    h, s, v = colorsys.rgb_to_hsv(*rgba[:3])
    h = (h + amount * rng.uniform(-0.5, 0.5)) % 1.0
    s = max(s, amount * 0.6)
    return (*colorsys.hsv_to_rgb(h, s, v), rgba[3])


def random_color(rng: np.random.Generator) -> RGBA:
    """A saturated colour of random hue (MOVi style)."""
    return (*colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0)), 1.0)
