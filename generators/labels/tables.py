"""The label tables every generator writes: ``jobs``, ``frames``, ``objects`` and ``events``.

``events`` holds collisions (instance 0 is unlabelled scenery such as the floor or table).
``jobs`` has the common columns below plus one typed ``param_<name>`` column per generator
parameter, so SQL can slice on parameters directly. Columns ending in ``_seconds`` are
measurements; every other column is a deterministic function of generator, parameters and seed.
"""

from __future__ import annotations

import json

import pyarrow as pa
from pydantic import BaseModel

from generators.params import field_schemas

_IDS = [pa.field("batch_id", pa.string()), pa.field("job_id", pa.string())]

JOBS_COMMON = pa.schema(
    _IDS
    + [
        pa.field("generator", pa.string()),
        pa.field("generator_version", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("params_json", pa.string()),
        pa.field("frame_count", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("simulate_seconds", pa.float64()),
        pa.field("render_seconds", pa.float64()),
        pa.field("label_seconds", pa.float64()),
        pa.field("write_seconds", pa.float64()),
        pa.field("total_seconds", pa.float64()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("archive", pa.string()),
        # what the domain randomizers drew (generators.randomize): the main draws typed,
        # every draw in ``randomization`` (JSON); null for a generator without them
        pa.field("background_kind", pa.string()),
        pa.field("light_count", pa.int32()),
        pa.field("randomization", pa.string()),
    ]
)

FRAMES = pa.schema(
    _IDS
    + [pa.field("frame", pa.int32()), pa.field("time", pa.float64())]
    + [pa.field(n, pa.int32()) for n in ("width", "height")]
    + [pa.field(n, pa.float64()) for n in ("fx", "fy", "cx", "cy", "near", "far")]
    + [pa.field(n, pa.float64()) for n in ("cam_x", "cam_y", "cam_z")]
    + [pa.field(n, pa.float64()) for n in ("cam_qw", "cam_qx", "cam_qy", "cam_qz")]
    + [pa.field("brightness", pa.float32()), pa.field("contrast", pa.float32())]
    + [pa.field("image_hash", pa.int64())]
    + [pa.field("n_objects", pa.int32())]
    + [pa.field(n, pa.string()) for n in ("rgb_path", "segmentation_path", "depth_path")]
    + [pa.field("rgb_sha256", pa.string())]
)

OBJECTS = pa.schema(
    _IDS
    + [pa.field("frame", pa.int32()), pa.field("instance_id", pa.int32())]
    + [pa.field("category", pa.string()), pa.field("asset_id", pa.string())]
    + [pa.field(n, pa.int32()) for n in ("box_x_min", "box_y_min", "box_x_max", "box_y_max")]
    + [pa.field("box3d", pa.list_(pa.list_(pa.float64(), 3), 8))]
    + [pa.field(n, pa.float64()) for n in ("x", "y", "z", "qw", "qx", "qy", "qz")]
    + [pa.field(n, pa.float64()) for n in ("vx", "vy", "vz", "wx", "wy", "wz")]
    + [pa.field("visible_pixels", pa.int64())]
    + [pa.field("occlusion", pa.float32()), pa.field("truncation", pa.float32())]
    + [pa.field("mask_rle", pa.string())]
    # the object's looks: texture kind (``Material.texture_kind``), base colour as sRGB hex
    # ``#rrggbb`` with its hue in degrees, and the material's roughness and metallic
    + [pa.field(n, pa.string()) for n in ("texture_kind", "color")]
    + [pa.field(n, pa.float32()) for n in ("hue", "roughness", "metallic")]
)

EVENTS = pa.schema(
    _IDS
    + [pa.field("frame", pa.int32()), pa.field("time", pa.float64())]
    + [pa.field("instance_a", pa.int32()), pa.field("instance_b", pa.int32())]
    + [pa.field("category_a", pa.string()), pa.field("category_b", pa.string())]
    + [pa.field("force", pa.float64())]
    + [pa.field(n, pa.float64()) for n in ("x", "y", "z")]
)

_ARROW_TYPES = {
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
}


def _arrow_type(schema: dict) -> pa.DataType:
    if schema.get("type") == "array":
        return pa.list_(_arrow_type(schema.get("items", {})))
    if "enum" in schema:
        return pa.string()
    return _ARROW_TYPES.get(schema.get("type"), pa.string())


def jobs_schema(params_model: type[BaseModel]) -> pa.Schema:
    """The ``jobs`` schema for one generator: common columns plus ``param_<name>`` columns."""
    params = [
        pa.field(f"param_{name}", _arrow_type(s)) for name, s in field_schemas(params_model).items()
    ]
    return pa.schema(list(JOBS_COMMON) + params)


def jobs_row(params: BaseModel, **common) -> dict:
    values = params.model_dump(mode="json")
    return {
        **common,
        "params_json": json.dumps(values, sort_keys=True),
        **{f"param_{k}": v for k, v in values.items()},
    }


def failed_jobs_table(
    params: BaseModel,
    *,
    batch_id: str,
    job_id: str,
    generator: str,
    generator_version: str,
    seed: int,
    error: str,
    total_seconds: float | None = None,
) -> pa.Table:
    """The one-row ``jobs`` table of a job that produced no archive, with its error."""
    row = jobs_row(
        params,
        batch_id=batch_id,
        job_id=job_id,
        generator=generator,
        generator_version=generator_version,
        seed=seed,
        status="failed",
        error=error,
        total_seconds=total_seconds,
    )
    return pa.Table.from_pylist([row], jobs_schema(type(params)))
