"""Shared fixtures: small real jobs and hand-made scenes rendered with the fast renderer."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
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


ISOLATED = ("VARIO_CACHE_DIR", "VARIO_DATA_DIR", "DAGSTER_HOME", "VARIO_CATALOG_DIR")
_ROOT = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Every test process gets its own data folder, Dagster home and catalog cache (primitives
    are generated into it, as on a fresh machine), set before any test module is imported, so
    that definitions built at import see them too: nothing reads or writes the checkout's
    ``data/`` or ``.dagster_home/``, and no user mesh there leaks into a test."""
    root = Path(tempfile.mkdtemp(prefix="vario-tests-"))
    config.stash[_ROOT] = root
    for variable in ISOLATED:
        folder = root / variable.lower()
        folder.mkdir()
        os.environ[variable] = str(folder)
    os.environ.pop("VARIO_DAGSTER_POSTGRES_URL", None)  # SQLite unless a test asks for Postgres
    default_catalog.cache_clear()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _ROOT in config.stash:
        shutil.rmtree(config.stash[_ROOT], ignore_errors=True)


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


def build_batch(tmp_path: Path, spec: dict, *, render: bool = True):
    """A real batch: through the inbox sensor and every shard's materialisation. Returns its
    ``StorageResource`` (data folder ``tmp_path / <name>``)."""
    import dagster as dg
    import yaml

    from assets_defs.batches import shard
    from assets_defs.storage import StorageResource
    from dagster_project.local_run import evaluate_sensor
    from dagster_project.sensors import inbox_sensor

    storage = StorageResource(root=str(tmp_path / spec["name"]))
    storage.store.inbox.mkdir(parents=True)
    (storage.store.inbox / "spec.yaml").write_text(yaml.safe_dump(spec))
    with dg.instance_for_test() as instance:
        result = evaluate_sensor(inbox_sensor, instance, storage)
        for request in result.run_requests if render else []:
            if request.job_name == "render_shard_job":
                assert dg.materialize(
                    [shard],
                    partition_key=request.partition_key,
                    instance=instance,
                    resources={"storage": storage},
                ).success
    return storage


def running(pid: int) -> bool:
    """Whether process ``pid`` is alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
