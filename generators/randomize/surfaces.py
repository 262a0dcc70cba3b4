"""Textures and materials on a scene's objects, distractors and surfaces.

An object's role decides whether it is randomized: objects of interest are the labelled
ones, distractors those of the ``distractor`` category, surfaces the rest (a table, a
floor). Each object draws from its own stream (``textures/<name>``, ``materials/<name>``),
so adding a distractor leaves every other object's looks unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator

from generators.params import check_range
from generators.randomize.streams import recorded, stream
from generators.randomize.textures import TEXTURE_KINDS, draw_texture, image_folder, texture_file
from generators.scene.catalog import DISTRACTOR
from generators.scene.description import Scene, SceneObject
from generators.settings import settings

TextureKind = Literal[TEXTURE_KINDS]  # type: ignore[valid-type]
Role = Literal["objects", "distractors", "surfaces"]
ROLES: tuple[Role, ...] = ("objects", "distractors", "surfaces")
TEXTURE_SIZE = 128  # pixels of a drawn texture file's side: a small object needs no more


def folder_images(folder: str | None) -> tuple[Path, ...]:
    """The checked images of ``folder`` (``textures.image_folder``), read again only when
    the folder changes (its modification time), not for every job."""
    if folder is None:
        return ()
    path = Path(folder)
    stamp = path.stat().st_mtime_ns if path.is_dir() else 0
    return _folder_images(str(path.resolve()), stamp)


@functools.lru_cache(maxsize=16)
def _folder_images(folder: str, stamp: int) -> tuple[Path, ...]:
    return image_folder(folder)


def _checked_folder(folder: str | None) -> str | None:
    folder_images(folder)  # an empty, missing or unreadable folder is a parameter error
    return folder


MAX_PATH = 1024  # characters of a folder's path
ImageFolder = Annotated[
    Annotated[str, StringConstraints(max_length=MAX_PATH)] | None, AfterValidator(_checked_folder)
]


class TextureParams(BaseModel):
    texture_share: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of objects, distractors and surfaces given a drawn "
        "texture; the others keep their own look.",
    )
    texture_kinds: list[TextureKind] = Field(
        ["flat", "checker", "stripes", "gradient", "noise", "perlin", "voronoi"],
        min_length=1,
        description="Texture kinds drawn from, uniformly; 'image' takes images from "
        "texture_folder.",
    )
    texture_scale_min: float = Field(
        2.0, ge=1, le=64, description="Fewest pattern cells across a texture."
    )
    texture_scale_max: float = Field(
        12.0, ge=1, le=64, description="Most pattern cells across a texture."
    )
    texture_rotation_max: float = Field(
        180.0, ge=0, le=180, description="Largest pattern rotation, deg."
    )
    texture_folder: ImageFolder = Field(
        None, description="Folder of PNG or JPEG images for the 'image' texture kind."
    )
    texture_targets: list[Role] = Field(
        list(ROLES),
        description="Which objects get drawn textures and materials.",
    )

    @model_validator(mode="after")
    def _texture_ranges(self) -> TextureParams:
        check_range(self, "texture_scale")
        if "image" in self.texture_kinds and self.texture_folder is None:
            raise ValueError("texture_kinds has 'image': texture_folder must name a folder")
        return self


class OptionalTextureParams(TextureParams):
    """``TextureParams`` off unless asked for: for a generator whose scenes have looks of
    their own."""

    texture_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of objects, distractors and surfaces given a drawn "
        "texture (texture_kinds); 0 keeps the generator's own looks.",
    )


class MaterialParams(BaseModel):
    roughness_min: float = Field(0.2, ge=0, le=1, description="Least material roughness.")
    roughness_max: float = Field(0.9, ge=0, le=1, description="Most material roughness.")
    metallic_min: float = Field(0.0, ge=0, le=1, description="Least metallic.")
    metallic_max: float = Field(0.5, ge=0, le=1, description="Most metallic.")
    specular_min: float = Field(0.2, ge=0, le=1, description="Least specular level.")
    specular_max: float = Field(0.8, ge=0, le=1, description="Most specular level.")

    @model_validator(mode="after")
    def _material_ranges(self) -> MaterialParams:
        check_range(self, "roughness", "metallic", "specular")
        return self


def role(obj: SceneObject) -> Role:
    """What an object is to the randomizers: a distractor (its category), an object of
    interest (labelled), or a surface (the rest: a table, a floor)."""
    if obj.category == DISTRACTOR:
        return "distractors"
    return "objects" if obj.labelled else "surfaces"


def randomize_textures(scene: Scene, params: TextureParams, seed: int) -> Scene:
    """Each targeted object, with probability ``texture_share``, gets a drawn texture
    (its colour then white, so the texture shows as drawn)."""
    images = folder_images(params.texture_folder)
    cache = settings().cache_dir  # read once: the settings come from the environment
    drawn, objects = {}, []
    for obj in scene.objects:
        rng = stream(seed, "textures", obj.name)
        chosen = rng.uniform() < params.texture_share  # drawn whatever the role: same stream
        draw = draw_texture(
            rng,
            params.texture_kinds,
            scale=(params.texture_scale_min, params.texture_scale_max),
            rotation=(0.0, params.texture_rotation_max),
            images=images,
        )
        if chosen and role(obj) in params.texture_targets:
            material = obj.material.model_copy(
                update={
                    "color": (1.0, 1.0, 1.0, obj.material.color[3]),
                    "texture": str(texture_file(draw, TEXTURE_SIZE, cache)),
                    "texture_kind": draw.kind,
                }
            )
            obj = obj.model_copy(update={"material": material})
            drawn[obj.name] = asdict(draw)
        objects.append(obj)
    return recorded(scene, "textures", drawn, objects=tuple(objects))


def randomize_materials(
    scene: Scene, params: MaterialParams, seed: int, targets: Sequence[Role] = ROLES
) -> Scene:
    """Roughness, metallic and specular of each object of the ``targets`` roles, uniform
    in their ranges."""
    drawn, objects = {}, []
    for obj in scene.objects:
        rng = stream(seed, "materials", obj.name)
        values = {
            "roughness": float(rng.uniform(params.roughness_min, params.roughness_max)),
            "metallic": float(rng.uniform(params.metallic_min, params.metallic_max)),
            "specular": float(rng.uniform(params.specular_min, params.specular_max)),
        }
        if role(obj) in targets:
            material = obj.material.model_copy(update=values)
            obj = obj.model_copy(update={"material": material})
            drawn[obj.name] = values
        objects.append(obj)
    return recorded(scene, "materials", drawn, objects=tuple(objects))
