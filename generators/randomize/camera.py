"""The camera: a pose on a spherical shell around a target (distance, azimuth, elevation
within ranges), the look-at point jittered, a roll about the optical axis, a field of view
and the principal point moved off the image centre; resolution and sensor noise stay the
generator's. Draws from the stream ``camera``."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field, model_validator
from scipy.spatial.transform import Rotation

from generators.params import check_range
from generators.randomize.streams import recorded, stream
from generators.scene.description import Scene
from generators.scene.geometry import Vec3, look_at, quat_wxyz, spherical_to_cartesian


class CameraParams(BaseModel):
    camera_distance_min: float = Field(
        0.4, ge=0.2, le=5, description="Nearest the camera is to the target, m."
    )
    camera_distance_max: float = Field(
        0.7, ge=0.2, le=5, description="Farthest the camera is from the target, m."
    )
    camera_elevation_min: float = Field(
        10.0, ge=-89, le=89, description="Lowest camera elevation above the target, deg."
    )
    camera_elevation_max: float = Field(
        80.0, ge=-89, le=89, description="Highest camera elevation above the target, deg."
    )
    camera_azimuth_min: float = Field(0.0, ge=0, le=360, description="Least azimuth, deg.")
    camera_azimuth_max: float = Field(360.0, ge=0, le=360, description="Most azimuth, deg.")
    look_jitter: float = Field(
        0.03, ge=0, le=0.1, description="Largest offset of the look-at point from the target, m."
    )
    roll_max: float = Field(
        15.0, ge=0, le=180, description="Largest camera roll about its optical axis, deg."
    )
    principal_jitter: float = Field(
        0.02, ge=0, le=0.1,
        description="Largest principal-point offset from the image centre, share of its side.",
    )  # fmt: skip
    fov_min: float = Field(35.0, ge=10, le=100, description="Narrowest vertical field of view.")
    fov_max: float = Field(55.0, ge=10, le=100, description="Widest vertical field of view.")

    @model_validator(mode="after")
    def _camera_ranges(self) -> CameraParams:
        check_range(self, "camera_distance", "camera_elevation", "camera_azimuth", "fov")
        return self


def randomize_camera(
    scene: Scene, params: CameraParams, seed: int, target: Vec3 = (0.0, 0.0, 0.0)
) -> Scene:
    """The scene's camera moved to a drawn pose looking near ``target``."""
    rng = stream(seed, "camera")
    drawn = {
        "distance": float(rng.uniform(params.camera_distance_min, params.camera_distance_max)),
        "azimuth": float(rng.uniform(params.camera_azimuth_min, params.camera_azimuth_max)),
        "elevation": float(rng.uniform(params.camera_elevation_min, params.camera_elevation_max)),
        "look_offset": [float(v) for v in rng.uniform(-1, 1, 3) * params.look_jitter],
        "roll": float(rng.uniform(-params.roll_max, params.roll_max)),
        "fov": float(rng.uniform(params.fov_min, params.fov_max)),
        "principal_offset": [float(v) for v in rng.uniform(-1, 1, 2) * params.principal_jitter],
    }
    target = np.asarray(target, float)
    eye = target + spherical_to_cartesian(drawn["distance"], drawn["azimuth"], drawn["elevation"])
    view = look_at(eye, target + drawn["look_offset"])
    rolled = view * Rotation.from_euler("z", drawn["roll"], degrees=True)  # about optical axis
    camera = scene.camera.model_copy(
        update={
            "position": tuple(float(v) for v in eye),
            "quaternion": quat_wxyz(rolled),
            "vertical_fov_deg": drawn["fov"],
            "principal_offset": (
                drawn["principal_offset"][0] * scene.camera.width,
                drawn["principal_offset"][1] * scene.camera.height,
            ),
        }
    )
    return recorded(scene, "camera", drawn, camera=camera)
