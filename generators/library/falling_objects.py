"""``falling_objects``: a wide domain in the spirit of Kubric's MOVi. Objects from the whole
catalog are thrown onto a floor with random velocities and random materials, under several
lights, seen from a random point on a hemisphere shell. Collisions go to the ``events`` table.

Semantic parameters: ``n_objects``, ``categories``, throw speeds and scales. Visual
(nuisance): materials, lights, camera shell, floor texture. Per-job draws come from the seed;
the parameters set their ranges.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from generators.contract.domain import Domain
from generators.contract.generator import Generator
from generators.params import check_range
from generators.randomize.distractors import (
    DistractorParams,
    OptionalDistractorParams,
    add_flying_distractors,
)
from generators.randomize.sensor import SensorParams, apply_sensor
from generators.randomize.surfaces import (
    OptionalTextureParams,
    TextureParams,
    randomize_textures,
)
from generators.render.base import ClipParams
from generators.scene.catalog import DISTRACTOR, OBJECT_CATEGORIES, PYBULLET_DATA, default_catalog
from generators.scene.description import Camera, Light, Material, Scene, SceneObject
from generators.scene.geometry import (
    look_at,
    quat_wxyz,
    random_rotation,
    spherical_to_cartesian,
)
from generators.scene.placement import free_spot, kelvin_to_rgb, random_color

CATEGORIES = (*OBJECT_CATEGORIES, DISTRACTOR)
Category = Literal[CATEGORIES]  # type: ignore[valid-type]
FLOOR_SIZE = 6.0  # metres; the floor's top is the plane z = 0
FLOOR_TEXTURES = {"grid": "checker_grid.jpg", "checker": "checker_blue.png", "plain": None}


class FallingObjectsParams(
    ClipParams, OptionalTextureParams, OptionalDistractorParams, SensorParams
):
    # semantic
    n_objects: int = Field(8, ge=3, le=20, description="Objects thrown onto the floor.")
    categories: list[Category] = Field(
        list(CATEGORIES), min_length=1, description="Categories objects are drawn from."
    )
    scale_min: float = Field(1.0, ge=0.5, le=5, description="Smallest object scale (x catalog).")
    scale_max: float = Field(3.0, ge=0.5, le=5, description="Largest object scale (x catalog).")
    max_speed: float = Field(1.0, ge=0, le=5, description="Largest initial horizontal speed, m/s.")
    max_spin: float = Field(6.0, ge=0, le=30, description="Largest initial spin, rad/s.")
    spawn_half_width: float = Field(
        0.3, ge=0.1, le=1.5, description="Half-width of the square objects start over, m."
    )
    spawn_height: float = Field(0.6, ge=0.1, le=3, description="Lowest start height, m.")
    # visual / nuisance
    metallic_share: float = Field(0.3, ge=0, le=1, description="Share of metallic objects.")
    n_lights: int = Field(3, ge=1, le=4, description="Directional lights (tiny shows the first).")
    light_temperature_min: float = Field(
        3500.0, ge=2000, le=12000, description="Coolest light colour temperature, kelvin."
    )
    light_temperature_max: float = Field(
        8000.0, ge=2000, le=12000, description="Warmest light colour temperature, kelvin."
    )
    camera_radius_min: float = Field(
        1.0, ge=0.5, le=6, description="Inner radius of the camera's hemisphere shell, m."
    )
    camera_radius_max: float = Field(
        1.4, ge=0.5, le=6, description="Outer radius of the camera's hemisphere shell, m."
    )
    camera_elevation_min: float = Field(
        25.0, ge=5, le=89, description="Lowest camera elevation, deg."
    )
    camera_elevation_max: float = Field(
        65.0, ge=5, le=89, description="Highest camera elevation, deg."
    )
    fov: float = Field(40.0, ge=20, le=90, description="Vertical field of view, deg.")
    floor_texture: Literal[tuple(FLOOR_TEXTURES)] = Field(  # type: ignore[valid-type]
        "grid", description="Texture on the floor."
    )
    # frames (the rest as ClipParams has them)
    n_frames: int = Field(24, ge=1, le=48, description="Frames.")
    frame_rate: int = Field(12, ge=1, le=60, description="Frames per second.")

    @model_validator(mode="after")
    def _consistent(self) -> FallingObjectsParams:
        check_range(self, "scale", "light_temperature", "camera_radius", "camera_elevation")
        return self


class FallingObjectsGenerator(Generator):
    name = "falling_objects"
    version = "1.2.0"
    Params = FallingObjectsParams
    description = "MOVi-style: catalog objects thrown onto a floor, random materials and camera."
    domain = Domain(
        semantic=(
            "n_objects",
            "categories",
            "scale_min",
            "scale_max",
            "max_speed",
            "max_spin",
            "spawn_half_width",
            "spawn_height",
        ),
        nuisance=(
            "metallic_share",
            "n_lights",
            "light_temperature_min",
            "light_temperature_max",
            "camera_radius_min",
            "camera_radius_max",
            "camera_elevation_min",
            "camera_elevation_max",
            "fov",
            "floor_texture",
            "sensor_noise",
            *TextureParams.model_fields,
            *DistractorParams.model_fields,
        ),
        targets=("category", "visibility", "objects_per_frame", "height_bin"),
    )

    def build_scene(self, params: FallingObjectsParams, seed: int) -> Scene:
        # separate streams: visual parameters never change what is thrown where
        rng = np.random.default_rng([seed, 0])
        looks = np.random.default_rng([seed, 1])
        catalog = default_catalog()
        floor_texture = FLOOR_TEXTURES[params.floor_texture]
        unit = catalog["cube"].nominal_size
        objects = [
            SceneObject(
                name="floor",
                asset_id="cube",
                category="floor",
                position=(0.0, 0.0, -0.05),
                scale=(FLOOR_SIZE / unit, FLOOR_SIZE / unit, 0.1 / unit),
                static=True,
                labelled=False,
                friction=0.6,
                material=Material(
                    color=(0.8, 0.8, 0.8, 1.0),
                    texture=str(PYBULLET_DATA / floor_texture) if floor_texture else None,
                    texture_kind="library" if floor_texture else None,
                    roughness=0.9,
                ),
            )
        ]
        placed: list[tuple[np.ndarray, float]] = []
        distractors = [e.asset_id for e in catalog.category(DISTRACTOR)]
        for i in range(params.n_objects):
            category = str(rng.choice(params.categories))
            asset = str(rng.choice(distractors)) if category == DISTRACTOR else category
            entry = catalog[asset]
            scale = rng.uniform(params.scale_min, params.scale_max)
            radius = entry.nominal_size * scale / 2
            position = free_spot(placed, radius, params.spawn_half_width, params.spawn_height, rng)
            placed.append((position, radius))
            heading = rng.uniform(0, 2 * np.pi)
            speed = rng.uniform(0, params.max_speed)
            spin = rng.normal(size=3)
            spin *= rng.uniform(0, params.max_spin) / np.linalg.norm(spin)
            objects.append(
                SceneObject(
                    name=f"{category}_{i}",
                    asset_id=asset,
                    category=category,
                    position=tuple(position),
                    quaternion=quat_wxyz(random_rotation(rng)),
                    scale=(scale, scale, scale),
                    mass=entry.mass * scale**3,
                    linear_velocity=(speed * np.cos(heading), speed * np.sin(heading), 0.0),
                    angular_velocity=tuple(spin),
                    material=Material(
                        color=random_color(looks),
                        metallic=float(looks.uniform() < params.metallic_share),
                        roughness=float(looks.uniform(0.1, 0.9)),
                    ),
                )
            )
        lights = []
        for _ in range(params.n_lights):
            direction = spherical_to_cartesian(1.0, looks.uniform(0, 360), looks.uniform(30, 80))
            kelvin = looks.uniform(params.light_temperature_min, params.light_temperature_max)
            lights.append(
                Light(
                    direction=tuple(direction),
                    color=kelvin_to_rgb(kelvin),
                    intensity=float(looks.uniform(0.6, 1.0) * 1.5 / params.n_lights),
                    ambient=0.35,
                    diffuse=0.8,
                    specular=0.3,
                )
            )
        target = np.array([0.0, 0.0, 0.1])
        eye = target + spherical_to_cartesian(
            looks.uniform(params.camera_radius_min, params.camera_radius_max),
            looks.uniform(0, 360),
            looks.uniform(params.camera_elevation_min, params.camera_elevation_max),
        )
        camera = Camera(
            position=tuple(eye),
            quaternion=quat_wxyz(look_at(eye, target)),
            width=params.resolution,
            height=params.resolution,
            vertical_fov_deg=params.fov,
        )
        scene = Scene(
            objects=tuple(objects),
            lights=tuple(lights),
            camera=camera,
            seed=seed,
            **params.scene_timing(),
        )
        scene = add_flying_distractors(scene, params, seed, catalog, target)
        scene = randomize_textures(scene, params, seed)
        return apply_sensor(scene, params)
