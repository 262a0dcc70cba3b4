"""Domain randomization, on against off: the same 64-job ``clutter`` batch (same seeds, same
objects in the same places) rendered by the fast renderer with every randomizer at its
defaults, then with every range collapsed to one value (no drawn textures, one fixed sun, a
fixed camera, a grey background, no flying distractors).

Printed: the spread across images (standard deviation over images of the mean brightness,
of the background's mean hue, and of the hue of one category's objects) with the ratio on / off
(target: at least 3 each); what randomizing costs per job (the randomizers' own time, timed
apart from the scene's layout) as a share of the job's time (target: at most 10%); the
whole job time on and off; peak memory. Writes a contact sheet of the randomized batch to
``docs/randomization/contact-sheet.jpg`` (``--sheet`` to change).

    uv run python benchmarks/randomization.py [--jobs 64] [--resolution 256]
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from generators.labels.preview import contact_sheet
from generators.library.clutter import ClutterGenerator, ClutterParams

SPREAD_TARGET = 3.0
OVERHEAD_TARGET = 0.10
OFF = {
    "texture_share": 0.0,
    "roughness_min": 0.5, "roughness_max": 0.5,
    "metallic_min": 0.0, "metallic_max": 0.0,
    "specular_min": 0.5, "specular_max": 0.5,
    "light_count_min": 1, "light_count_max": 1, "light_kinds": ["sun"],
    "light_azimuth_min": 45.0, "light_azimuth_max": 45.0,
    "light_elevation_min": 60.0, "light_elevation_max": 60.0,
    "light_intensity_min": 1.0, "light_intensity_max": 1.0,
    "light_temperature_min": 6500.0, "light_temperature_max": 6500.0,
    "camera_distance_min": 0.55, "camera_distance_max": 0.55,
    "camera_elevation_min": 45.0, "camera_elevation_max": 45.0,
    "camera_azimuth_min": 0.0, "camera_azimuth_max": 0.0,
    "look_jitter": 0.0, "roll_max": 0.0, "fov_min": 45.0, "fov_max": 45.0,
    "background_kinds": ["plain"], "background_saturation_max": 0.0,
    "background_value_min": 0.4, "background_value_max": 0.4,
    "flying_distractors_min": 0, "flying_distractors_max": 0,
}  # fmt: skip


def _images(archive: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame 0's RGB, instance ids and depth (0 where no surface: the background)."""
    with zipfile.ZipFile(archive) as z:
        return tuple(
            np.asarray(Image.open(io.BytesIO(z.read(f"{kind}/00000.png"))))
            for kind in ("rgb", "segmentation", "depth")
        )


def _measures(archive: Path, categories: list[str]) -> tuple[float, float | None, dict]:
    """Mean brightness, the background's mean hue (degrees), and each visible object's mean
    RGB by its category (``categories[i - 1]`` is instance ``i``'s)."""
    rgb, ids, depth = _images(archive)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL).astype(float)
    background = depth == 0
    hue = None
    if background.any():  # circular mean of the hue, in degrees
        angle = hsv[..., 0][background] / 256 * 2 * np.pi
        hue = float(np.degrees(np.arctan2(np.sin(angle).mean(), np.cos(angle).mean())) % 360)
    colours: dict[str, list[np.ndarray]] = {}
    for instance in np.unique(ids[ids > 0]):
        colours.setdefault(categories[instance - 1], []).append(rgb[ids == instance].mean(axis=0))
    return float(rgb.mean()), hue, colours


def _hue(rgb: np.ndarray) -> float:
    """The hue (degrees) of a mean RGB colour."""
    pixel = np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(1, 1, 3)
    return float(cv2.cvtColor(pixel, cv2.COLOR_RGB2HSV_FULL)[0, 0, 0]) / 256 * 360


def _circular_std(degrees: list[float]) -> float:
    angles = np.radians(degrees)
    length = np.hypot(np.sin(angles).mean(), np.cos(angles).mean())
    return float(np.degrees(np.sqrt(max(0.0, -2 * np.log(max(length, 1e-12))))))


def run(jobs: int, resolution: int, overrides: dict, out: Path) -> dict:
    """Render the batch; returns per-job times, randomizer times and the spread measures."""
    generator = ClutterGenerator()
    params = ClutterParams(resolution=resolution, **overrides)
    plain = ClutterParams(resolution=resolution, **OFF)
    seconds, randomizing, archives, measures = [], [], [], []
    for seed in range(jobs):
        started = time.perf_counter()
        result = generator.run(params, seed, out)
        seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        generator.build_scene(params, seed)
        built = time.perf_counter() - started
        started = time.perf_counter()
        generator.build_scene(plain, seed)  # the layout and the collapsed randomizers
        randomizing.append(max(0.0, built - (time.perf_counter() - started)))
        archives.append(result.archive)
        scene = generator.build_scene(params, seed)
        measures.append(_measures(result.archive, [o.category for o in scene.labelled_objects]))
    hues = [h for _, h, _ in measures if h is not None]
    by_category: dict[str, list[np.ndarray]] = {}
    for _, _, colours in measures:
        for category, found in colours.items():
            by_category.setdefault(category, []).extend(found)
    spreads = [_circular_std([_hue(c) for c in found]) for found in by_category.values()]
    return {
        "seconds": seconds,
        "randomizing": randomizing,
        "archives": archives,
        "brightness": float(np.std([b for b, _, _ in measures])),
        "background_hue": _circular_std(hues) if hues else 0.0,
        "object_colour": float(np.mean(spreads)) if spreads else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--sheet", type=Path, default=Path("docs/randomization/contact-sheet.jpg"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ClutterGenerator().run(ClutterParams(resolution=64), 10**6, Path(tmp) / "warm")
        on = run(args.jobs, args.resolution, {}, Path(tmp) / "on")
        off = run(args.jobs, args.resolution, OFF, Path(tmp) / "off")
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        args.sheet.write_bytes(contact_sheet(on["archives"][:12], width=1024, columns=4))
    print(
        f"{args.jobs} clutter jobs at {args.resolution} px, fast renderer (tiny), same seeds; "
        "randomization on (defaults) against off (every range collapsed)"
    )
    print(f"{'spread across images':<34} {'on':>8} {'off':>8} {'ratio':>7}")
    for key, label in (
        ("brightness", "std of mean brightness (0-255)"),
        ("background_hue", "std of background hue (deg)"),
        ("object_colour", "std of a category's hue (deg)"),
    ):
        ratio = on[key] / off[key] if off[key] > 0 else float("inf")
        verdict = "met" if ratio >= SPREAD_TARGET else "MISSED"
        print(f"  {label:<32} {on[key]:8.2f} {off[key]:8.2f} {ratio:7.1f}  (>= 3: {verdict})")
    job_on, job_off = statistics.median(on["seconds"]), statistics.median(off["seconds"])
    randomizing = statistics.median(on["randomizing"])
    share = randomizing / job_on
    verdict = "met" if share <= OVERHEAD_TARGET else "MISSED"
    print(
        f"randomizers' own time per job: median {randomizing * 1000:.1f} ms = {share:.1%} of a "
        f"randomized job ({job_on * 1000:.0f} ms) (target <= 10%: {verdict}); "
        f"{randomizing / job_off:.1%} of a plain one ({job_off * 1000:.0f} ms)"
    )
    print(
        f"whole job, median: on {job_on * 1000:.0f} ms, off {job_off * 1000:.0f} ms "
        f"({job_on / job_off:.2f}x: more lights, distractors and textures to draw)"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak:.0f} MiB; contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
