"""Jobs end to end: interrupted writes, physics, the catalog."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from generators.library.tabletop import TABLE_SIZE, TabletopGenerator
from generators.scene.catalog import DISTRACTOR, OBJECT_CATEGORIES, default_catalog
from generators.sim.physics import simulate


def _start_long_job(out):
    args = ["run", "tabletop", "--set", "n_frames=240", "--set", "resolution=128"]
    return subprocess.Popen(
        [sys.executable, "-m", "dagster_project.cli", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_partial(out, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and any(p.name.endswith(".partial") for p in out.iterdir()):
            time.sleep(0.3)  # well into writing frames
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the job never started writing")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_job_killed_mid_write_leaves_no_archive(tmp_path, sig):
    out = tmp_path / "out"
    proc = _start_long_job(out)
    _wait_for_partial(out, proc)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    left = sorted(p.name for p in out.iterdir())
    assert not [name for name in left if name.endswith(".zip")]
    if sig == signal.SIGTERM:  # a catchable signal also removes the partial file
        assert left == [] and proc.returncode == 128 + signal.SIGTERM


def test_objects_settle_on_the_table():
    gen = TabletopGenerator()
    params = gen.Params(n_objects=6, n_distractors=2, start_time=2.0, n_frames=2)
    scene = gen.build_scene(params, 3)
    traj = simulate(scene, default_catalog())
    dynamic = [i for i, o in enumerate(scene.objects) if not o.static]
    z = traj.positions[-1, dynamic, 2]
    assert (z > 0).all() and (z < 0.15).all()  # resting on the top at z = 0
    xy = np.abs(traj.positions[-1, dynamic, :2])
    assert (xy < np.array(TABLE_SIZE[:2]) / 2).all()
    assert np.abs(traj.linear_velocities[-1, dynamic]).max() < 0.05


def test_velocities_are_the_derivative_of_positions_in_free_fall():
    gen = TabletopGenerator()
    params = gen.Params(n_objects=1, n_distractors=0, drop_height=1.0, start_time=0, n_frames=6)
    scene = gen.build_scene(params, 0)
    traj = simulate(scene, default_catalog())
    z, vz = traj.positions[:, 1, 2], traj.linear_velocities[:, 1, 2]
    dt = 1 / scene.frame_rate
    assert np.allclose(vz, -9.81 * np.arange(6) * dt, atol=0.05)
    # semi-implicit Euler with PyBullet's default damping: within one step's worth of g
    assert np.allclose(np.diff(z) / dt, (vz[1:] + vz[:-1]) / 2, atol=9.81 / scene.step_rate)


def test_catalog_installs_offline_with_named_categories_primitives_and_distractors():
    catalog = default_catalog()
    assert len(catalog.category(DISTRACTOR)) == 999  # one of random_urdfs has NaN vertices
    assert set(OBJECT_CATEGORIES) | {"table", "tray"} <= set(catalog.categories())
    for entry in catalog:
        assert entry.render_mesh.exists() and entry.collision_mesh.exists()
    for category in OBJECT_CATEGORIES:
        for entry in catalog.category(category):
            assert 0.02 < entry.nominal_size < 0.15, entry.asset_id


def test_visual_parameters_change_pixels_but_not_the_scene(tmp_path):
    gen = TabletopGenerator()
    base = {"n_objects": 5, "resolution": 64, "n_frames": 2, "start_time": 0.2}
    plain = gen.run(gen.Params(**base), 4, tmp_path)
    styled = gen.run(
        gen.Params(
            **base,
            color_jitter=1.0,
            object_texture="random",
            table_texture="checker",
            light_azimuth=200,
            light_temperature=3000,
            sensor_noise=0.05,
        ),
        4,
        tmp_path,
    )
    pose = ["frame", "instance_id", "category", "x", "y", "z", "qw", "qx", "qy", "qz"]
    assert styled.objects.select(pose).equals(plain.objects.select(pose))
    assert styled.frames.column("brightness") != plain.frames.column("brightness")


@pytest.mark.parametrize("motion", ["orbit", "handheld"])
def test_a_moving_camera_moves_only_the_camera(tmp_path, motion):
    """Each frame is seen from the camera path's pose (as the frames table records it); an
    orbit keeps the distance and elevation and turns the azimuth at its speed, a handheld
    camera stays put and turns by about its shake; the objects move as with a static camera."""
    gen = TabletopGenerator()
    base = {"resolution": 64, "n_frames": 4, "frame_rate": 8, "start_time": 0.2}
    moving = gen.Params(**base, camera_motion=motion, orbit_speed=40, shake=3)
    still = gen.run(gen.Params(**base), 2, tmp_path)
    result = gen.run(moving, 2, tmp_path)
    assert result.objects.select(["x", "y", "z"]).equals(still.objects.select(["x", "y", "z"]))
    frames = result.frames.to_pylist()
    eyes = np.array([[f["cam_x"], f["cam_y"], f["cam_z"] - 0.03] for f in frames])  # from target
    looks = [
        Rotation.from_quat([f["cam_qw"], f["cam_qx"], f["cam_qy"], f["cam_qz"]], scalar_first=True)
        for f in frames
    ]
    if motion == "orbit":
        np.testing.assert_allclose(np.linalg.norm(eyes, axis=1), moving.camera_distance)
        azimuths = np.degrees(np.unwrap(np.arctan2(eyes[:, 1], eyes[:, 0])))
        np.testing.assert_allclose(np.diff(azimuths), 40 / 8)
    else:
        np.testing.assert_allclose(eyes, np.tile(eyes[0], (4, 1)))  # it turns, it does not walk
        turns = [np.degrees((looks[0].inv() * r).magnitude()) for r in looks[1:]]
        assert 0 < max(turns) <= 2 * 3  # two shakes: frame 0 is itself off the centre


def test_the_job_description_records_what_drew_it_and_the_assets_sizes(tabletop_job):
    with zipfile.ZipFile(tabletop_job.archive) as z:
        job = json.loads(z.read("job.json"))
    assert job["render_backend"] == "pybullet-tiny"  # the default on every machine, GPU or not
    catalog = default_catalog()
    for asset_id, asset in job["assets"].items():
        assert asset["dimensions_m"] == list(catalog[asset_id].dimensions)
