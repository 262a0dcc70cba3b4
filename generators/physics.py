"""Rigid-body simulation of a scene with PyBullet: each object's pose and velocity per frame."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from generators import bullet
from generators.bullet import pb
from generators.catalog import Catalog
from generators.geometry import from_pybullet_quat
from generators.scene import Scene


@dataclass(frozen=True)
class Trajectory:
    """Per frame and per scene object (in ``scene.objects`` order); world frame, SI units."""

    positions: np.ndarray  # (F, N, 3) metres
    quaternions: np.ndarray  # (F, N, 4) w, x, y, z
    linear_velocities: np.ndarray  # (F, N, 3) m/s
    angular_velocities: np.ndarray  # (F, N, 3) rad/s
    seconds: float  # wall time spent simulating


def simulate(scene: Scene, catalog: Catalog) -> Trajectory:
    started = time.perf_counter()
    client = bullet.connect()
    try:
        pb.setGravity(*scene.gravity, physicsClientId=client)
        pb.setTimeStep(1.0 / scene.step_rate, physicsClientId=client)
        bodies = [
            bullet.add_body(client, o, catalog, visual=False, collision=True) for o in scene.objects
        ]
        n, f = len(bodies), scene.frame_count
        positions, quats = np.zeros((f, n, 3)), np.zeros((f, n, 4))
        lin, ang = np.zeros((f, n, 3)), np.zeros((f, n, 3))
        steps_per_frame = scene.step_rate // scene.frame_rate
        for _ in range(round(scene.start_time * scene.step_rate)):
            pb.stepSimulation(physicsClientId=client)
        for frame in range(f):
            if frame:
                for _ in range(steps_per_frame):
                    pb.stepSimulation(physicsClientId=client)
            for i, body in enumerate(bodies):
                pos, orn = pb.getBasePositionAndOrientation(body, physicsClientId=client)
                v, w = pb.getBaseVelocity(body, physicsClientId=client)
                positions[frame, i], quats[frame, i] = pos, from_pybullet_quat(orn)
                lin[frame, i], ang[frame, i] = v, w
    finally:
        pb.disconnect(client)
    return Trajectory(positions, quats, lin, ang, time.perf_counter() - started)
