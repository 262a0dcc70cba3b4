"""Sensor effects applied to the rendered pixels: Gaussian noise, drawn per frame from the
job seed by the renderer (``Camera.noise_std``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from generators.scene.description import Scene


class SensorParams(BaseModel):
    sensor_noise: float = Field(
        0.0, ge=0, le=0.2, description="Std of Gaussian pixel noise, in [0, 1] intensity."
    )


def apply_sensor(scene: Scene, params: SensorParams) -> Scene:
    camera = scene.camera.model_copy(update={"noise_std": params.sensor_noise})
    return scene.model_copy(update={"camera": camera})
