"""What every renderer returns and the render settings every generator shares.

A renderer reads the scene description and a simulated ``Trajectory``; it never steps
physics, so a preview (``tiny``) and a final (``cycles``) job of the same seed show the same
motion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from pydantic import Field, model_validator

from generators.params import GeneratorParams
from generators.scene.description import Material, Scene

# Renderers that run in a worker process of their own (Blender keeps memory and can crash).
ISOLATED_RENDERERS = frozenset({"cycles"})


@dataclass(frozen=True)
class FrameImages:
    rgb: np.ndarray  # (H, W, 3) uint8
    instances: np.ndarray  # (H, W) uint16; 0 background/unlabelled, i for labelled object i
    depth: np.ndarray  # (H, W) float32 metres along the optical axis; inf where nothing is hit
    # Dense maps only some renderers give: "normals" (H, W, 3) float32 world-frame unit
    # vectors; "object_coordinates" (H, W, 3) float32 in [0, 1] of the object's box;
    # "forward_flow" / "backward_flow" (H, W, 2) float32 pixels (dx, dy).
    dense: dict[str, np.ndarray] = field(default_factory=dict)


class Renderer(Protocol):
    backend: str  # what draws the pixels on this machine, e.g. "pybullet-tiny", "cycles-gpu"

    def render_frame(self, frame: int) -> FrameImages: ...

    def close(self) -> None: ...


def backdrop(scene: Scene) -> np.ndarray | None:
    """The scene's background image at the camera's size (uint8 sRGB), or None without one.
    Every renderer shows it where no surface is hit, as a camera-facing backdrop at infinity
    (unlit, unblurred): the same pixels whatever draws the scene."""
    if scene.background_image is None:
        return None
    import cv2

    image = cv2.imread(scene.background_image, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"background image {scene.background_image}: not readable")
    size = (scene.camera.width, scene.camera.height)
    return np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA)[..., ::-1])


def renderer_notes(scene: Scene, backend: str) -> list[str]:
    """What the renderer ``backend`` leaves out of ``scene``: the job's description records
    it, so no setting is dropped silently. PyBullet's renderers draw one directional light
    and a material's colour and texture only; Cycles draws everything the scene says."""
    if not backend.startswith("pybullet"):
        return []
    notes = []
    if len(scene.lights) > 1:
        notes.append(f"lights: only the first of {len(scene.lights)} is drawn")
    if scene.lights and scene.lights[0].kind != "sun":
        notes.append(f"lights: the first ({scene.lights[0].kind}) is drawn as a sun")
    default = Material()
    for name in ("roughness", "metallic", "specular"):
        if any(getattr(o.material, name) != getattr(default, name) for o in scene.objects):
            notes.append(f"materials: {name} is not drawn")
    return notes


class RenderParams(GeneratorParams):
    """Render settings, shared by every generator's parameter model."""

    renderer: Literal["tiny", "cycles"] = Field(
        "tiny",
        description="tiny: PyBullet's fast renderer (previews, scale); cycles: Kubric and "
        "Blender Cycles (photoreal, adds normals, object coordinates and optical flow).",
    )
    fast_backend: Literal["tiny", "egl"] = Field(
        "tiny",
        description="The fast renderer's backend: tiny, PyBullet's CPU TinyRenderer (the same "
        "pixels on every machine); egl, hardware OpenGL through EGL (fails if EGL cannot "
        "load, never falls back). A parameter, so the job id records it.",
    )
    samples: int = Field(64, ge=1, le=4096, description="Cycles samples per pixel.")
    denoise: bool = Field(False, description="Cycles: OpenImageDenoise on the RGB.")
    motion_blur: float = Field(
        0.0, ge=0, le=1, description="Cycles: vector motion blur, as a share of a frame; 0 off."
    )
    device: Literal["cpu", "gpu"] = Field(
        "cpu", description="Cycles device; gpu uses OptiX or CUDA and fails if there is none."
    )
    threads: int = Field(0, ge=0, le=256, description="Cycles CPU threads; 0 uses every core.")
    tile_size: int = Field(2048, ge=8, le=4096, description="Cycles tile size, px.")


class ClipParams(RenderParams):
    """Frames, physics rate and image size, shared by generators that simulate a clip.
    A generator overrides a field only to change its default or limits."""

    n_frames: int = Field(1, ge=1, le=240, description="Frames: 1 is a still, more a clip.")
    frame_rate: int = Field(24, ge=1, le=60, description="Frames per second.")
    step_rate: int = Field(
        240, ge=60, le=1200, description="Physics steps per second (a multiple of frame_rate)."
    )
    start_time: float = Field(0.0, ge=0, le=5, description="Simulated seconds before frame 0.")
    resolution: int = Field(
        256, ge=64, le=1024, multiple_of=2, description="Image width and height, px (even)."
    )

    @model_validator(mode="after")
    def _steps_divide_frames(self) -> ClipParams:
        if self.step_rate % self.frame_rate:
            raise ValueError(
                f"step_rate={self.step_rate} must be a multiple of frame_rate={self.frame_rate}"
            )
        return self

    def scene_timing(self) -> dict:
        """The ``Scene`` fields these parameters set."""
        return {
            "frame_count": self.n_frames,
            "frame_rate": self.frame_rate,
            "step_rate": self.step_rate,
            "start_time": self.start_time,
        }
