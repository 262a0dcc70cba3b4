"""Cycles through Kubric: real renders at tiny sizes, checked against the scene, the label
conventions and the fast renderer's preview of the same job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import running
from pycocotools import mask as mask_utils
from scipy.spatial.transform import Rotation

from generators.labels import archive as arc
from generators.library.falling_objects import FallingObjectsGenerator
from generators.library.tabletop import TabletopGenerator
from generators.render.tiny import gpu_available
from generators.scene.catalog import default_catalog
from generators.sim.physics import simulate

TINY_CYCLES = {"renderer": "cycles", "resolution": 64, "samples": 8, "n_frames": 3}
JOBS = {
    "tabletop": (TabletopGenerator(), {"n_objects": 4, "n_distractors": 1, "start_time": 0.25}),
    "falling_objects": (FallingObjectsGenerator(), {"n_objects": 4}),
}


NO_NETWORK = """
import socket

def _refuse(*args, **kwargs):
    raise OSError("network access attempted by a render worker")

socket.socket.connect = socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
"""


@pytest.fixture(scope="module", params=list(JOBS))
def final_and_preview(request, tmp_path_factory):
    """A Cycles job and its preview. The render worker runs with sockets that refuse to
    connect, so a Kubric or asset handler reaching for the network fails the job."""
    gen, extra = JOBS[request.param]
    out = tmp_path_factory.mktemp(request.param)
    offline = tmp_path_factory.mktemp("offline")
    (offline / "sitecustomize.py").write_text(NO_NETWORK)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(
            "PYTHONPATH",
            os.pathsep.join(filter(None, [str(offline), os.environ.get("PYTHONPATH")])),
        )
        final = gen.run(gen.Params(**TINY_CYCLES, **extra), 5, out)
    assert final.status == "ok", final.log
    preview = gen.run(gen.Params(**{**TINY_CYCLES, "renderer": "tiny"}, **extra), 5, out)
    return final, preview


def _png(archive: Path, name: str) -> np.ndarray:
    """An archived PNG as written: RGB channel order for colour images, raw otherwise."""
    with zipfile.ZipFile(archive) as z:
        image = cv2.imdecode(np.frombuffer(z.read(name), np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


def _manifest(archive: Path) -> dict:
    with zipfile.ZipFile(archive) as z:
        return json.loads(z.read("job.json"))


def _camera(frame: dict):
    rot = Rotation.from_quat(
        [frame["cam_qw"], frame["cam_qx"], frame["cam_qy"], frame["cam_qz"]], scalar_first=True
    )
    return rot, np.array([frame["cam_x"], frame["cam_y"], frame["cam_z"]])


def _project(point, frame) -> np.ndarray:
    rot, position = _camera(frame)
    x, y, z = rot.inv().apply(np.asarray(point) - position)
    return np.array([frame["fx"] * x / z + frame["cx"], frame["fy"] * y / z + frame["cy"]])


def test_segmentation_ids_are_the_scenes_labelled_objects(final_and_preview):
    final, preview = final_and_preview
    assert _manifest(final.archive)["render_backend"] == "cycles-cpu"  # device=cpu, the default
    scene = _manifest(final.archive)["scene"]
    labelled = [o for o in scene["objects"] if o["labelled"]]
    seen = set()
    for f in final.frames.to_pylist():
        seg = _png(final.archive, f["segmentation_path"])
        ids = set(np.unique(seg).tolist()) - {0}
        assert ids <= set(range(1, len(labelled) + 1))
        seen |= ids
        rows = [o for o in final.objects.to_pylist() if o["frame"] == f["frame"]]
        assert sorted(o["instance_id"] for o in rows) == sorted(ids)
        for o in rows:
            assert o["category"] == labelled[o["instance_id"] - 1]["category"]
        # the same id covers the same object in the preview: masks overlap
        tiny = _png(preview.archive, f["segmentation_path"])
        for i in ids & set(np.unique(tiny).tolist()):
            a, b = seg == i, tiny == i
            if min(a.sum(), b.sum()) >= 20:
                assert (a & b).sum() / (a | b).sum() > 0.5, (f["frame"], i)
    assert len(seen) >= 3


def test_boxes_are_mask_boxes_and_pixels_mask_areas(final_and_preview):
    final, _ = final_and_preview
    for o in final.objects.to_pylist():
        mask = mask_utils.decode({"size": [64, 64], "counts": o["mask_rle"].encode()})
        ys, xs = np.nonzero(mask)
        assert (o["box_x_min"], o["box_y_min"], o["box_x_max"], o["box_y_max"]) == (
            xs.min(),
            ys.min(),
            xs.max() + 1,
            ys.max() + 1,
        )
        assert o["visible_pixels"] == mask.sum()


def test_depth_agrees_with_the_camera_to_object_distance(final_and_preview):
    final, preview = final_and_preview
    frames = {f["frame"]: f for f in final.frames.to_pylist()}
    checked = 0
    for o in final.objects.to_pylist():
        if o["visible_pixels"] < 15:
            continue
        f = frames[o["frame"]]
        rot, position = _camera(f)
        center_z = rot.inv().apply(np.array([o["x"], o["y"], o["z"]]) - position)[2]
        half = np.abs(np.array(o["box3d"]) - [o["x"], o["y"], o["z"]]).max()
        depth = _png(final.archive, f["depth_path"]) / 1000.0
        seg = _png(final.archive, f["segmentation_path"])
        d = np.median(depth[seg == o["instance_id"]])
        assert center_z - 1.8 * half - 0.002 <= d <= center_z + 1.8 * half + 0.002
        checked += 1
    assert checked >= 3
    # and agrees with the fast renderer where both see the same object
    f = frames[0]
    both = _png(final.archive, f["segmentation_path"]) == _png(
        preview.archive, f["segmentation_path"]
    )
    both &= _png(final.archive, f["segmentation_path"]) > 0
    d_final = _png(final.archive, f["depth_path"])[both] / 1000.0
    d_tiny = _png(preview.archive, f["depth_path"])[both] / 1000.0
    assert np.median(np.abs(d_final - d_tiny)) < 0.01


def _projected_centres(gen, params, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each labelled object's centre per frame, from a simulation of its own, projected with
    the pinhole model of docs/conventions.md written out here: (F, N, 2) pixels, and (F, N)
    whether the centre is in front of the camera and inside the image."""
    scene = gen.build_scene(params, seed)
    trajectory = simulate(scene, default_catalog())
    cam = scene.camera
    to_world = Rotation.from_quat(cam.quaternion, scalar_first=True)
    f = 0.5 * cam.height / np.tan(np.radians(cam.vertical_fov_deg) / 2)
    index = [i for i, o in enumerate(scene.objects) if o.labelled]
    points = trajectory.positions[:, index, :] - np.asarray(cam.position)
    local = to_world.inv().apply(points.reshape(-1, 3)).reshape(points.shape)
    uv = f * local[..., :2] / local[..., 2:3] + np.array([cam.width, cam.height]) / 2
    inside = (local[..., 2] > 0) & (uv >= 0).all(-1) & (uv < [cam.width, cam.height]).all(-1)
    return uv, inside


def test_cycles_renders_the_simulated_motion(final_and_preview):
    """Frame by frame, an object's silhouette in the Cycles segmentation is centred where its
    simulated centre projects (within a share of its size), and nearer to this frame's
    projection than to another frame's when the object moved: Cycles drew that motion."""
    final, _ = final_and_preview
    job = final.jobs.to_pylist()[0]
    name = job["generator"]
    gen = JOBS[name][0]
    uv, inside = _projected_centres(gen, gen.Params(**json.loads(job["params_json"])), job["seed"])
    frames = final.frames.to_pylist()
    checked = moved = 0
    for row in frames:
        segmentation = _png(final.archive, row["segmentation_path"])
        for k in range(uv.shape[1]):
            mask = segmentation == k + 1
            area = int(mask.sum())
            if area < 12 or not inside[row["frame"], k]:
                continue
            ys, xs = np.nonzero(mask)
            centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
            error = np.linalg.norm(centroid - uv[row["frame"], k])
            assert error <= max(2.0, 0.4 * np.sqrt(area)), (name, row["frame"], k, error, area)
            checked += 1
            for other in range(uv.shape[0]):
                step = np.linalg.norm(uv[other, k] - uv[row["frame"], k])
                if other != row["frame"] and step > 2 * max(2.0, 0.4 * np.sqrt(area)):
                    assert np.linalg.norm(centroid - uv[other, k]) > error
                    moved += 1
    assert checked >= len(frames)
    if name == "falling_objects":
        assert moved > 0  # thrown objects move between frames


def test_preview_and_final_share_the_simulation(final_and_preview):
    """Both jobs of one seed label the same objects with the same events; their poses come
    from one simulation, checked against the render itself above."""
    final, preview = final_and_preview
    keys = ["frame", "instance_id", "category"]
    f = {tuple(r.values()) for r in final.objects.select(keys).to_pylist()}
    p = {tuple(r.values()) for r in preview.objects.select(keys).to_pylist()}
    assert len(f & p) >= 0.8 * max(len(f), len(p))
    drop = ["job_id"]
    assert final.events.drop(drop).equals(preview.events.drop(drop))


def test_flow_follows_the_projected_motion_of_objects(tmp_path):
    gen = FallingObjectsGenerator()
    params = gen.Params(
        **{**TINY_CYCLES, "n_frames": 2},
        n_objects=3,
        max_speed=0.0,
        spawn_height=0.3,
        frame_rate=12,
        max_spin=0.0,
    )
    final = gen.run(params, 2, tmp_path)
    assert final.status == "ok", final.log
    f0, f1 = final.frames.to_pylist()
    rows = {(o["frame"], o["instance_id"]): o for o in final.objects.to_pylist()}
    forward = arc.png16_to_flow(_png(final.archive, "flow/forward/00000.png"))
    backward = arc.png16_to_flow(_png(final.archive, "flow/backward/00001.png"))
    seg0 = _png(final.archive, f0["segmentation_path"])
    seg1 = _png(final.archive, f1["segmentation_path"])
    checked = 0
    for (frame, instance), o in rows.items():
        later = rows.get((1, instance))
        if frame or later is None or o["visible_pixels"] < 10:
            continue
        moved = _project([later["x"], later["y"], later["z"]], f1) - _project(
            [o["x"], o["y"], o["z"]], f0
        )
        assert np.linalg.norm(moved) > 1.0  # falling objects move on screen
        measured = np.nanmedian(forward[seg0 == instance], axis=0)
        assert np.linalg.norm(measured - moved) < 0.25 * np.linalg.norm(moved) + 1.0
        back = np.nanmedian(backward[seg1 == instance], axis=0)
        assert np.linalg.norm(back + moved) < 0.25 * np.linalg.norm(moved) + 1.0
        checked += 1
    assert checked >= 2


def test_dense_maps_are_in_the_archive_with_their_encodings(final_and_preview):
    final, _ = final_and_preview
    manifest = _manifest(final.archive)
    with zipfile.ZipFile(final.archive) as z:
        names = set(z.namelist())
    for kind, folder in [
        ("normals", "normals"),
        ("object_coordinates", "object_coordinates"),
        ("forward_flow", "flow/forward"),
        ("backward_flow", "flow/backward"),
    ]:
        assert kind in manifest["encodings"]
        assert {f"{folder}/{i:05d}.png" for i in range(3)} <= names
    f = final.frames.to_pylist()[0]
    seg = _png(final.archive, f["segmentation_path"])
    normals = _png(final.archive, "normals/00000.png").astype(np.float64) / 65535 * 2 - 1
    lengths = np.linalg.norm(normals[seg > 0], axis=-1)
    assert np.median(lengths) == pytest.approx(1.0, abs=0.02)
    coords = _png(final.archive, "object_coordinates/00000.png")
    assert coords[seg > 0].max() > 0


def test_flow_encoding_round_trips():
    flow = np.array([[[1.5, -2.25], [600.0, 0.0]]], np.float32)
    decoded = arc.png16_to_flow(arc.flow_to_png16(flow))
    assert np.allclose(decoded[0, 0], [1.5, -2.25]) and np.isnan(decoded[0, 1]).all()


def test_device_gpu_renders_on_a_gpu_and_fails_clearly_without_one(tmp_path):
    """Never a silent fallback to the CPU: with a GPU the job renders on it; without one it is
    a failed job that says why, and leaves nothing."""
    gen = TabletopGenerator()
    result = gen.run(gen.Params(**TINY_CYCLES, device="gpu"), 1, tmp_path)
    if gpu_available():
        assert result.status == "ok", result.log
        assert _manifest(result.archive)["params"]["device"] == "gpu"
        return
    assert result.status == "failed" and result.archive is None
    assert "device=gpu" in result.error and "no OptiX or CUDA device" in result.error
    assert list(tmp_path.iterdir()) == []


def test_a_job_past_its_time_limit_fails_and_leaves_nothing(tmp_path):
    """0.2 s is less than simulating and rendering six frames takes, even in a warm worker."""
    gen = TabletopGenerator()
    params = gen.Params(**{**TINY_CYCLES, "n_frames": 6})
    result = gen.run(params, 1, tmp_path, time_limit=0.2)
    assert result.status == "failed" and "time limit of 0.2 s" in result.error
    assert list(tmp_path.iterdir()) == []


def test_a_warm_worker_runs_job_after_job_and_a_failed_job_replaces_it(tmp_path):
    """Jobs reuse one render worker; a job stopped at its time limit takes that worker with
    it, and the next job gets a fresh one."""
    gen = TabletopGenerator()
    params = gen.Params(**TINY_CYCLES)
    first = gen.run(params, 1, tmp_path)
    workers = _worker_pids()
    second = gen.run(params, 2, tmp_path)
    assert first.status == second.status == "ok"
    assert len(workers) == 1 and _worker_pids() == workers
    stopped = gen.run(params.model_copy(update={"n_frames": 6}), 3, tmp_path, time_limit=0.2)
    assert stopped.status == "failed" and not any(map(running, workers))
    third = gen.run(params, 4, tmp_path)
    assert third.status == "ok" and len(_worker_pids()) == 1 and _worker_pids() != workers


def _worker_pids(parent: int | None = None) -> list[int]:
    """The render workers started by ``parent`` (this process by default)."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"generators.worker" in cmdline:
            pids.append(int(entry.name))
    return pids


def test_a_crashed_worker_is_a_failed_job_with_its_error_and_no_archive(tmp_path):
    gen = TabletopGenerator()
    killed = threading.Event()

    def crash_after_first_frame(done: int, total: int) -> None:
        if not killed.is_set():
            for pid in _worker_pids():
                os.kill(pid, signal.SIGKILL)
            killed.set()

    params = gen.Params(**{**TINY_CYCLES, "n_frames": 6})
    result = gen.run(params, 1, tmp_path, on_frame=crash_after_first_frame)
    assert killed.is_set()
    assert result.status == "failed" and "killed by SIGKILL" in result.error
    assert result.archive is None and list(tmp_path.iterdir()) == []
    # the failure is a jobs row like any other, with the parameters' columns
    row = result.jobs.to_pylist()[0]
    assert row["param_renderer"] == "cycles" and row["job_id"] == result.job_id
    assert result.frames.num_rows == 0


def test_a_killed_job_process_takes_its_render_worker_with_it(tmp_path):
    """``vario run`` SIGKILLed while Blender renders (no handler can run): its render worker
    dies with it instead of rendering on as an orphan, and no archive appears."""
    args = ["--set", "renderer=cycles", "--set", "resolution=64", "--out", str(tmp_path)]
    command = [sys.executable, "-m", "dagster_project.cli", "run", "tabletop", *args]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (workers := _worker_pids(parent.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers, "the job started a render worker"
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 2  # well before it would write, and die of a broken pipe
    while any(map(running, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(running, workers))
    assert not list(tmp_path.glob("*.zip"))


@pytest.mark.parametrize("final_and_preview", ["falling_objects"], indirect=True)
def test_events_are_recorded_for_falling_objects(final_and_preview):
    final, _ = final_and_preview
    events = final.events.to_pylist()
    assert events, "thrown objects hit the floor"
    for e in events:
        assert 0 <= e["frame"] < 3 and e["force"] >= 0
        assert e["instance_a"] < e["instance_b"] or e["instance_a"] == e["instance_b"] == 0
