"""Shared fixtures: small real jobs and hand-made scenes rendered with the fast renderer."""

from __future__ import annotations

import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dagster_project import wheel_tags
from generators.labels.frame_labels import frame_labels
from generators.library.tabletop import TabletopGenerator
from generators.render.base import FrameImages
from generators.render.tiny import TinyRenderer
from generators.scene.catalog import default_catalog
from generators.scene.description import Camera, Light, Scene, SceneObject
from generators.scene.geometry import look_at, quat_wxyz
from generators.sim.physics import simulate

SMALL = {"resolution": 96, "n_objects": 5, "n_distractors": 2, "n_frames": 3}


wheel_tags.repair()  # a fresh `uv sync` installs bpy with a tag that makes uv reinstall it

# Test-only generators (tests/plugins), found through the entry-point group like any plugin;
# on PYTHONPATH too, so worker processes and CLI subprocesses find them.
PLUGINS = Path(__file__).resolve().parent / "plugins"
sys.path.insert(0, str(PLUGINS))
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])
)


@pytest.fixture(autouse=True, scope="session")
def _environment(tmp_path_factory):
    """Every test session gets its own data folder, Dagster home and catalog cache (primitives
    are generated into it, as on a fresh machine): nothing reads or writes the checkout's
    ``data/`` or ``.dagster_home/``, and no user mesh there leaks into a test."""
    mp = pytest.MonkeyPatch()
    for variable, folder in (
        ("VARIO_CACHE_DIR", "cache"),
        ("VARIO_DATA_DIR", "data"),
        ("DAGSTER_HOME", "dagster_home"),
    ):
        mp.setenv(variable, str(tmp_path_factory.mktemp(folder)))
    default_catalog.cache_clear()
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tabletop_job(tmp_path_factory):
    gen = TabletopGenerator()
    params = gen.Params(**SMALL, start_time=0.1)
    return gen.run(params, 11, tmp_path_factory.mktemp("job"))


def read_member(archive: Path, name: str) -> bytes:
    with zipfile.ZipFile(archive) as z:
        return z.read(name)


@dataclass
class Rendered:
    scene: Scene
    images: FrameImages
    objects: list[dict]


def top_down_scene(objects: list[SceneObject], size: int = 96, height: float = 1.0) -> Scene:
    eye = np.array([0.0, 0.0, height])
    camera = Camera(
        position=tuple(eye),
        quaternion=quat_wxyz(look_at(eye, np.zeros(3))),
        width=size,
        height=size,
        vertical_fov_deg=30.0,
    )
    light = Light(direction=(0.3, 0.3, 1.0), shadows=False)
    return Scene(objects=tuple(objects), lights=(light,), camera=camera)


def cube(name: str, position, size: float = 1.0) -> SceneObject:
    """A static catalog cube (5 cm times ``size``) that stays where it is put."""
    return SceneObject(
        name=name,
        asset_id="cube",
        category="cube",
        position=position,
        scale=(size, size, size),
        static=True,
    )


def render_still(scene: Scene) -> Rendered:
    catalog = default_catalog()
    trajectory = simulate(scene, catalog)
    with TinyRenderer(scene, catalog, trajectory) as renderer:
        images = renderer.render_frame(0)
    _, objects = frame_labels(scene, catalog, trajectory, 0, images)
    return Rendered(scene, images, objects)
