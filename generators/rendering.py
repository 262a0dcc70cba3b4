"""What every renderer returns, the render settings every generator shares, and the choice
of renderer. A renderer reads the scene description and a simulated ``Trajectory``; it never
steps physics, so a preview (``tiny``) and a final (``cycles``) job of the same seed show
the same motion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from pydantic import Field

from generators.params import GeneratorParams

if TYPE_CHECKING:
    from generators.catalog import Catalog
    from generators.physics import Trajectory
    from generators.scene import Scene

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
    def render_frame(self, frame: int) -> FrameImages: ...

    def close(self) -> None: ...


class RenderParams(GeneratorParams):
    """Render settings, shared by every generator's parameter model."""

    renderer: Literal["tiny", "cycles"] = Field(
        "tiny",
        description="tiny: PyBullet's fast renderer (previews, scale); cycles: Kubric and "
        "Blender Cycles (photoreal, adds normals, object coordinates and optical flow).",
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


def make_renderer(
    scene: Scene, catalog: Catalog, trajectory: Trajectory, params: GeneratorParams
) -> Renderer:
    """The renderer the parameters ask for (``tiny`` when they have no ``renderer``)."""
    if getattr(params, "renderer", "tiny") == "cycles":
        from generators.render_cycles import CyclesRenderer  # needs bpy and kubric

        return CyclesRenderer(scene, catalog, trajectory, params)
    from generators.render_tiny import TinyRenderer

    return TinyRenderer(scene, catalog, trajectory)
