"""Lights: one to N, each a sun, a point or an area light on a shell around the scene's
target, with a random intensity and colour temperature. Light ``i`` draws from the stream
``lights/<i>``, so raising the count adds lights and leaves the first ones as they were."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from generators.params import check_range
from generators.randomize.streams import recorded, stream
from generators.scene.description import Light, Scene
from generators.scene.geometry import Vec3, spherical_to_cartesian
from generators.scene.placement import kelvin_to_rgb

MAX_LIGHTS = 8


class LightParams(BaseModel):
    light_count_min: int = Field(1, ge=1, le=MAX_LIGHTS, description="Fewest lights.")
    light_count_max: int = Field(3, ge=1, le=MAX_LIGHTS, description="Most lights.")
    light_kinds: list[Literal["sun", "point", "area"]] = Field(
        ["sun", "point", "area"], min_length=1, description="Light kinds drawn from, uniformly."
    )
    light_distance_min: float = Field(
        1.5, ge=0.3, le=10, description="Nearest a point or area light is to the target, m."
    )
    light_distance_max: float = Field(
        4.0, ge=0.3, le=10, description="Farthest a point or area light is from the target, m."
    )
    light_azimuth_min: float = Field(0.0, ge=0, le=360, description="Least light azimuth, deg.")
    light_azimuth_max: float = Field(360.0, ge=0, le=360, description="Most light azimuth, deg.")
    light_elevation_min: float = Field(
        20.0, ge=-30, le=90, description="Lowest light elevation above the target, deg."
    )
    light_elevation_max: float = Field(
        85.0, ge=-30, le=90, description="Highest light elevation above the target, deg."
    )
    light_intensity_min: float = Field(0.4, ge=0.05, le=3, description="Dimmest light.")
    light_intensity_max: float = Field(1.6, ge=0.05, le=3, description="Brightest light.")
    light_temperature_min: float = Field(
        3000.0, ge=1500, le=15000, description="Warmest colour temperature, kelvin."
    )
    light_temperature_max: float = Field(
        9000.0, ge=1500, le=15000, description="Coolest colour temperature, kelvin."
    )
    light_area_size: float = Field(0.5, ge=0.01, le=5, description="An area light's side, m.")
    ambient: float = Field(0.4, ge=0, le=1, description="Ambient lighting coefficient.")

    @model_validator(mode="after")
    def _light_ranges(self) -> LightParams:
        check_range(
            self, "light_count", "light_distance", "light_azimuth", "light_elevation",
            "light_intensity", "light_temperature",
        )  # fmt: skip
        return self


def randomize_lights(
    scene: Scene, params: LightParams, seed: int, target: Vec3 = (0.0, 0.0, 0.0)
) -> Scene:
    """The scene's lights replaced by drawn ones around ``target``."""
    count = int(stream(seed, "lights").integers(params.light_count_min, params.light_count_max + 1))
    lights, drawn = [], []
    for i in range(count):
        rng = stream(seed, "lights", str(i))
        values = {
            "kind": str(rng.choice(params.light_kinds)),
            "azimuth": float(rng.uniform(params.light_azimuth_min, params.light_azimuth_max)),
            "elevation": float(rng.uniform(params.light_elevation_min, params.light_elevation_max)),
            "distance": float(rng.uniform(params.light_distance_min, params.light_distance_max)),
            "intensity": float(rng.uniform(params.light_intensity_min, params.light_intensity_max)),
            "temperature": float(
                rng.uniform(params.light_temperature_min, params.light_temperature_max)
            ),
        }
        direction = spherical_to_cartesian(1.0, values["azimuth"], values["elevation"])
        sun = values["kind"] == "sun"
        position = np.asarray(target, float) + values["distance"] * direction
        lights.append(
            Light(
                direction=tuple(float(v) for v in direction),
                kind=values["kind"],
                position=None if sun else tuple(float(v) for v in position),
                size=params.light_area_size if values["kind"] == "area" else 0.0,
                color=kelvin_to_rgb(values["temperature"]),
                intensity=values["intensity"],
                ambient=params.ambient if i == 0 else 0.0,
            )
        )
        drawn.append(values)
    return recorded(scene, "lights", drawn, lights=tuple(lights))
