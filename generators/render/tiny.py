"""PyBullet's own renderer: RGB, instance segmentation and metric depth, fast enough for previews
and scale. Its backend is the job's ``fast_backend`` parameter, never the machine's choice:
``tiny`` (``ER_TINY_RENDERER``, on any CPU, the default) or ``egl``
(``ER_BULLET_HARDWARE_OPENGL`` through the EGL plugin), which fails when EGL cannot load.

It reads the same scene description as every renderer and only poses bodies from a
``Trajectory``; it never steps physics. It shows the first light of the scene.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pkgutil
from pathlib import Path
from typing import Literal

import numpy as np

from generators.render.base import FrameImages, backdrop
from generators.scene.catalog import Catalog
from generators.scene.description import Scene
from generators.scene.geometry import opengl_view_matrix, to_pybullet_quat
from generators.settings import settings
from generators.sim import bullet
from generators.sim.bullet import pb
from generators.sim.physics import Trajectory


def srgb_bytes(linear) -> np.ndarray:
    """Linear RGB in [0, 1] as the 8-bit sRGB values Blender's "Standard" view writes."""
    c = np.clip(np.asarray(linear, float), 0.0, 1.0)
    encoded = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.rint(encoded * 255).astype(np.uint8)


FastBackend = Literal["tiny", "egl"]


class EGLUnavailable(RuntimeError):
    """``fast_backend=egl`` on a machine where PyBullet's EGL plugin does not load."""


def gpu_available() -> bool:
    return Path("/dev/nvidiactl").exists()


def choose_engine(client: int, backend: FastBackend = "tiny") -> int:
    """The PyBullet engine ``backend`` names. EGL that does not load is an error, not a quiet
    fallback to tiny: the job's id and description say which backend drew it, and a job
    that says ``egl`` must not be drawn by another."""
    if backend == "tiny":
        return pb.ER_TINY_RENDERER
    egl = pkgutil.get_loader("eglRenderer")
    if (
        egl is None
        or pb.loadPlugin(egl.get_filename(), "_eglRendererPlugin", physicsClientId=client) < 0
    ):
        hint = "" if gpu_available() else " (no GPU here: /dev/nvidiactl is absent)"
        raise EGLUnavailable(
            f"fast_backend=egl: PyBullet's EGL renderer plugin did not load{hint}; "
            "use fast_backend=tiny"
        )
    return pb.ER_BULLET_HARDWARE_OPENGL


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
    # x_ndc = -(P00 x + P02 z) / z: adding d to P02 (index 8) moves x_ndc by -d, the image
    # d * width / 2 pixels left; likewise P12 (index 9) moves it down. The principal point's
    # offset moves the optical axis's pixel right and down (a pixel is 2 / width in NDC).
    dx, dy = cam.principal_offset
    matrix[8] -= 2.0 * dx / cam.width
    matrix[9] += 2.0 * dy / cam.height
    if engine == pb.ER_TINY_RENDERER:
        matrix[8] += 1.0 / cam.width  # half a pixel left
        matrix[9] += 1.0 / cam.height  # and half a pixel down
    return matrix


def camera_image_args(scene: Scene, engine: int, frame: int = 0) -> dict:
    """``getCameraImage`` arguments for the scene's camera at ``frame`` and its first light."""
    cam, light = scene.camera_at(frame), scene.lights[0]
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


def _screen_size(scene: Scene, obj, size: float) -> int:
    """About how many pixels across the object appears, where the camera comes nearest."""
    f = scene.camera.intrinsics[0]
    poses = scene.camera_path or (scene.camera,)
    nearest = min(np.linalg.norm(np.subtract(p.position, obj.position)) for p in poses)
    return int(np.ceil(f * size * max(obj.scale) / max(nearest, scene.camera.near)))


def prefiltered_texture(path: str, texels: int) -> str:
    """The texture reduced by area averaging to the power of two at or above ``texels`` on
    its longer side: the mip level a filtering renderer would sample. The tiny renderer
    picks the nearest texel and has no mip-maps, so a large texture on a small object
    aliases into speckles. Reduced copies are cached (atomically) beside the catalog's."""
    return _reduced_texture(path, 1 << max(0, int(np.ceil(np.log2(max(texels, 1))))))


@functools.lru_cache(maxsize=256)
def _reduced_texture(path: str, level: int) -> str:
    """One texture at one level, decided (and written, if new) once per process: a job
    would otherwise decode every full-size texture again to learn its size."""
    import cv2

    source = Path(path)
    image = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    if image is None or max(image.shape[:2]) <= level:
        return path
    key = hashlib.sha256(f"{source.resolve()}:{source.stat().st_size}".encode()).hexdigest()
    target = settings().cache_dir / "textures" / f"{key[:16]}-{level}.png"
    if not target.exists():
        factor = level / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial.png")
        cv2.imwrite(str(partial), small)
        os.replace(partial, target)
    return str(target)


class TinyRenderer:
    def __init__(
        self,
        scene: Scene,
        catalog: Catalog,
        trajectory: Trajectory,
        *,
        backend: FastBackend = "tiny",
    ):
        self.scene = scene
        self.trajectory = trajectory
        self.client = bullet.connect()
        try:
            self._engine = choose_engine(self.client, backend)
        except EGLUnavailable:
            pb.disconnect(self.client)
            raise
        # what drew the pixels, in the job's description
        egl = self._engine == pb.ER_BULLET_HARDWARE_OPENGL
        self.backend = "pybullet-egl" if egl else "pybullet-tiny"
        textures: dict[str, int] = {}
        self.bodies = []
        for obj in scene.objects:
            body = bullet.add_body(self.client, obj, catalog, visual=True, collision=False)
            if obj.material.texture:
                # about a texel per pixel across the object, as mip-mapping would choose
                texels = _screen_size(scene, obj, catalog[obj.asset_id].nominal_size)
                texture = prefiltered_texture(obj.material.texture, texels)
                bullet.apply_texture(self.client, body, texture, textures)
            self.bodies.append(body)
        image = backdrop(scene)
        self._background = srgb_bytes(scene.background) if image is None else image
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
            **camera_image_args(scene, self._engine, frame), physicsClientId=self.client
        )
        rgb = np.asarray(rgba, np.uint8).reshape(cam.height, cam.width, 4)[..., :3].copy()
        seg = np.asarray(seg, np.int32).reshape(cam.height, cam.width)
        empty = seg < 0  # where no body is: the world, as Cycles shows it
        rgb[empty] = self._background if self._background.ndim == 1 else self._background[empty]
        buffer = np.asarray(buffer, np.float32).reshape(cam.height, cam.width)
        depth = cam.far * cam.near / (cam.far - (cam.far - cam.near) * buffer)
        depth[seg < 0] = np.inf
        if cam.noise_std > 0:
            rng = np.random.default_rng([scene.seed, frame])
            noisy = rgb + rng.normal(0.0, cam.noise_std * 255.0, rgb.shape)
            rgb = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        return FrameImages(np.ascontiguousarray(rgb), self._instance_of[seg + 1], depth)
