"""Flying distractors: shapes from the catalog's ``distractor`` category held in the air in
the camera's view, between the camera and the target, unlabelled (they occlude the objects
of interest and take none of their labels). Each is drawn in the camera's frame (image
position, depth share, size, rotation) from the stream ``distractors/<i>``; the camera
decides where that is in the world, so the draws stay the same when the camera moves."""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, Field, model_validator

from generators.params import check_range
from generators.randomize.streams import recorded, stream
from generators.scene.catalog import DISTRACTOR, Catalog
from generators.scene.description import Scene, SceneObject
from generators.scene.geometry import Vec3, quat_wxyz, random_rotation, rotation

MAX_DISTRACTORS = 50


class DistractorParams(BaseModel):
    flying_distractors_min: int = Field(
        0, ge=0, le=MAX_DISTRACTORS, description="Fewest flying distractors."
    )
    flying_distractors_max: int = Field(
        8, ge=0, le=MAX_DISTRACTORS, description="Most flying distractors."
    )
    distractor_size_min: float = Field(
        0.02, ge=0.005, le=0.5, description="Smallest distractor, m across."
    )
    distractor_size_max: float = Field(
        0.08, ge=0.005, le=0.5, description="Largest distractor, m across."
    )

    @model_validator(mode="after")
    def _distractor_ranges(self) -> DistractorParams:
        check_range(self, "flying_distractors", "distractor_size")
        return self


class OptionalDistractorParams(DistractorParams):
    """``DistractorParams`` off unless asked for: for a generator with scenes of its own."""

    flying_distractors_max: int = Field(
        0, ge=0, le=MAX_DISTRACTORS, description="Most flying distractors (0: none)."
    )


def add_flying_distractors(
    scene: Scene,
    params: DistractorParams,
    seed: int,
    catalog: Catalog,
    target: Vec3 = (0.0, 0.0, 0.0),
) -> Scene:
    """Distractors added in front of the camera, at 25-85% of its distance to ``target``."""
    lo, hi = params.flying_distractors_min, params.flying_distractors_max
    count = int(stream(seed, "distractors").integers(lo, hi + 1))
    entries = catalog.category(DISTRACTOR)
    cam = scene.camera
    cam_rot = rotation(cam.quaternion)
    distance = float(np.linalg.norm(np.subtract(target, cam.position)))
    half_v = math.tan(math.radians(cam.vertical_fov_deg) / 2)
    half_u = half_v * cam.width / cam.height
    added, drawn = [], []
    for i in range(count):
        rng = stream(seed, "distractors", str(i))
        values = {
            "asset": int(rng.integers(len(entries))),
            "u": float(rng.uniform(-0.9, 0.9)),  # share of the half-width, right of centre
            "v": float(rng.uniform(-0.9, 0.9)),  # share of the half-height, below centre
            "depth": float(rng.uniform(0.25, 0.85)),  # share of the distance to the target
            "size": float(rng.uniform(params.distractor_size_min, params.distractor_size_max)),
            "rotation": quat_wxyz(random_rotation(rng)),
        }
        entry = entries[values["asset"]]
        depth = values["depth"] * distance
        in_camera = np.array([values["u"] * half_u * depth, values["v"] * half_v * depth, depth])
        position = np.asarray(cam.position) + cam_rot.apply(in_camera)
        factor = values["size"] / entry.nominal_size
        added.append(
            SceneObject(
                name=f"flying_distractor_{i}",
                asset_id=entry.asset_id,
                category=DISTRACTOR,
                position=tuple(float(v) for v in position),
                quaternion=values["rotation"],
                scale=(factor, factor, factor),
                static=True,
                labelled=False,
                collides=False,  # held in the air: nothing falls onto or bounces off it
            )
        )
        drawn.append({**values, "asset": entry.asset_id})
    return recorded(scene, "distractors", drawn, objects=(*scene.objects, *added))
