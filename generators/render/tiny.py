"""PyBullet's own renderer: RGB, instance segmentation and metric depth, fast enough for previews
and scale. ``ER_TINY_RENDERER`` runs on any CPU; with a GPU, ``ER_BULLET_HARDWARE_OPENGL``
through the EGL plugin is used instead.

It reads the same scene description as every renderer and only poses bodies from a
``Trajectory``; it never steps physics. It shows the first light of the scene.
"""

from __future__ import annotations

import pkgutil
import warnings
from pathlib import Path

import numpy as np

from generators.render.base import FrameImages
from generators.scene.catalog import Catalog
from generators.scene.description import Scene
from generators.scene.geometry import opengl_view_matrix, to_pybullet_quat
from generators.settings import settings
from generators.sim import bullet
from generators.sim.bullet import pb
from generators.sim.physics import Trajectory


def gpu_available() -> bool:
    return Path("/dev/nvidiactl").exists() or settings().force_egl


def choose_engine(client: int, use_egl: bool | None = None) -> int:
    """``ER_BULLET_HARDWARE_OPENGL`` through EGL when a GPU is there (or asked for), else tiny."""
    if gpu_available() if use_egl is None else use_egl:
        egl = pkgutil.get_loader("eglRenderer")
        plugin = pb.loadPlugin(egl.get_filename(), "_eglRendererPlugin", physicsClientId=client)
        if plugin >= 0:
            return pb.ER_BULLET_HARDWARE_OPENGL
        warnings.warn("EGL renderer plugin failed to load; using the tiny renderer", stacklevel=2)
    return pb.ER_TINY_RENDERER


def projection_matrix(cam, engine: int) -> list[float]:
    """The camera's OpenGL projection (column-major), with pixel centres where
    docs/conventions.md puts them. PyBullet's tiny renderer samples each pixel at its corner
    rather than its centre, which draws the image half a pixel right and half a pixel up;
    moving the image plane by half a pixel the other way puts the samples at the centres.
    Hardware OpenGL (EGL) already samples at pixel centres."""
    matrix = list(
        pb.computeProjectionMatrixFOV(
            cam.vertical_fov_deg, cam.width / cam.height, cam.near, cam.far
        )
    )
    if engine == pb.ER_TINY_RENDERER:
        # x_ndc = -(P00 x + P02 z) / z: adding d to P02 (index 8) moves x_ndc by -d
        matrix[8] += 1.0 / cam.width  # half a pixel left (a pixel is 2 / width in NDC)
        matrix[9] += 1.0 / cam.height  # and half a pixel down
    return matrix


def camera_image_args(scene: Scene, engine: int) -> dict:
    """``getCameraImage`` arguments for the scene's camera and first light."""
    cam, light = scene.camera, scene.lights[0]
    return {
        "width": cam.width,
        "height": cam.height,
        "viewMatrix": opengl_view_matrix(cam.position, cam.quaternion),
        "projectionMatrix": projection_matrix(cam, engine),
        "lightDirection": list(light.direction),
        "lightColor": [c * light.intensity for c in light.color],
        "lightAmbientCoeff": light.ambient,
        "lightDiffuseCoeff": light.diffuse,
        "lightSpecularCoeff": light.specular,
        "shadow": int(light.shadows),
        "renderer": engine,
    }


class TinyRenderer:
    def __init__(
        self,
        scene: Scene,
        catalog: Catalog,
        trajectory: Trajectory,
        *,
        use_egl: bool | None = None,
    ):
        self.scene = scene
        self.trajectory = trajectory
        self.client = bullet.connect()
        self._engine = choose_engine(self.client, use_egl)
        textures: dict[str, int] = {}
        self.bodies = []
        for obj in scene.objects:
            body = bullet.add_body(self.client, obj, catalog, visual=True, collision=False)
            if obj.material.texture:
                bullet.apply_texture(self.client, body, obj.material.texture, textures)
            self.bodies.append(body)
        # body unique id + 1 -> instance id (labelled objects are 1..N in scene order)
        self._instance_of = np.zeros(max(self.bodies) + 2, np.uint16)
        labelled = [b for b, o in zip(self.bodies, scene.objects, strict=True) if o.labelled]
        self._instance_of[np.array(labelled, int) + 1] = np.arange(1, len(labelled) + 1)

    def close(self) -> None:
        pb.disconnect(self.client)

    def __enter__(self) -> TinyRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def render_frame(self, frame: int) -> FrameImages:
        scene, cam, trajectory = self.scene, self.scene.camera, self.trajectory
        for i, (body, obj) in enumerate(zip(self.bodies, scene.objects, strict=True)):
            if not obj.static:
                pb.resetBasePositionAndOrientation(
                    body,
                    trajectory.positions[frame, i].tolist(),
                    to_pybullet_quat(trajectory.quaternions[frame, i]),
                    physicsClientId=self.client,
                )
        _, _, rgba, buffer, seg = pb.getCameraImage(
            **camera_image_args(scene, self._engine), physicsClientId=self.client
        )
        rgb = np.asarray(rgba, np.uint8).reshape(cam.height, cam.width, 4)[..., :3]
        seg = np.asarray(seg, np.int32).reshape(cam.height, cam.width)
        buffer = np.asarray(buffer, np.float32).reshape(cam.height, cam.width)
        depth = cam.far * cam.near / (cam.far - (cam.far - cam.near) * buffer)
        depth[seg < 0] = np.inf
        if cam.noise_std > 0:
            rng = np.random.default_rng([scene.seed, frame])
            noisy = rgb + rng.normal(0.0, cam.noise_std * 255.0, rgb.shape)
            rgb = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        return FrameImages(np.ascontiguousarray(rgb), self._instance_of[seg + 1], depth)
