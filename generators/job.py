"""One job, end to end: build the scene, simulate, render, label, encode, write the archive.

This is the only place the steps are put together; workers, the CLI and Dagster assets all
call ``Generator.run``, which calls ``run_job``. Jobs whose renderer must be isolated (Cycles)
are handed to a render worker process, which calls ``run_job`` again inside.
"""

from __future__ import annotations

import contextlib
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

from generators.labels import archive as arc
from generators.labels import tables
from generators.labels.coco import coco_dataset
from generators.labels.frame_labels import frame_labels
from generators.labels.video import VideoEncoder
from generators.render import isolation
from generators.render.base import ISOLATED_RENDERERS, FrameImages, renderer_notes
from generators.render.select import make_renderer
from generators.scene.catalog import default_catalog, refresh, user_catalog_dir
from generators.scene.description import Scene
from generators.sim.physics import Trajectory, simulate

if TYPE_CHECKING:
    from generators.contract.generator import Generator
    from generators.params import GeneratorParams

ENCODINGS = {
    "rgb": "rgb/NNNNN.png: 8-bit sRGB PNG",
    "segmentation": "segmentation/NNNNN.png: 16-bit PNG of instance ids, 0 = background",
    "depth": "depth/NNNNN.png: 16-bit PNG, millimetres along the optical axis, 0 = no surface",
    "normals": "normals/NNNNN.png: 16-bit RGB PNG of world-frame unit normals, "
    "n = value / 65535 * 2 - 1; (0, 0, 0) where nothing is hit",
    "object_coordinates": "object_coordinates/NNNNN.png: 16-bit RGB PNG, the surface point "
    "in its object's box, each axis value / 65535 in [0, 1]",
    "forward_flow": "flow/forward/NNNNN.png: KITTI 16-bit PNG (u, v, valid), pixels of motion "
    "to the next frame: dx = (u - 32768) / 64, dy = (v - 32768) / 64, range +-511 px",
    "backward_flow": "flow/backward/NNNNN.png: as flow/forward, motion to the previous frame",
    "video": "video.mp4: H.264, yuv420p, frame_rate fps",
    "labels": "labels/{jobs,frames,objects,events}.parquet and labels/coco.json",
}


def job_id(generator: Generator, params: GeneratorParams, seed: int) -> str:
    """A short stable hash of generator, version, parameters (the fast renderer's backend
    among them), seed, and this process's catalog."""
    return make_job_id(
        generator.name,
        generator.version,
        params.model_dump(mode="json"),
        seed,
        default_catalog().content_hash,
    )


def make_job_id(
    name: str, version: str, params_json: dict | str, seed: int, catalog_hash: str
) -> str:
    """``job_id`` from plain values: the parameters as ``model_dump(mode="json")``, or as that
    dict's ``json.dumps(..., sort_keys=True)`` text, which planning already has (it is the
    manifest's ``params_json``), so 100,000 jobs are not serialized twice; ``catalog_hash``
    is ``Catalog.content_hash``, computed once by the caller, never per job.

    The key is the text of ``json.dumps({"catalog", "generator", "params", "seed",
    "version"}, sort_keys=True)``, spelled out: ids name archives on disk, so its bytes must
    not change.
    """
    params = (
        params_json if isinstance(params_json, str) else json.dumps(params_json, sort_keys=True)
    )
    seed_text = int.__repr__(seed) if type(seed) is int else json.dumps(seed)  # json's own text
    key = (
        f'{{"catalog": {json.dumps(catalog_hash)}, "generator": {json.dumps(name)}, '
        f'"params": {params}, "seed": {seed_text}, "version": {json.dumps(version)}}}'
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class CatalogChanged(RuntimeError):
    """This process's catalog is not the one the job was planned with."""


def checked_job_id(
    generator: Generator, params: GeneratorParams, seed: int, planned_id: str | None
) -> str:
    """The job's id with this process's catalog, which must be ``planned_id`` when a batch
    planned the job: an archive under another id is one its batch never finds. A process
    may hold a catalog it read before a mesh was added (a warm worker), so on a difference
    the catalog is read again, once; a difference that remains raises ``CatalogChanged``."""
    jid = job_id(generator, params, seed)
    if planned_id is None or jid == planned_id:
        return jid
    refresh()
    jid = job_id(generator, params, seed)
    if jid != planned_id:
        raise CatalogChanged(
            f"catalog changed since the batch was planned: job {planned_id} is {jid} here, "
            f"with catalog {default_catalog().content_hash} (user meshes from "
            f"{user_catalog_dir()}) and {generator.name} {generator.version}; plan the batch "
            "again, or render it with the catalog it was planned with"
        )
    return jid


@dataclass(frozen=True)
class JobResult:
    job_id: str
    archive: Path | None  # None when the job failed
    jobs: pa.Table
    frames: pa.Table
    objects: pa.Table
    events: pa.Table
    log: str = ""  # the render worker's last output lines, for a failed job

    @property
    def status(self) -> str:
        return self.jobs.column("status")[0].as_py()

    @property
    def error(self) -> str | None:
        return self.jobs.column("error")[0].as_py()


def _identity(generator: Generator, batch_id: str, jid: str, seed: int) -> dict:
    """The columns that say which job a ``jobs`` row is."""
    return {
        "batch_id": batch_id,
        "job_id": jid,
        "generator": generator.name,
        "generator_version": generator.version,
        "seed": seed,
    }


def _with_ids(rows: list[dict], batch_id: str, jid: str) -> list[dict]:
    return [{"batch_id": batch_id, "job_id": jid, **r} for r in rows]


def _write_frame(
    archive: arc.AtomicArchive, video: VideoEncoder, frame: int, images: FrameImages
) -> tuple[float, str]:
    """Encode one frame's images into the archive and the video; returns the seconds spent
    and the RGB PNG's SHA-256 (the frames table's ``rgb_sha256``: exports copy the image
    and record its checksum without hashing it again)."""
    started = time.perf_counter()
    name = f"{frame:05d}.png"
    rgb = arc.encode_png(images.rgb)
    archive.write(f"rgb/{name}", rgb)
    archive.write(f"segmentation/{name}", arc.encode_png(images.instances))
    archive.write(f"depth/{name}", arc.encode_png(arc.depth_to_png16(images.depth)))
    for kind, values in images.dense.items():
        folder, encode = arc.DENSE_MAPS[kind]
        archive.write(f"{folder}/{name}", arc.encode_png(encode(values)))
    video.add(images.rgb)
    return time.perf_counter() - started, hashlib.sha256(rgb).hexdigest()


def _drawn(scene: Scene) -> dict:
    """The ``jobs`` columns of what the domain randomizers drew (``Scene.randomization``)."""
    drawn = scene.randomization
    if not drawn:
        return {}
    return {
        "background_kind": drawn.get("background", {}).get("kind"),
        "light_count": len(drawn["lights"]) if "lights" in drawn else None,
        "randomization": json.dumps(drawn, sort_keys=True),
    }


def _event_rows(scene: Scene, trajectory: Trajectory) -> list[dict]:
    instance = {}
    for i, obj in enumerate(o for o in scene.objects if o.labelled):
        instance[scene.objects.index(obj)] = i + 1
    return [
        {
            "frame": c.frame,
            "time": c.time,
            "instance_a": instance.get(c.body_a, 0),
            "instance_b": instance.get(c.body_b, 0),
            "category_a": scene.objects[c.body_a].category,
            "category_b": scene.objects[c.body_b].category,
            "force": c.force,
            "x": c.position[0],
            "y": c.position[1],
            "z": c.position[2],
        }
        for c in trajectory.collisions
    ]


def run_job(
    generator: Generator,
    params: GeneratorParams,
    seed: int,
    out_dir: Path,
    *,
    batch_id: str,
    on_frame: Callable[[int, int], None] | None = None,
    time_limit: float | None = None,
    planned_id: str | None = None,
) -> JobResult:
    """One job into ``out_dir/<job id>.zip``. With ``planned_id`` (the id its batch planned)
    a job whose id differs here fails at once and writes nothing (``checked_job_id``)."""
    started = time.perf_counter()
    try:
        jid = checked_job_id(generator, params, seed, planned_id)
    except CatalogChanged as exc:
        return _failed(generator, params, seed, batch_id, planned_id, str(exc), started)
    if getattr(params, "renderer", "tiny") in ISOLATED_RENDERERS and not isolation.in_worker():
        return _run_isolated(
            generator, params, seed, jid, Path(out_dir), batch_id, on_frame, time_limit
        )
    catalog = default_catalog()
    scene = generator.build_scene(params, seed)
    trajectory = simulate(scene, catalog)
    cam = scene.camera
    timing = {"render": 0.0, "label": 0.0, "write": 0.0}
    frame_rows, object_rows = [], []
    path = Path(out_dir) / f"{jid}.zip"
    with (
        arc.AtomicArchive(path) as archive,
        contextlib.closing(make_renderer(scene, catalog, trajectory, params)) as renderer,
        ThreadPoolExecutor(max_workers=1) as writer,  # encodes and writes while we render
    ):
        video = VideoEncoder(cam.width, cam.height, scene.frame_rate)
        written = []
        dense_kinds: set[str] = set()
        for frame in range(scene.frame_count):
            t0 = time.perf_counter()
            images = renderer.render_frame(frame)
            t1 = time.perf_counter()
            frame_row, rows = frame_labels(scene, catalog, trajectory, frame, images)
            frame_rows.append(
                {
                    **frame_row,
                    **{
                        f"{k}_path": f"{k}/{frame:05d}.png"
                        for k in ("rgb", "segmentation", "depth")
                    },
                }
            )
            object_rows += [{"frame": frame, **r} for r in rows]
            dense_kinds |= images.dense.keys()
            written.append(writer.submit(_write_frame, archive, video, frame, images))
            timing["render"] += t1 - t0
            timing["label"] += time.perf_counter() - t1
            if on_frame:
                on_frame(frame + 1, scene.frame_count)
        for row, done in zip(frame_rows, written, strict=True):
            timing["write"] += done.result()[0]
            row["rgb_sha256"] = done.result()[1]
        t0 = time.perf_counter()
        archive.write("video.mp4", video.finish())
        frames = pa.Table.from_pylist(_with_ids(frame_rows, batch_id, jid), tables.FRAMES)
        objects = pa.Table.from_pylist(_with_ids(object_rows, batch_id, jid), tables.OBJECTS)
        events = pa.Table.from_pylist(
            _with_ids(_event_rows(scene, trajectory), batch_id, jid), tables.EVENTS
        )
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
            **_identity(generator, batch_id, jid, seed),
            frame_count=scene.frame_count,
            width=cam.width,
            height=cam.height,
            status="ok",
            error=None,
            archive=path.name,
            **seconds,
            **_drawn(scene),
        )
        jobs = pa.Table.from_pylist([row], tables.jobs_schema(type(params)))
        info = {"generator": generator.name, "version": generator.version, "job_id": jid}
        for name, table in (
            ("jobs", jobs),
            ("frames", frames),
            ("objects", objects),
            ("events", events),
        ):
            archive.write(f"labels/{name}.parquet", arc.parquet_bytes(table))
        coco = coco_dataset(frames, objects, info, catalog.category_ids())
        archive.write("labels/coco.json", json.dumps(coco).encode(), compress=True)
        present = {"rgb", "segmentation", "depth", "video", "labels"} | dense_kinds
        manifest = {
            **info,
            "batch_id": batch_id,
            "seed": seed,
            "renderer": getattr(params, "renderer", "tiny"),
            "render_backend": renderer.backend,
            "renderer_notes": renderer_notes(scene, renderer.backend),  # what it left out
            "catalog_hash": catalog.content_hash,  # in the job id too
            "params": params.model_dump(mode="json"),
            "versions": {p: version(p) for p in ("vario", "pybullet", "pycocotools")},
            "timing": seconds,
            "encodings": {k: v for k, v in ENCODINGS.items() if k in present},
            "conventions": "docs/conventions.md",
            "scene": scene.model_dump(mode="json"),
            # what the catalog made of each asset: a catalog change that moves labels shows
            "assets": {
                o.asset_id: {
                    "dimensions_m": catalog[o.asset_id].dimensions,
                    "mesh_scale": catalog[o.asset_id].scale,
                }
                for o in scene.objects
            },
        }
        archive.write("job.json", json.dumps(manifest, indent=2).encode(), compress=True)
    return JobResult(jid, path, jobs, frames, objects, events)


def _failed(
    generator: Generator,
    params: GeneratorParams,
    seed: int,
    batch_id: str,
    jid: str,
    error: str,
    started: float,
    log: str = "",
) -> JobResult:
    """A ``failed`` job: its ``jobs`` row with the error, empty other tables, no archive."""
    jobs = tables.failed_jobs_table(
        params,
        **_identity(generator, batch_id, jid, seed),
        error=error,
        total_seconds=time.perf_counter() - started,
    )
    empty = [schema.empty_table() for schema in (tables.FRAMES, tables.OBJECTS, tables.EVENTS)]
    return JobResult(jid, None, jobs, *empty, log=log)


def _run_isolated(
    generator: Generator,
    params: GeneratorParams,
    seed: int,
    jid: str,
    out_dir: Path,
    batch_id: str,
    on_frame: Callable[[int, int], None] | None,
    time_limit: float | None,
) -> JobResult:
    """The job in a render worker process; a crash or timeout gives a ``failed`` result. The
    worker checks the id against its own catalog, which it may have read earlier."""
    started = time.perf_counter()
    spec = {
        "generator": generator.name,
        "params": params.model_dump(mode="json"),
        "seed": seed,
        "out_dir": str(out_dir),
        "batch_id": batch_id,
        "job_id": jid,
    }
    ended = isolation.run_isolated(spec, on_frame=on_frame, time_limit=time_limit)
    path = out_dir / f"{jid}.zip"
    arc.AtomicArchive(path, pid=ended.pid).partial.unlink(missing_ok=True)
    # the archive decides: synced and renamed into place only once whole, so a complete one
    # is a done job even if its worker died afterwards (in native teardown); anything else
    # is removed and the job failed, never a failed job beside an archive
    if arc.is_complete(path):
        labels = arc.read_tables(path)
        return JobResult(
            jid, path, labels["jobs"], labels["frames"], labels["objects"], labels["events"]
        )
    path.unlink(missing_ok=True)
    error = ended.error or "render worker wrote no archive"
    return _failed(generator, params, seed, batch_id, jid, error, started, ended.log)
