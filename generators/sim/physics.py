"""Rigid-body simulation of a scene with PyBullet: each object's pose and velocity per frame,
and the collisions between them.

A collision event is the onset of contact between two bodies (they touch at a physics step and
did not at the one before). It is assigned to the first frame at or after it; events before
the interval leading up to frame 0 are not recorded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from generators.scene.catalog import Catalog
from generators.scene.description import Scene
from generators.scene.geometry import from_pybullet_quat
from generators.sim import bullet
from generators.sim.bullet import pb


@dataclass(frozen=True)
class Collision:
    frame: int
    time: float  # simulated seconds
    body_a: int  # indices into scene.objects; a < b
    body_b: int
    force: float  # total normal force at onset, N
    position: tuple[float, float, float]  # mean contact point, world frame


@dataclass(frozen=True)
class Trajectory:
    """Per frame and per scene object (in ``scene.objects`` order); world frame, SI units."""

    positions: np.ndarray  # (F, N, 3) metres
    quaternions: np.ndarray  # (F, N, 4) w, x, y, z
    linear_velocities: np.ndarray  # (F, N, 3) m/s
    angular_velocities: np.ndarray  # (F, N, 3) rad/s
    collisions: tuple[Collision, ...]
    seconds: float  # wall time spent simulating


class _ContactTracker:
    def __init__(self, client: int, index_of_body: dict[int, int]):
        self.client, self.index_of_body = client, index_of_body
        self.touching: set[tuple[int, int]] = set()

    def step(self) -> dict[tuple[int, int], tuple[float, np.ndarray]]:
        """Pairs that started touching at this step, with their force and contact point."""
        forces: dict[tuple[int, int], list] = {}
        for c in pb.getContactPoints(physicsClientId=self.client):
            a, b = sorted((self.index_of_body[c[1]], self.index_of_body[c[2]]))
            entry = forces.setdefault((a, b), [0.0, []])
            entry[0] += c[9]
            entry[1].append(c[5])
        now = {pair for pair, (force, _) in forces.items() if force > 0}
        started = now - self.touching
        self.touching = now
        return {p: (forces[p][0], np.mean(forces[p][1], axis=0)) for p in sorted(started)}


def simulate(scene: Scene, catalog: Catalog) -> Trajectory:
    started = time.perf_counter()
    client = bullet.connect()
    try:
        pb.setGravity(*scene.gravity, physicsClientId=client)
        pb.setTimeStep(1.0 / scene.step_rate, physicsClientId=client)
        bodies = [
            bullet.add_body(client, o, catalog, visual=False, collision=o.collides)
            for o in scene.objects
        ]
        contacts = _ContactTracker(client, {b: i for i, b in enumerate(bodies)})
        n, f = len(bodies), scene.frame_count
        positions, quats = np.zeros((f, n, 3)), np.zeros((f, n, 4))
        lin, ang = np.zeros((f, n, 3)), np.zeros((f, n, 3))
        collisions: list[Collision] = []
        steps_per_frame = scene.step_rate // scene.frame_rate
        pre_roll = round(scene.start_time * scene.step_rate)
        first_recorded = pre_roll - steps_per_frame  # steps after this lead up to frame 0
        if pre_roll == 0:
            _record(bodies, client, 0, positions, quats, lin, ang)
        for step in range(1, pre_roll + (f - 1) * steps_per_frame + 1):
            pb.stepSimulation(physicsClientId=client)
            for (a, b), (force, point) in contacts.step().items():
                if step > first_recorded:
                    frame = max(0, math.ceil((step - pre_roll) / steps_per_frame))
                    collisions.append(
                        Collision(frame, step / scene.step_rate, a, b, force, tuple(point))
                    )
            frame, offset = divmod(step - pre_roll, steps_per_frame)
            if step >= pre_roll and offset == 0:
                _record(bodies, client, frame, positions, quats, lin, ang)
    finally:
        pb.disconnect(client)
    return Trajectory(positions, quats, lin, ang, tuple(collisions), time.perf_counter() - started)


def _record(bodies, client, frame, positions, quats, lin, ang) -> None:
    for i, body in enumerate(bodies):
        pos, orn = pb.getBasePositionAndOrientation(body, physicsClientId=client)
        v, w = pb.getBaseVelocity(body, physicsClientId=client)
        positions[frame, i], quats[frame, i] = pos, from_pybullet_quat(orn)
        lin[frame, i], ang[frame, i] = v, w
