"""A Cycles job of ``falling_objects`` versus a bare Kubric render of the same scene, and the
fast renderer's preview of the same job.

Both Cycles runs are whole processes timed from outside: Vario's job (render worker, labels,
PNG and H.264 encoding, Parquet, COCO, the zip) and ``bare_kubric.py`` (the same Kubric scene
rendered by Kubric's own loop, nothing written). Defaults are Kubric's MOVi settings:
256x256, 24 frames, 64 samples per pixel.

    uv run python benchmarks/cycles_vs_bare_kubric.py [--frames 24] [--samples 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from generators.library.falling_objects import FallingObjectsGenerator

TARGET = 1.10
SEED = 3


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    args = parser.parse_args()
    gen = FallingObjectsGenerator()
    settings = {
        "resolution": args.resolution,
        "n_frames": args.frames,
        "samples": args.samples,
        "device": args.device,
        "renderer": "cycles",
    }
    params = gen.Params(**settings)
    here = Path(__file__).parent
    with tempfile.TemporaryDirectory() as out:
        vario = [
            sys.executable,
            "-m",
            "dagster_project.cli",
            "run",
            "falling_objects",
            *[f"--set={k}={v}" for k, v in settings.items()],
            "--seed",
            str(SEED),
            "--out",
            out,
        ]
        bare = [
            sys.executable,
            str(here / "bare_kubric.py"),
            "falling_objects",
            json.dumps(params.model_dump(mode="json")),
            str(SEED),
        ]
        bare_s = timed(bare)
        final_s = timed(vario)
        preview_s = timed([*vario, "--preview"])
    f = args.frames
    print(
        f"falling_objects {args.resolution}x{args.resolution}, {f} frames, "
        f"{args.samples} spp, device={args.device} (whole processes, imports included)"
    )
    print(f"  bare Kubric render: {bare_s / f:7.2f} s/frame  ({bare_s:.1f} s)")
    print(f"  Vario Cycles job:   {final_s / f:7.2f} s/frame  ({final_s:.1f} s)")
    print(f"  ratio Vario / bare: {final_s / bare_s:.3f}  (target <= {TARGET})")
    print(
        f"  Vario preview (tiny): {preview_s / f:7.3f} s/frame  ({preview_s:.1f} s); "
        f"speed-up of preview over final: {final_s / preview_s:.1f}x"
    )


if __name__ == "__main__":
    main()
