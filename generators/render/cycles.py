"""Blender Cycles through Kubric: RGB, instance ids, depth, normals, object coordinates and
forward/backward optical flow. Imports ``bpy`` and ``kubric``; runs inside a render worker.

Kubric's scene is built from Vario's scene description, and every object is keyframed from the
shared PyBullet ``Trajectory`` (Kubric frame k + 1 is Vario frame k), so the final render shows
exactly the motion of the preview.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import bpy
import kubric as kb
import numpy as np
from kubric.renderer.blender import Blender
from scipy.spatial.transform import Rotation

from generators.render.base import FrameImages, RenderParams, backdrop
from generators.render.kubric_compat import VarioMaterial, VarioMesh, repair_render_passes
from generators.scene.catalog import Catalog
from generators.scene.description import Light, Scene
from generators.scene.geometry import quat_wxyz, rotation
from generators.sim.physics import Trajectory

SENSOR_WIDTH_MM = 32.0
_CV_TO_BLENDER_CAMERA = Rotation.from_euler("x", 180, degrees=True)  # y down/z fwd -> y up/-z fwd
_LAYERS = (
    "rgba",
    "z",
    "segmentation",
    "normal",
    "object_coordinates",
    "forward_flow",
    "backward_flow",
)
_BACKGROUND_DEPTH = 1e9  # Blender writes 1e10 where a ray hits nothing


def _blender_camera_quat(cv_quat) -> tuple[float, float, float, float]:
    return quat_wxyz(rotation(cv_quat) * _CV_TO_BLENDER_CAMERA)


class GPUUnavailable(RuntimeError):
    pass


def configure_device(settings: RenderParams) -> None:
    """CPU, or OptiX/CUDA when ``device=gpu``; a GPU request without a GPU is an error."""
    scene = bpy.context.scene
    scene.cycles.device = "CPU"
    if settings.device == "gpu":
        prefs = bpy.context.preferences.addons["cycles"].preferences
        seen = []
        for kind in ("OPTIX", "CUDA"):
            try:
                prefs.compute_device_type = kind
            except TypeError:  # this Blender build lacks the backend
                continue
            prefs.get_devices()
            seen = [f"{d.type} {d.name}" for d in prefs.devices]
            gpus = [d for d in prefs.devices if d.type == kind]
            if gpus:
                for d in prefs.devices:
                    d.use = d.type == kind
                scene.cycles.device = "GPU"
                break
        else:
            raise GPUUnavailable(
                "device=gpu: Cycles finds no OptiX or CUDA device "
                f"(it sees: {', '.join(seen) or 'none'}); use device=cpu"
            )
    if settings.threads:
        scene.render.threads_mode, scene.render.threads = "FIXED", settings.threads
    scene.cycles.tile_size = settings.tile_size
    scene.view_settings.view_transform = "Standard"  # colours as given, like the fast renderer


def _light(light: Light) -> kb.Light:
    """The scene's light as Kubric's: a sun, a point light or a square area light. A white
    surface facing a sun gets ``diffuse * intensity``, as in PyBullet; a point or area light
    gives the same at one metre (watts scale with the square of distance)."""
    color = kb.Color(*light.color)
    strength = math.pi * light.diffuse * light.intensity
    if light.kind == "sun":
        return kb.DirectionalLight(
            color=color,
            intensity=strength,
            position=tuple(5 * np.asarray(light.direction)),
            look_at=(0, 0, 0),
        )
    watts = 4 * math.pi * strength  # radiant power that gives ``strength`` at one metre
    if light.kind == "point":
        return kb.PointLight(color=color, intensity=watts, position=light.position)
    return kb.RectAreaLight(
        color=color,
        intensity=watts,
        width=light.size,
        height=light.size,
        position=light.position,
        look_at=(0, 0, 0),
    )


class CyclesRenderer:
    def __init__(
        self, scene: Scene, catalog: Catalog, trajectory: Trajectory, settings: RenderParams
    ):
        self.scene = scene
        self._scratch = Path(tempfile.mkdtemp(prefix="vario-cycles-"))
        cam = scene.camera
        kscene = kb.Scene(
            resolution=(cam.width, cam.height),
            frame_start=1,
            frame_end=scene.frame_count,
            frame_rate=scene.frame_rate,
            step_rate=scene.step_rate,
        )
        self.blender = Blender(
            kscene,
            scratch_dir=self._scratch,
            samples_per_pixel=settings.samples,
            use_denoising=settings.denoise,
            motion_blur=settings.motion_blur or None,
        )
        repair_render_passes()
        configure_device(settings)
        self.backend = f"cycles-{bpy.context.scene.cycles.device.lower()}"  # cpu or gpu
        f_px = cam.intrinsics[1]
        camera = kb.PerspectiveCamera(
            focal_length=f_px * SENSOR_WIDTH_MM / max(cam.width, cam.height),
            sensor_width=SENSOR_WIDTH_MM,
            position=cam.position,
            quaternion=_blender_camera_quat(cam.quaternion),
            min_render_distance=cam.near,
            max_render_distance=cam.far,
        )
        kscene += camera
        # Blender's lens shift, in units of the larger side: a shift right moves the view
        # right, so the optical axis's pixel (the principal point) left
        side, (dx, dy) = max(cam.width, cam.height), cam.principal_offset
        lens = camera.linked_objects[self.blender].data
        lens.shift_x, lens.shift_y = -dx / side, dy / side
        for frame, pose in enumerate(scene.camera_path):
            camera.position = pose.position
            camera.quaternion = _blender_camera_quat(pose.quaternion)
            camera.keyframe_insert("position", frame + 1)
            camera.keyframe_insert("quaternion", frame + 1)
        for light in scene.lights:
            lamp = _light(light)
            kscene += lamp
            lamp.linked_objects[self.blender].data.use_shadow = light.shadows
        ambient = scene.lights[0].ambient if scene.lights else 0.3
        kscene.ambient_illumination = kb.Color(ambient, ambient, ambient)
        kscene.background = kb.Color(*scene.background)
        self._backdrop = backdrop(scene)
        labelled = []
        for i, obj in enumerate(scene.objects):
            entry = catalog[obj.asset_id]
            mesh = VarioMesh(
                asset_id=obj.asset_id,
                render_filename=str(entry.render_mesh),
                mesh_center=tuple(entry.mesh.center),
                scale=tuple(entry.scale * np.asarray(obj.scale)),
                position=obj.position,
                quaternion=obj.quaternion,
                material=VarioMaterial(
                    color=kb.Color(*obj.material.color),
                    texture=obj.material.texture,
                    roughness=obj.material.roughness,
                    metallic=obj.material.metallic,
                    specular=obj.material.specular,
                ),
            )
            kscene += mesh
            if not obj.static:
                for frame in range(scene.frame_count):
                    mesh.position = tuple(trajectory.positions[frame, i])
                    mesh.quaternion = tuple(trajectory.quaternions[frame, i])
                    mesh.keyframe_insert("position", frame + 1)
                    mesh.keyframe_insert("quaternion", frame + 1)
            if obj.labelled:
                labelled.append(mesh)
        # Kubric labels pixels with (index in its scene's assets) + 1; Vario with instance ids
        assets = list(kscene.assets)
        self._instance_of = np.zeros(len(assets) + 1, np.uint16)
        for instance, mesh in enumerate(labelled, start=1):
            self._instance_of[assets.index(mesh) + 1] = instance

    def render_frame(self, frame: int) -> FrameImages:
        # Kubric reads every EXR in its scratch folder, so each frame gets a folder of its own
        self.blender.scratch_dir = self._scratch / f"{frame:05d}"
        out = self.blender.render(frames=[frame + 1], return_layers=_LAYERS)
        shutil.rmtree(self.blender.scratch_dir, ignore_errors=True)
        instances = self._instance_of[out["segmentation"][0, ..., 0]]
        depth = out["z"][0, ..., 0].astype(np.float32)
        depth[depth > _BACKGROUND_DEPTH] = np.inf
        dense = {
            "normals": out["normal"][0].astype(np.float32) / 65535 * 2 - 1,
            "object_coordinates": out["object_coordinates"][0].astype(np.float32) / 65535,
            # Kubric gives (d_row, d_col); Vario's convention is (dx, dy). Blender's vector
            # pass holds the motion *from* the previous frame; Vario's backward flow points
            # *to* it, hence the sign.
            "forward_flow": out["forward_flow"][0][..., ::-1].astype(np.float32),
            "backward_flow": -out["backward_flow"][0][..., ::-1].astype(np.float32),
        }
        rgb = np.ascontiguousarray(out["rgba"][0, ..., :3])
        if self._backdrop is not None:  # where nothing is hit, as the fast renderer does
            empty = ~np.isfinite(depth)
            rgb[empty] = self._backdrop[empty]
        return FrameImages(rgb, instances, depth, dense)

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)
