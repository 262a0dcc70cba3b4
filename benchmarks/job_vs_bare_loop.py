"""Full tabletop job versus a bare PyBullet loop, at 256x256 with 8 objects.

The bare loop is what a user would write by hand: one client with the same bodies and
textures, then per frame the physics steps and ``getCameraImage`` only. Its set-up is not
timed. The full job is timed end to end: scene, simulation, rendering, labels, PNG and H.264
encoding, Parquet, COCO, the zip. Both run alternately in the same process, and the report is
the ratio of their medians (the machine is noisy; absolute times drift).

    uv run python benchmarks/job_vs_bare_loop.py [--frames 48] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from generators.library.tabletop import TabletopGenerator
from generators.render.tiny import camera_image_args, choose_engine
from generators.scene.catalog import default_catalog
from generators.sim import bullet
from generators.sim.bullet import pb

TARGET = 1.5


def bare_loop(scene) -> float:
    """Seconds for the steps and ``getCameraImage`` calls of every frame."""
    catalog = default_catalog()
    client = bullet.connect()
    pb.setGravity(*scene.gravity, physicsClientId=client)
    pb.setTimeStep(1.0 / scene.step_rate, physicsClientId=client)
    textures: dict[str, int] = {}
    for obj in scene.objects:
        body = bullet.add_body(client, obj, catalog, visual=True, collision=True)
        if obj.material.texture:
            bullet.apply_texture(client, body, obj.material.texture, textures)
    args = camera_image_args(scene, choose_engine(client))
    steps = scene.step_rate // scene.frame_rate
    started = time.perf_counter()
    for frame in range(scene.frame_count):
        if frame:
            for _ in range(steps):
                pb.stepSimulation(physicsClientId=client)
        pb.getCameraImage(**args, physicsClientId=client)
    seconds = time.perf_counter() - started
    pb.disconnect(client)
    return seconds


def full_job(gen, params, seed, out) -> float:
    started = time.perf_counter()
    gen.run(params, seed, out)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    gen = TabletopGenerator()
    params = gen.Params(
        n_objects=8,
        n_distractors=0,
        resolution=args.resolution,
        n_frames=args.frames,
        start_time=0.0,
    )
    with tempfile.TemporaryDirectory() as out:
        full_job(gen, params, 0, out)  # warm-up: imports, catalog, primitives
        bare, full = [], []
        for seed in range(1, args.rounds + 1):
            bare.append(bare_loop(gen.build_scene(params, seed)))
            full.append(full_job(gen, params, seed, out))
    frames = args.frames
    bare_s, full_s = statistics.median(bare), statistics.median(full)
    ratio = full_s / bare_s
    print(
        f"tabletop {args.resolution}x{args.resolution}, 8 objects, {frames} frames, "
        f"{args.rounds} rounds (medians)"
    )
    print(f"  bare loop (steps + getCameraImage): {frames / bare_s:7.1f} fps")
    print(f"  full job (sim, render, labels, encode, write): {frames / full_s:7.1f} fps")
    print(
        f"  ratio full / bare: {ratio:.2f}  (target <= {TARGET})  "
        f"per round: {', '.join(f'{f / b:.2f}' for f, b in zip(full, bare, strict=True))}"
    )


if __name__ == "__main__":
    main()
