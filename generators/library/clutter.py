"""``clutter``: the classic domain-randomized scene (Tobin et al. 2017, Tremblay et al. 2018).
Objects of interest float around a target among flying distractors, every surface wears a
random texture and material, in front of a random background, under random lights, seen by
a random camera: a detector trained on it must learn the objects, not the scene.

Semantic parameters: ``n_objects``, ``categories``, ``spread``. Everything else is a
randomizer's (``generators.randomize``): each draws from its own stream of the seed, so the
object layout stays the same when any randomizer's range changes.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from generators.contract.domain import Domain
from generators.contract.generator import Generator
from generators.randomize.background import BackgroundParams, randomize_background
from generators.randomize.camera import CameraParams, randomize_camera
from generators.randomize.distractors import DistractorParams, add_flying_distractors
from generators.randomize.lights import LightParams, randomize_lights
from generators.randomize.sensor import SensorParams, apply_sensor
from generators.randomize.streams import stream
from generators.randomize.surfaces import (
    MaterialParams,
    TextureParams,
    randomize_materials,
    randomize_textures,
)
from generators.render.base import ClipParams
from generators.scene.catalog import (
    OBJECT_CATEGORIES,
    ObjectCategory,
    default_catalog,
)
from generators.scene.description import Camera, Scene, SceneObject
from generators.scene.geometry import quat_wxyz, random_rotation

TARGET = (0.0, 0.0, 0.0)  # the point the objects float around and the camera looks at

_RANDOMIZED = (
    TextureParams,
    MaterialParams,
    LightParams,
    CameraParams,
    BackgroundParams,
    DistractorParams,
    SensorParams,
)


class ClutterParams(ClipParams, *_RANDOMIZED):  # type: ignore[misc]
    n_objects: int = Field(4, ge=1, le=20, description="Objects of interest in the scene.")
    categories: list[ObjectCategory] = Field(
        list(OBJECT_CATEGORIES),
        min_length=1,
        description="Categories the objects of interest are drawn from, uniformly.",
    )
    spread: float = Field(
        0.12, ge=0.02, le=0.5, description="Radius of the ball the objects float in, m."
    )


class ClutterGenerator(Generator):
    name = "clutter"
    version = "1.0.0"
    Params = ClutterParams
    description = (
        "Domain-randomized clutter: objects of interest among flying distractors, random "
        "textures, materials, lights, camera and background."
    )
    domain = Domain(
        semantic=("n_objects", "categories", "spread"),
        nuisance=tuple(name for model in _RANDOMIZED for name in model.model_fields),
        drawn=("background_kind", "light_count"),
    )

    def build_scene(self, params: ClutterParams, seed: int) -> Scene:
        catalog = default_catalog()
        layout = stream(seed, "layout")
        objects = []
        for i in range(params.n_objects):
            category = str(layout.choice(params.categories))
            entries = catalog.category(category)
            entry = entries[int(layout.integers(len(entries)))]
            direction = layout.normal(size=3)
            radius = params.spread * layout.uniform() ** (1 / 3)  # uniform in the ball
            position = np.add(TARGET, radius * direction / np.linalg.norm(direction))
            objects.append(
                SceneObject(
                    name=f"{category}_{i}",
                    asset_id=entry.asset_id,
                    category=category,
                    position=tuple(float(v) for v in position),
                    quaternion=quat_wxyz(random_rotation(layout)),
                    static=True,  # held in the air: no physics moves them
                )
            )
        scene = Scene(
            objects=tuple(objects),
            lights=(),
            camera=Camera(
                position=(1.0, 0.0, 0.0),
                quaternion=(1.0, 0.0, 0.0, 0.0),
                width=params.resolution,
                height=params.resolution,
                vertical_fov_deg=45.0,
            ),
            seed=seed,
            **params.scene_timing(),
        )
        scene = randomize_camera(scene, params, seed, TARGET)
        scene = add_flying_distractors(scene, params, seed, catalog, TARGET)
        scene = randomize_textures(scene, params, seed)
        scene = randomize_materials(scene, params, seed, params.texture_targets)
        scene = randomize_lights(scene, params, seed, TARGET)
        scene = randomize_background(scene, params, seed)
        return apply_sensor(scene, params)
