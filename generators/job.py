"""One job, end to end: build the scene, simulate, render, label, encode, write the archive.

This is the only place the steps are put together; workers, the CLI and Dagster assets all
call ``Generator.run``, which calls ``run_job``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from generators import archive as arc
from generators import tables
from generators.catalog import default_catalog
from generators.coco import coco_dataset
from generators.labels import frame_labels
from generators.physics import simulate
from generators.render_tiny import TinyRenderer
from generators.video import VideoEncoder

if TYPE_CHECKING:
    from generators.contract import Generator
    from generators.params import GeneratorParams

ENCODINGS = {
    "rgb": "rgb/NNNNN.png: 8-bit sRGB PNG",
    "segmentation": "segmentation/NNNNN.png: 16-bit PNG of instance ids, 0 = background",
    "depth": "depth/NNNNN.png: 16-bit PNG, millimetres along the optical axis, 0 = no surface",
    "video": "video.mp4: H.264, yuv420p, frame_rate fps",
    "labels": "labels/{jobs,frames,objects}.parquet and labels/coco.json",
}


def job_id(generator: Generator, params: GeneratorParams, seed: int) -> str:
    """A short stable hash of generator, version, parameters and seed."""
    key = {
        "generator": generator.name,
        "version": generator.version,
        "params": params.model_dump(mode="json"),
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class JobResult:
    job_id: str
    archive: Path
    jobs: pa.Table
    frames: pa.Table
    objects: pa.Table


def _with_ids(rows: list[dict], batch_id: str, jid: str) -> list[dict]:
    return [{"batch_id": batch_id, "job_id": jid, **r} for r in rows]


def _write_frame(archive: arc.AtomicArchive, video: VideoEncoder, paths: dict, images) -> float:
    """Encode one frame's images into the archive and the video; returns the seconds spent."""
    started = time.perf_counter()
    archive.write(paths["rgb"], arc.encode_png(images.rgb))
    archive.write(paths["segmentation"], arc.encode_png(images.instances))
    archive.write(paths["depth"], arc.encode_png(arc.depth_to_png16(images.depth)))
    video.add(images.rgb)
    return time.perf_counter() - started


def run_job(
    generator: Generator,
    params: GeneratorParams,
    seed: int,
    out_dir: Path,
    *,
    batch_id: str,
    on_frame: Callable[[int, int], None] | None = None,
) -> JobResult:
    started = time.perf_counter()
    jid = job_id(generator, params, seed)
    catalog = default_catalog()
    scene = generator.build_scene(params, seed)
    trajectory = simulate(scene, catalog)
    cam = scene.camera
    timing = {"render": 0.0, "label": 0.0, "write": 0.0}
    frame_rows, object_rows = [], []
    path = Path(out_dir) / f"{jid}.zip"
    with (
        arc.AtomicArchive(path) as archive,
        TinyRenderer(scene, catalog) as renderer,
        ThreadPoolExecutor(max_workers=1) as writer,  # encodes and writes while we render
    ):
        video = VideoEncoder(cam.width, cam.height, scene.frame_rate)
        written = []
        for frame in range(scene.frame_count):
            t0 = time.perf_counter()
            images = renderer.render_frame(trajectory, frame)
            t1 = time.perf_counter()
            frame_row, rows = frame_labels(scene, catalog, trajectory, frame, images)
            paths = {k: f"{k}/{frame:05d}.png" for k in ("rgb", "segmentation", "depth")}
            frame_rows.append({**frame_row, **{f"{k}_path": p for k, p in paths.items()}})
            object_rows += [{"frame": frame, **r} for r in rows]
            written.append(writer.submit(_write_frame, archive, video, paths, images))
            timing["render"] += t1 - t0
            timing["label"] += time.perf_counter() - t1
            if on_frame:
                on_frame(frame + 1, scene.frame_count)
        timing["write"] = sum(f.result() for f in written)
        t0 = time.perf_counter()
        archive.write("video.mp4", video.finish())
        frames = pa.Table.from_pylist(_with_ids(frame_rows, batch_id, jid), tables.FRAMES)
        objects = pa.Table.from_pylist(_with_ids(object_rows, batch_id, jid), tables.OBJECTS)
        timing["write"] += time.perf_counter() - t0
        seconds = {
            "simulate_seconds": trajectory.seconds,
            "render_seconds": timing["render"],
            "label_seconds": timing["label"],
            "write_seconds": timing["write"],
            "total_seconds": time.perf_counter() - started,
        }
        row = tables.jobs_row(
            params,
            batch_id=batch_id,
            job_id=jid,
            generator=generator.name,
            generator_version=generator.version,
            seed=seed,
            frame_count=scene.frame_count,
            width=cam.width,
            height=cam.height,
            status="ok",
            error=None,
            archive=path.name,
            **seconds,
        )
        jobs = pa.Table.from_pylist([row], tables.jobs_schema(type(params)))
        info = {"generator": generator.name, "version": generator.version, "job_id": jid}
        archive.write("labels/jobs.parquet", arc.parquet_bytes(jobs))
        archive.write("labels/frames.parquet", arc.parquet_bytes(frames))
        archive.write("labels/objects.parquet", arc.parquet_bytes(objects))
        coco = coco_dataset(frames, objects, info)
        archive.write("labels/coco.json", json.dumps(coco).encode(), compress=True)
        manifest = {
            **info,
            "batch_id": batch_id,
            "seed": seed,
            "params": params.model_dump(mode="json"),
            "versions": {p: version(p) for p in ("vario", "pybullet", "pycocotools")},
            "timing": seconds,
            "encodings": ENCODINGS,
            "conventions": "docs/conventions.md",
            "scene": scene.model_dump(mode="json"),
        }
        archive.write("job.json", json.dumps(manifest, indent=2).encode(), compress=True)
    return JobResult(jid, path, jobs, frames, objects)
