"""Building PyBullet bodies from scene objects; shared by the simulator and the fast renderer."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

import numpy as np

from generators.scene.catalog import AssetEntry, Catalog
from generators.scene.description import SceneObject
from generators.scene.geometry import to_pybullet_quat


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: C code's fprintf bypasses ``sys.stderr``, and C's
    own buffers are flushed before the descriptor is restored. Exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_pybullet() -> ModuleType:
    """pybullet prints its build time to stderr when imported; users see progress, not that."""
    if "pybullet" in sys.modules:
        return sys.modules["pybullet"]
    with _stderr_silenced():
        return importlib.import_module("pybullet")


pb = _import_pybullet()


def connect() -> int:
    """A headless client; deterministic contact ordering so equal seeds give equal trajectories."""
    client = pb.connect(pb.DIRECT)
    pb.setPhysicsEngineParameter(deterministicOverlappingPairs=1, physicsClientId=client)
    return client


def mesh_scale(obj: SceneObject, entry: AssetEntry) -> np.ndarray:
    """Scale from the asset's mesh units to metres for this object."""
    return entry.scale * np.asarray(obj.scale)


def add_body(
    client: int, obj: SceneObject, catalog: Catalog, *, visual: bool, collision: bool
) -> int:
    """A body whose frame is the object's reference point (the centre of its mesh's box).

    The simulator builds collision-only bodies and the renderer visual-only, massless ones.
    """
    entry = catalog[obj.asset_id]
    scale = mesh_scale(obj, entry)
    offset = (-entry.mesh.center * scale).tolist()
    shape = collision_shape = -1
    if visual:
        shape = pb.createVisualShape(
            pb.GEOM_MESH,
            fileName=str(entry.render_mesh),
            meshScale=scale.tolist(),
            rgbaColor=list(obj.material.color),
            visualFramePosition=offset,
            physicsClientId=client,
        )
    if collision:
        collision_shape = pb.createCollisionShape(
            pb.GEOM_MESH,
            fileName=str(entry.collision_mesh),
            meshScale=scale.tolist(),
            collisionFramePosition=offset,
            physicsClientId=client,
        )
    body = pb.createMultiBody(
        baseMass=0.0 if (obj.static or not collision) else obj.mass,
        baseCollisionShapeIndex=collision_shape,
        baseVisualShapeIndex=shape,
        basePosition=list(obj.position),
        baseOrientation=list(to_pybullet_quat(obj.quaternion)),
        physicsClientId=client,
    )
    if collision:
        pb.changeDynamics(
            body,
            -1,
            lateralFriction=obj.friction,
            rollingFriction=obj.rolling_friction,
            spinningFriction=obj.rolling_friction,
            restitution=obj.restitution,
            physicsClientId=client,
        )
        pb.resetBaseVelocity(
            body, list(obj.linear_velocity), list(obj.angular_velocity), physicsClientId=client
        )
    return body


def apply_texture(client: int, body: int, path: str, loaded: dict[str, int]) -> None:
    """Map an image onto a body, loading each file once per client (``loaded`` remembers)."""
    if path not in loaded:
        loaded[path] = pb.loadTexture(path, physicsClientId=client)
    pb.changeVisualShape(body, -1, textureUniqueId=loaded[path], physicsClientId=client)
