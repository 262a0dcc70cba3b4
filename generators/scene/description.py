"""The scene description: plain data a generator builds and the simulator and renderers read.

Kubric is the model: a generator only describes *what* is in the scene; ``physics`` decides how
it moves and a renderer how it looks. Everything here serialises to JSON (``job.json``).
Units and frames follow docs/conventions.md (metres, seconds, Z up, quaternions ``w, x, y, z``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from generators.scene.geometry import Quat, Vec3

RGBA = tuple[float, float, float, float]
RGB = tuple[float, float, float]


class _Plain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Material(_Plain):
    """Principled-BSDF style; PyBullet's renderer shows only ``color`` and ``texture`` (its
    description says so when a scene sets the others: ``render.base.renderer_notes``)."""

    color: RGBA = (1.0, 1.0, 1.0, 1.0)
    texture: str | None = Field(None, description="Image file mapped with the mesh's UVs.")
    texture_kind: str | None = Field(
        None,
        description="What the texture is, for the label tables: 'asset' (the catalog's own), "
        "'library', a procedural kind (checker, perlin...) or 'image'; None without one.",
    )
    roughness: float = Field(0.5, ge=0, le=1)
    metallic: float = Field(0.0, ge=0, le=1)
    specular: float = Field(0.5, ge=0, le=1)


class SceneObject(_Plain):
    """One rigid body. ``position`` is the body's reference point: the centre of its mesh's box."""

    name: str
    asset_id: str
    category: str
    position: Vec3
    quaternion: Quat = (1.0, 0.0, 0.0, 0.0)
    scale: Vec3 = (1.0, 1.0, 1.0)
    material: Material = Material()
    static: bool = Field(False, description="Fixed in place (work-cell furniture, floor).")
    labelled: bool = Field(True, description="Gets an instance id and label rows.")
    collides: bool = Field(
        True, description="Takes part in physics; a flying distractor is drawn, never touched."
    )
    mass: float = 0.1
    friction: float = 0.5
    rolling_friction: float = Field(
        0.002, description="Rolling and spinning resistance, so round things come to rest."
    )
    restitution: float = 0.2
    linear_velocity: Vec3 = (0.0, 0.0, 0.0)
    angular_velocity: Vec3 = (0.0, 0.0, 0.0)


class Light(_Plain):
    """A light. ``direction`` points from the scene towards the light. A ``sun`` is
    directional; a ``point`` or ``area`` light sits at ``position`` (an area light is a
    square of ``size`` metres facing the scene). PyBullet's renderer draws one directional
    light, the first (``render.base.renderer_notes`` records what it leaves out)."""

    direction: Vec3
    kind: Literal["sun", "point", "area"] = "sun"
    position: Vec3 | None = Field(None, description="Where a point or area light is, m.")
    size: float = Field(0.0, ge=0, description="An area light's side, m.")
    color: RGB = (1.0, 1.0, 1.0)
    intensity: float = 1.0
    ambient: float = 0.4
    diffuse: float = 0.6
    specular: float = 0.2
    shadows: bool = True


class Camera(_Plain):
    """A pinhole camera; pose is camera-to-world with OpenCV axes (x right, y down, z forward)."""

    position: Vec3
    quaternion: Quat
    width: int
    height: int
    vertical_fov_deg: float
    near: float = 0.01
    far: float = 10.0
    noise_std: float = Field(0.0, description="Gaussian sensor noise, in [0, 1] intensity units.")
    principal_offset: tuple[float, float] = Field(
        (0.0, 0.0),
        description="The principal point's offset from the image centre, px (x right, y down).",
    )

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        """``fx, fy, cx, cy`` in pixels (square pixels; the principal point at the image
        centre moved by ``principal_offset``)."""
        f = 0.5 * self.height / math.tan(math.radians(self.vertical_fov_deg) / 2)
        dx, dy = self.principal_offset
        return f, f, self.width / 2 + dx, self.height / 2 + dy


class CameraPose(_Plain):
    """Where the camera is at one frame: camera-to-world, OpenCV axes, as ``Camera``."""

    position: Vec3
    quaternion: Quat


class Scene(_Plain):
    objects: tuple[SceneObject, ...]
    lights: tuple[Light, ...]
    camera: Camera
    camera_path: tuple[CameraPose, ...] = Field(
        (), description="The camera's pose at each frame; empty: it stays at ``camera``'s."
    )
    background: Vec3 = Field(
        (0.05, 0.05, 0.05), description="Linear RGB of the world behind everything, in [0, 1]."
    )
    background_image: str | None = Field(
        None,
        description="An sRGB image shown behind everything instead of ``background``, "
        "stretched over the whole frame (as a camera-facing backdrop).",
    )
    randomization: dict[str, Any] = Field(
        default_factory=dict,
        description="What the domain randomizers drew for the job (generators.randomize): "
        "recorded in the job's description and, for the main draws, its label tables.",
    )
    frame_count: int = Field(1, ge=1)
    frame_rate: int = Field(24, ge=1)
    step_rate: int = Field(240, ge=1, description="Physics steps per second.")
    start_time: float = Field(0.0, ge=0, description="Simulated seconds before frame 0.")
    gravity: Vec3 = (0.0, 0.0, -9.81)
    seed: int = 0

    @model_validator(mode="after")
    def _steps_divide_frames(self) -> Scene:
        if self.step_rate % self.frame_rate:
            raise ValueError(
                f"step_rate ({self.step_rate}) must be a multiple of frame_rate ({self.frame_rate})"
            )
        if self.camera_path and len(self.camera_path) != self.frame_count:
            raise ValueError(
                f"camera_path has {len(self.camera_path)} poses for {self.frame_count} frames"
            )
        return self

    def camera_at(self, frame: int) -> Camera:
        """The camera as it is at ``frame``: its path's pose there, if it moves."""
        if not self.camera_path:
            return self.camera
        pose = self.camera_path[frame]
        return self.camera.model_copy(update=pose.model_dump())

    @property
    def labelled_objects(self) -> list[SceneObject]:
        """Objects that get instance ids 1..N, in this order."""
        return [o for o in self.objects if o.labelled]

    def frame_time(self, frame: int) -> float:
        return self.start_time + frame / self.frame_rate
