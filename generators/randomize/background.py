"""The background: what the camera sees where no surface is, drawn from the stream
``background``: a plain colour, a procedural pattern, or an image from a folder (a real
dataset's images, say). Every renderer shows it the same way (``render.base.backdrop``)."""

from __future__ import annotations

import colorsys
from dataclasses import asdict
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from generators.params import check_range
from generators.randomize.streams import recorded, stream
from generators.randomize.surfaces import ImageFolder, folder_images
from generators.randomize.textures import TEXTURE_KINDS, draw_texture, texture_file
from generators.scene.description import Scene

BackgroundKind = Literal[("plain", *TEXTURE_KINDS)]  # type: ignore[valid-type]


class BackgroundParams(BaseModel):
    background_kinds: list[BackgroundKind] = Field(
        ["plain", "checker", "gradient", "perlin", "voronoi", "noise"],
        min_length=1,
        description="Background kinds drawn from, uniformly: a plain colour, a procedural "
        "pattern, or 'image' from background_folder.",
    )
    background_folder: ImageFolder = Field(
        None, description="Folder of PNG or JPEG images for the 'image' background kind."
    )
    background_saturation_max: float = Field(
        0.8, ge=0, le=1, description="Most saturation of a plain background (0: greys only)."
    )
    background_value_min: float = Field(
        0.15, ge=0, le=1, description="Darkest plain background (HSV value)."
    )
    background_value_max: float = Field(
        0.9, ge=0, le=1, description="Brightest plain background (HSV value)."
    )

    @model_validator(mode="after")
    def _image_needs_folder(self) -> BackgroundParams:
        check_range(self, "background_value")
        if "image" in self.background_kinds and self.background_folder is None:
            raise ValueError("background_kinds has 'image': background_folder must name a folder")
        return self


def randomize_background(scene: Scene, params: BackgroundParams, seed: int) -> Scene:
    """A drawn background: a colour in ``Scene.background`` or an image file."""
    rng = stream(seed, "background")
    kind = str(rng.choice(params.background_kinds))
    hue = float(rng.uniform())
    saturation = float(rng.uniform(0.0, params.background_saturation_max))
    value = float(rng.uniform(params.background_value_min, params.background_value_max))
    images = folder_images(params.background_folder)
    # drawn for every kind, so the stream is used alike whatever the kind
    draw = draw_texture(
        rng, [kind if kind != "plain" else "flat"], scale=(2.0, 16.0), images=images
    )
    if kind == "plain":
        color = colorsys.hsv_to_rgb(hue, saturation, value)
        drawn = {"kind": kind, "color": [float(c) for c in color]}
        update = {"background": tuple(float(c) for c in color), "background_image": None}
    else:
        size = max(scene.camera.width, scene.camera.height)
        drawn = {"kind": kind, **asdict(draw)}
        update = {"background_image": str(texture_file(draw, size))}
    return recorded(scene, "background", drawn, **update)
