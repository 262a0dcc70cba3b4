"""The choice of renderer: the one module that knows every renderer, so the renderers
themselves depend only on ``generators.render.base``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from generators.render.base import Renderer

if TYPE_CHECKING:
    from generators.params import GeneratorParams
    from generators.scene.catalog import Catalog
    from generators.scene.description import Scene
    from generators.sim.physics import Trajectory


def make_renderer(
    scene: Scene, catalog: Catalog, trajectory: Trajectory, params: GeneratorParams
) -> Renderer:
    """The renderer the parameters ask for (``tiny`` when they have no ``renderer``), the fast
    one with the backend they ask for (``tiny`` when they have no ``fast_backend``)."""
    if getattr(params, "renderer", "tiny") == "cycles":
        from generators.render.cycles import CyclesRenderer  # needs bpy and kubric

        return CyclesRenderer(scene, catalog, trajectory, params)
    from generators.render.tiny import TinyRenderer

    return TinyRenderer(scene, catalog, trajectory, backend=getattr(params, "fast_backend", "tiny"))
