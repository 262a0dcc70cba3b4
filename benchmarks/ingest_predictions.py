"""Ingesting 1,000,000 predictions: seconds and peak memory, from Parquet and from COCO results
JSON, against a small real dataset (issue 13's target: under 10 s and 1 GiB each).

    uv run python benchmarks/ingest_predictions.py [--rows 1000000] [--images 200] [--masks]

A data folder is made in a temporary directory with a real dataset of ``--images`` generated
PNGs (640 x 480, one annotated cube each), ingested with ``vario.ingest.real``; then seeded
random predictions on it (boxes inside the images, scores in [0, 1], 5 categories), written
once as Parquet (``job_id, frame, category, score, box_*``, row groups of 128 Ki rows) and once
as a COCO results JSON list (``image_id, category_id, bbox, score``). ``--masks`` gives every
prediction a mask too (one of 64 rectangles' compressed RLE), which ingest checks run by run.
Each file is ingested in a fresh process (``spawn``), so the peak resident memory it reports
(``VmHWM``) is that ingest's own, imports included; ``base`` is that process's resident
memory just before the ingest started.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WIDTH, HEIGHT = 640, 480
CATEGORIES = ["cube", "sphere", "mug", "duck", "torus"]
TARGET_SECONDS, TARGET_MIB = 10.0, 1024


def make_dataset(root: Path, images: int) -> tuple[Path, list[int]]:
    """A data folder holding real dataset ``bench``: generated PNGs and a COCO file."""
    from vario.ingest.real import ingest_coco_dataset
    from vario.store.layout import DataStore

    rng = np.random.default_rng(0)
    folder = root / "coco" / "images"
    folder.mkdir(parents=True)
    entries, annotations = [], []
    ramp = np.linspace(0, 255, WIDTH, dtype=np.float32)[None, :, None]
    for i in range(images):
        noise = rng.integers(0, 40, (HEIGHT, WIDTH, 3))
        rgb = np.clip(ramp * (i % 7 + 1) / 7 + noise, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:05d}.png"), rgb, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        entries.append(
            {"id": 100 + i, "file_name": f"{i:05d}.png", "width": WIDTH, "height": HEIGHT}
        )
        annotations.append(
            {"id": i + 1, "image_id": 100 + i, "category_id": 1, "bbox": [10, 20, 30, 40]}
        )
    coco = {
        "images": entries,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CATEGORIES)],
    }
    (root / "coco" / "instances.json").write_text(json.dumps(coco))
    data = root / "data"
    ingest_coco_dataset(DataStore(data), "bench", root / "coco" / "instances.json", folder)
    return data, [e["id"] for e in entries]


def _masks(rng: np.random.Generator) -> list[str]:
    from pycocotools import mask as mask_utils

    out = []
    for _ in range(64):
        m = np.zeros((HEIGHT, WIDTH), np.uint8, order="F")
        x, y = rng.integers(0, WIDTH - 100), rng.integers(0, HEIGHT - 100)
        m[y : y + rng.integers(5, 100), x : x + rng.integers(5, 100)] = 1
        out.append(mask_utils.encode(m)["counts"].decode())
    return out


def make_predictions(
    root: Path, data: Path, image_ids: list[int], rows: int, masks: bool
) -> tuple[Path, Path]:
    """The same ``rows`` predictions as Parquet and as COCO results JSON."""
    frames = pq.read_table(next((data / "real" / "dataset=bench").glob("version=*/frames.parquet")))
    keys = dict(zip(frames["image_id"].to_pylist(), frames["job_id"].to_pylist(), strict=True))
    rng = np.random.default_rng(1)
    image = rng.integers(0, len(image_ids), rows)
    category = rng.integers(0, len(CATEGORIES), rows)
    w = rng.uniform(4, 200, rows).round(2)
    h = rng.uniform(4, 200, rows).round(2)
    x = (rng.random(rows) * (WIDTH - w)).round(2)
    y = (rng.random(rows) * (HEIGHT - h)).round(2)
    score = rng.random(rows).round(4)
    shapes = _masks(rng) if masks else None
    mask = rng.integers(0, 64, rows) if masks else None
    job_ids = np.array([keys[i] for i in image_ids])[image]
    table = pa.table(
        {
            "job_id": job_ids,
            "frame": np.zeros(rows, np.int32),
            "category": np.array(CATEGORIES)[category],
            "score": score,
            "box_x": x,
            "box_y": y,
            "box_w": w,
            "box_h": h,
            **({"mask_rle": np.array(shapes, dtype=object)[mask]} if masks else {}),
        }
    )
    parquet = root / "predictions.parquet"
    pq.write_table(table, parquet, row_group_size=128 * 1024, compression="zstd")
    results = root / "predictions.json"
    ids = np.array(image_ids)[image]
    with results.open("w") as out:
        out.write("[\n")
        for i in range(rows):
            segmentation = (
                f', "segmentation": {{"size": [{HEIGHT}, {WIDTH}], '
                f'"counts": {json.dumps(shapes[mask[i]])}}}'
                if masks
                else ""
            )
            out.write(
                f'{{"image_id": {ids[i]}, "category_id": {category[i] + 1}, '
                f'"bbox": [{x[i]}, {y[i]}, {w[i]}, {h[i]}], "score": {score[i]}{segmentation}}}'
                + (",\n" if i < rows - 1 else "\n")
            )
        out.write("]\n")
    return parquet, results


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM; ``ru_maxrss`` where /proc lacks it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ingest(data: str, model: str, source: str, queue) -> None:
    """In a fresh process: one ingest, its seconds, peak and starting resident memory."""
    from vario.ingest.predictions import ingest_predictions
    from vario.store.layout import DataStore

    base = _rss_mib()
    start = time.perf_counter()
    summary = ingest_predictions(DataStore(Path(data)), model, "bench", Path(source))
    seconds = time.perf_counter() - start
    peak = _peak_mib()
    queue.put((seconds, peak, base, summary.rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--masks", action="store_true", help="Every prediction with a mask.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vario-bench-ingest-") as tmp:
        root = Path(tmp)
        data, image_ids = make_dataset(root, args.images)
        parquet, results = make_predictions(root, data, image_ids, args.rows, args.masks)
        sizes = {p.suffix[1:]: p.stat().st_size / 2**20 for p in (parquet, results)}
        print(
            f"{args.rows:,} predictions on {args.images} images "
            f"({'with' if args.masks else 'without'} masks): Parquet {sizes['parquet']:.0f} MiB, "
            f"JSON {sizes['json']:.0f} MiB"
        )
        spawn = multiprocessing.get_context("spawn")
        for model, source in (("from_parquet", parquet), ("from_json", results)):
            queue = spawn.Queue()
            child = spawn.Process(target=_ingest, args=(str(data), model, str(source), queue))
            child.start()
            seconds, peak, base, n = queue.get()
            child.join()
            ok = seconds < TARGET_SECONDS and peak < TARGET_MIB
            print(
                f"{source.suffix[1:]:>8}: {n:,} rows in {seconds:.2f} s, peak {peak:.0f} MiB "
                f"(base {base:.0f} MiB) {'OK' if ok else 'OVER TARGET'} "
                f"(target < {TARGET_SECONDS:g} s, < {TARGET_MIB} MiB)"
            )


if __name__ == "__main__":
    main()
