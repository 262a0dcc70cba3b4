"""A job's labels as COCO instance annotations (loads in pycocotools)."""

from __future__ import annotations

import pyarrow as pa


def coco_dataset(frames: pa.Table, objects: pa.Table, info: dict, ids: dict[str, int]) -> dict:
    """Images are frames (id = frame + 1); boxes are ``[x, y, width, height]`` in pixels;
    ``ids`` are the catalog's category ids (``Catalog.category_ids``), the same in every job
    rendered with that catalog."""
    images = [
        {
            "id": f["frame"] + 1,
            "file_name": f["rgb_path"],
            "width": f["width"],
            "height": f["height"],
        }
        for f in frames.to_pylist()
    ]
    sizes = {f["frame"]: [f["height"], f["width"]] for f in frames.to_pylist()}
    annotations = []
    for n, o in enumerate(objects.to_pylist(), start=1):
        x0, y0 = o["box_x_min"], o["box_y_min"]
        annotations.append(
            {
                "id": n,
                "image_id": o["frame"] + 1,
                "category_id": ids[o["category"]],
                "segmentation": {"size": sizes[o["frame"]], "counts": o["mask_rle"]},
                "area": o["visible_pixels"],
                "bbox": [x0, y0, o["box_x_max"] - x0, o["box_y_max"] - y0],
                "iscrowd": 0,
                "instance_id": o["instance_id"],
                "occlusion": o["occlusion"],
                "truncation": o["truncation"],
            }
        )
    return {
        "info": info,
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name} for name, i in ids.items()],
    }
