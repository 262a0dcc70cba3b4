"""``tabletop``: a narrow domain. A fixed work cell (a table under one light, seen by a robot
camera) with objects of interest and distractors dropped onto it.

Semantic parameters (they change the answer): ``n_objects``, ``categories``, ``n_distractors``,
``drop_height``, ``spread``. Visual (nuisance) parameters: everything about light, table texture,
colour jitter, camera and sensor noise.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from generators.contract.domain import Domain
from generators.contract.generator import Generator
from generators.randomize.distractors import (
    DistractorParams,
    OptionalDistractorParams,
    add_flying_distractors,
)
from generators.randomize.sensor import SensorParams
from generators.randomize.surfaces import (
    OptionalTextureParams,
    TextureParams,
    randomize_textures,
)
from generators.render.base import ClipParams
from generators.scene.catalog import (
    DISTRACTOR,
    OBJECT_CATEGORIES,
    PYBULLET_DATA,
    ObjectCategory,
    default_catalog,
)
from generators.scene.description import Camera, CameraPose, Light, Material, Scene, SceneObject
from generators.scene.geometry import (
    look_at,
    quat_wxyz,
    random_rotation,
    spherical_to_cartesian,
)
from generators.scene.placement import free_spot, jitter_hue, kelvin_to_rgb

TABLE_SIZE = (1.2, 0.8, 0.05)  # metres; the top surface is the plane z = 0
# Images in pybullet_data used as random object textures (shown on meshes with UVs).
TEXTURE_LIBRARY = (
    "checker_blue.png",
    "checker_grid.jpg",
    "colors16.png",
    "tex256.png",
    "uvmap.png",
    "cube.png",
)
TABLE_TEXTURES = {
    "wood": "table/table.png",
    "checker": "checker_blue.png",
    "grid": "checker_grid.jpg",
    "uv": "uvmap.png",
    "plain": None,
}


class TabletopParams(ClipParams, OptionalTextureParams, OptionalDistractorParams, SensorParams):
    # semantic
    n_objects: int = Field(4, ge=1, le=20, description="Objects of interest dropped on the table.")
    categories: list[ObjectCategory] = Field(
        list(OBJECT_CATEGORIES),
        min_length=1,
        description="Categories the objects of interest are drawn from, uniformly.",
    )
    n_distractors: int = Field(
        2, ge=0, le=20, description="Procedural distractor objects (random_urdfs)."
    )
    drop_height: float = Field(
        0.15, ge=0.02, le=1.0, description="Height above the table of the lowest drop, m."
    )
    spread: float = Field(
        0.2, ge=0.05, le=0.35, description="Half-width of the square objects drop into, m."
    )
    # visual / nuisance
    light_azimuth: float = Field(45.0, ge=0, le=360, description="Light azimuth from +X, deg.")
    light_elevation: float = Field(
        60.0, ge=10, le=90, description="Light elevation above the table, deg."
    )
    light_intensity: float = Field(1.0, ge=0.2, le=2.0, description="Light colour multiplier.")
    light_temperature: float = Field(
        6500.0, ge=2000, le=12000, description="Light colour temperature, kelvin."
    )
    ambient: float = Field(0.5, ge=0, le=1, description="Ambient lighting coefficient.")
    diffuse: float = Field(0.6, ge=0, le=1, description="Diffuse lighting coefficient.")
    specular: float = Field(0.2, ge=0, le=1, description="Specular lighting coefficient.")
    shadows: bool = Field(True, description="Cast shadows.")
    table_texture: Literal[tuple(TABLE_TEXTURES)] = Field(  # type: ignore[valid-type]
        "wood", description="Texture on the table top."
    )
    object_texture: Literal["catalog", "random", "none"] = Field(
        "catalog",
        description="Object textures: the asset's own, a random one from the library, or none.",
    )
    color_jitter: float = Field(
        0.0, ge=0, le=1, description="Object hue jitter: 0 keeps catalog colours, 1 any hue."
    )
    camera_distance: float = Field(
        0.9, ge=0.3, le=2.5, description="Camera distance to the table centre, m."
    )
    camera_elevation: float = Field(
        55.0, ge=15, le=89, description="Camera elevation above the table, deg."
    )
    camera_azimuth: float = Field(0.0, ge=0, le=360, description="Camera azimuth from +X, deg.")
    fov: float = Field(45.0, ge=20, le=90, description="Vertical field of view, deg.")
    camera_motion: Literal["static", "orbit", "handheld"] = Field(
        "static",
        description="Between frames the camera stays, orbits the table centre, or shakes "
        "as if held by hand; moving makes each frame of a clip a new view.",
    )
    orbit_speed: float = Field(
        30.0, ge=-180, le=180, description="Orbit: degrees of azimuth per second."
    )
    shake: float = Field(
        1.5, ge=0, le=10, description="Handheld: amplitude of the camera's wobble, deg."
    )
    # frames (the rest as ClipParams has them)
    start_time: float = Field(
        1.0, ge=0, le=5, description="Simulated seconds before frame 0 (0 shows the drop)."
    )


class TabletopGenerator(Generator):
    name = "tabletop"
    version = "1.2.0"
    Params = TabletopParams
    description = "Objects of interest and distractors dropped on a table, seen by a robot camera."
    domain = Domain(
        semantic=("n_objects", "categories", "n_distractors", "drop_height", "spread"),
        nuisance=(
            "light_azimuth",
            "light_elevation",
            "light_intensity",
            "light_temperature",
            "ambient",
            "diffuse",
            "specular",
            "shadows",
            "table_texture",
            "object_texture",
            "color_jitter",
            "camera_distance",
            "camera_elevation",
            "camera_azimuth",
            "fov",
            "camera_motion",
            "orbit_speed",
            "shake",
            "sensor_noise",
            *TextureParams.model_fields,
            *DistractorParams.model_fields,
        ),
    )

    def build_scene(self, params: TabletopParams, seed: int) -> Scene:
        # separate streams: changing a visual parameter must not move a single object
        rng = np.random.default_rng([seed, 0])
        looks = np.random.default_rng([seed, 1])
        catalog = default_catalog()
        table = SceneObject(
            name="table",
            asset_id="table",
            category="table",
            position=(0.0, 0.0, -TABLE_SIZE[2] / 2),
            scale=tuple(float(v) for v in np.divide(TABLE_SIZE, catalog["table"].dimensions)),
            static=True,
            labelled=False,
            material=Material(
                color=(1, 1, 1, 1) if params.table_texture != "plain" else (0.6, 0.6, 0.6, 1),
                texture=_texture(TABLE_TEXTURES[params.table_texture]),
                texture_kind="library" if params.table_texture != "plain" else None,
            ),
        )
        distractor_ids = [e.asset_id for e in catalog.category(DISTRACTOR)]
        picks = [
            _pick(catalog, str(rng.choice(params.categories)), rng) for _ in range(params.n_objects)
        ] + [catalog[str(rng.choice(distractor_ids))] for _ in range(params.n_distractors)]
        placed: list[tuple[np.ndarray, float]] = []
        objects = [table]
        for i, entry in enumerate(picks):
            position = free_spot(
                placed, entry.nominal_size / 2, params.spread, params.drop_height, rng
            )
            placed.append((position, entry.nominal_size / 2))
            objects.append(
                SceneObject(
                    name=f"{entry.category}_{i}",
                    asset_id=entry.asset_id,
                    category=entry.category,
                    position=tuple(position),
                    quaternion=quat_wxyz(random_rotation(rng)),
                    mass=entry.mass,
                    material=_object_material(entry, params, looks),
                )
            )
        light_dir = spherical_to_cartesian(1.0, params.light_azimuth, params.light_elevation)
        light = Light(
            direction=tuple(light_dir),
            color=kelvin_to_rgb(params.light_temperature),
            intensity=params.light_intensity,
            ambient=params.ambient,
            diffuse=params.diffuse,
            specular=params.specular,
            shadows=params.shadows,
        )
        target = np.array([0.0, 0.0, 0.03])
        eye = target + spherical_to_cartesian(
            params.camera_distance, params.camera_azimuth, params.camera_elevation
        )
        camera = Camera(
            position=tuple(eye),
            quaternion=quat_wxyz(look_at(eye, target)),
            width=params.resolution,
            height=params.resolution,
            vertical_fov_deg=params.fov,
            noise_std=params.sensor_noise,
        )
        scene = Scene(
            objects=tuple(objects),
            lights=(light,),
            camera=camera,
            camera_path=_camera_path(params, target, looks),
            seed=seed,
            **params.scene_timing(),
        )
        scene = add_flying_distractors(scene, params, seed, catalog, target)
        return randomize_textures(scene, params, seed)


def _camera_path(
    params: TabletopParams, target: np.ndarray, rng: np.random.Generator
) -> tuple[CameraPose, ...]:
    """Per-frame camera poses for a moving camera (none for a static one). An orbit turns
    the azimuth at ``orbit_speed``; a handheld camera looks at a point that wanders by
    ``shake`` degrees, as a sum of slow sines with random phases (from the visual stream)."""
    if params.camera_motion == "static":
        return ()
    times = np.arange(params.n_frames) / params.frame_rate
    azimuths = params.camera_azimuth + (
        params.orbit_speed * times if params.camera_motion == "orbit" else 0 * times
    )
    wobble = np.zeros((params.n_frames, 3))
    if params.camera_motion == "handheld":
        phases = rng.uniform(0, 2 * np.pi, (3, 3))
        rates = np.array([0.7, 1.3, 2.9])  # Hz: a hand's slow sway and faster tremor
        waves = np.sin(2 * np.pi * rates * times[:, None, None] + phases[None]).sum(-1) / 3
        wobble = np.radians(params.shake) * params.camera_distance * waves
    poses = []
    for azimuth, offset in zip(azimuths, wobble, strict=True):
        eye = target + spherical_to_cartesian(
            params.camera_distance, float(azimuth), params.camera_elevation
        )
        view = target + offset  # a point off the target: the camera turns by about shake
        poses.append(CameraPose(position=tuple(eye), quaternion=quat_wxyz(look_at(eye, view))))
    return tuple(poses)


def _pick(catalog, category: str, rng: np.random.Generator):
    """An asset of the category (drawing only when it has several, as user categories may)."""
    entries = catalog.category(category)
    return entries[int(rng.integers(len(entries)))] if len(entries) > 1 else entries[0]


def _object_material(entry, params: TabletopParams, rng: np.random.Generator) -> Material:
    """The catalog's colour (hue jittered) and a texture as ``object_texture`` says."""
    color = jitter_hue(entry.color, params.color_jitter, rng)
    if params.object_texture == "random":
        texture = _texture(str(rng.choice(TEXTURE_LIBRARY)))
        return Material(color=color, texture=texture, texture_kind="library")
    if params.object_texture == "catalog" and entry.texture:
        return Material(color=color, texture=str(entry.texture), texture_kind="asset")
    return Material(color=color)


def _texture(relative: str | None) -> str | None:
    return str(PYBULLET_DATA / relative) if relative else None
