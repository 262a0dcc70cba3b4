"""Augmentations on request (``vario export --augment spec.yaml``): each exported frame's RGB
image and its objects' masks transformed together by albumentations, seeded, and the labels
made again from the transformed masks.

A spec (YAML or JSON, bounded like every spec: ``generators.params.load_yaml_model``)::

    seed: 7                 # with the job id, frame and copy: which transform each copy gets
    copies: 2               # augmented copies per frame, 1..16
    keep_original: true     # the frame as rendered too, besides its copies
    transforms:             # each optional, each with a probability p in [0, 1]
      hflip: {p: 0.5}                       # geometric: mirror left-right
      vflip: {p: 0.1}                       #            mirror top-bottom
      crop: {side: 0.8, p: 0.5}             #            keep side x width by side x height
      scale: {range: [0.75, 1.25], p: 0.5}  #            resize the image by a factor
      brightness: {limit: 0.2, p: 0.8}      # photometric: +- share of the 0..255 range
      contrast: {limit: 0.2, p: 0.8}        #              +- share of contrast
      blur: {sigma: [0.5, 1.5], p: 0.3}     #              Gaussian, sigma in pixels
      noise: {std: [0.01, 0.05], p: 0.3}    #              Gaussian, std as share of 255
      jpeg: {quality: [50, 95], p: 0.3}     #              JPEG compression artefacts

Transforms run in that order (geometric, then photometric), whatever the file's order.

What an augmented copy is (``Augmenter.apply``):

- its stem is the frame's with ``_a{copy}`` (``{job}_{frame:05d}_a0``...); the original keeps
  its stem, so a copy never overwrites it;
- its RGB image is the transformed PNG (8-bit RGB, as the archive's);
- each object's ``mask_rle`` is its transformed mask (nearest-neighbour), re-encoded as
  column-major COCO RLE over the new image; ``visible_pixels`` its area; ``box_*`` its tight
  box (integer pixel edges, max exclusive: docs/conventions.md). An object whose mask is
  gone (cropped away) is dropped. Boxes are made from the masks, not transformed as boxes:
  the convention defines a box as the tight box of the visible mask, which a transformed box
  (after scaling, say) is not;
- its row's ``width``, ``height`` and intrinsics follow the geometric transforms, in
  continuous pixel coordinates (origin at the top-left corner): a crop at (x0, y0) moves the
  principal point to ``(cx - x0, cy - y0)`` (no longer at the image centre); a scale by
  ``W'/W``, ``H'/H`` (the new size over the old) multiplies ``fx, cx`` and ``fy, cy`` by them;
  a horizontal flip maps ``cx`` to ``W - cx`` (a vertical one ``cy`` to ``H - cy``) and keeps
  ``fx``, ``fy`` positive: the flipped image is that of the mirrored scene;
- everything else is the rendered frame's: the camera pose and the objects' 3D poses and
  boxes (the scene did not move), ``occlusion`` and ``truncation`` (not measured again: after
  a crop an object may be more truncated than its row says), the frame's image statistics.

Which formats take which transforms (``check_request``, before any work): geometric
transforms move pixels but not the 3D scene, so the 3D formats (``kitti``, ``bop``) take only
photometric ones, and so does a request for depth or segmentation images (``hf`` with
``extra=depth`` or ``segmentation``): an augmented frame carries only its RGB image. With
photometric transforms only, no pixel moves, and an augmented frame's depth and segmentation
images are the archive's (still exact); with a geometric transform in the spec, asking an
augmented frame for them raises ``ValueError`` (``ExportFrame.image``). ``bop`` names images
by frame number, so it takes exactly one copy in place of the original (``copies: 1``,
``keep_original: false``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pydantic import BaseModel, ConfigDict, Field, model_validator

from generators.labels.archive import encode_png
from generators.params import FieldErrors, load_yaml_model
from vario.export.frame import ExportFrame
from vario.export.select import ExportRequestError

if TYPE_CHECKING:
    import albumentations

MAX_COPIES = 16
GEOMETRIC = ("hflip", "vflip", "crop", "scale")
PHOTOMETRIC = ("brightness", "contrast", "blur", "noise", "jpeg")
THREE_D_FORMATS = ("kitti", "bop")  # labels in 3D: pixels may not move under them
PIXEL_ALIGNED = ("depth", "segmentation")  # images that only the archive holds


class AugmentSpecError(ExportRequestError, FieldErrors):
    """An augmentation spec that cannot be used; each message names the field and value."""


class _Transform(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    p: float = Field(0.5, ge=0, le=1, description="Probability that the transform runs.")


def _ordered(low: float, high: float, what: str) -> None:
    if low > high:
        raise ValueError(f"{what}: [low, high] with low <= high (got [{low}, {high}])")


class Flip(_Transform):
    pass


class Crop(_Transform):
    side: float = Field(
        0.8, ge=0.25, le=1, description="Share of the width and of the height kept."
    )


Factor = Annotated[float, Field(ge=0.5, le=2)]


class Scale(_Transform):
    range: tuple[Factor, Factor] = Field(
        (0.75, 1.25), description="Resize factor, drawn uniformly from [low, high]."
    )

    @model_validator(mode="after")
    def _low_high(self) -> Scale:
        _ordered(*self.range, "range")
        return self


class Shift(_Transform):
    limit: float = Field(0.2, gt=0, le=1, description="Largest change, either way.")


Sigma = Annotated[float, Field(ge=0.1, le=5)]


class Blur(_Transform):
    sigma: tuple[Sigma, Sigma] = Field((0.5, 1.5), description="Gaussian sigma, pixels.")

    @model_validator(mode="after")
    def _low_high(self) -> Blur:
        _ordered(*self.sigma, "sigma")
        return self


Std = Annotated[float, Field(ge=0, le=0.5)]


class Noise(_Transform):
    std: tuple[Std, Std] = Field((0.01, 0.05), description="Gaussian std, share of 255.")

    @model_validator(mode="after")
    def _low_high(self) -> Noise:
        _ordered(*self.std, "std")
        return self


Quality = Annotated[int, Field(ge=1, le=100)]


class Jpeg(_Transform):
    quality: tuple[Quality, Quality] = Field((50, 95), description="JPEG quality, 1..100.")

    @model_validator(mode="after")
    def _low_high(self) -> Jpeg:
        _ordered(*self.quality, "quality")
        return self


class Transforms(BaseModel):
    """The transforms asked for, each at most once, by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hflip: Flip | None = None
    vflip: Flip | None = None
    crop: Crop | None = None
    scale: Scale | None = None
    brightness: Shift | None = None
    contrast: Shift | None = None
    blur: Blur | None = None
    noise: Noise | None = None
    jpeg: Jpeg | None = None

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(map(str, set(data) - set(cls.model_fields)))
            if unknown:
                raise ValueError(
                    f"unknown transform(s) {', '.join(map(repr, unknown))}; transforms: "
                    f"{', '.join((*GEOMETRIC, *PHOTOMETRIC))}"
                )
        return data

    @model_validator(mode="after")
    def _some(self) -> Transforms:
        if not self.named():
            raise ValueError(
                f"at least one transform, among {', '.join((*GEOMETRIC, *PHOTOMETRIC))}"
            )
        return self

    def named(self) -> dict[str, _Transform]:
        """The transforms asked for, in the order they run."""
        return {n: t for n in (*GEOMETRIC, *PHOTOMETRIC) if (t := getattr(self, n)) is not None}


class AugmentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="With job, frame and copy: the draw.")
    copies: int = Field(1, ge=1, le=MAX_COPIES, description="Augmented copies per frame.")
    keep_original: bool = Field(True, description="Export the frame as rendered too.")
    transforms: Transforms

    @property
    def geometric(self) -> list[str]:
        """The geometric transforms that may run (probability above 0)."""
        return [n for n, t in self.transforms.named().items() if n in GEOMETRIC and t.p > 0]


def load_spec(path: Path | str) -> AugmentSpec:
    """The spec in ``path``, or ``AugmentSpecError`` naming the file and each bad field."""
    path = Path(path)
    try:
        spec = load_yaml_model(AugmentSpec, path, AugmentSpecError)
    except AugmentSpecError as exc:
        raise AugmentSpecError([f"--augment: {m}" for m in exc.messages]) from None
    except OSError as exc:
        raise AugmentSpecError([f"--augment: {path}: {exc.strerror or exc}"]) from None
    assert isinstance(spec, AugmentSpec)
    return spec


def _extras(options: dict[str, Any]) -> set[str]:
    extra = options.get("extra") or ()
    return set(extra.split(",") if isinstance(extra, str) else extra)


def check_request(spec: AugmentSpec, fmt: str, options: dict[str, Any]) -> None:
    """Refuses, with ``ExportRequestError``, a format or option an augmented frame cannot
    feed: geometric transforms under 3D labels or beside depth and segmentation images,
    more than one image per frame number in ``bop``."""
    moved = spec.geometric
    if moved and fmt in THREE_D_FORMATS:
        raise ExportRequestError(
            f"--augment: geometric transforms ({', '.join(moved)}) move pixels but not the 3D "
            f"scene, so {fmt}'s 3D labels would not match its images; {fmt} takes only "
            f"photometric transforms ({', '.join(PHOTOMETRIC)})"
        )
    wanted = sorted(_extras(options) & set(PIXEL_ALIGNED))
    if moved and wanted:
        raise ExportRequestError(
            f"--augment: geometric transforms ({', '.join(moved)}) with {', '.join(wanted)} "
            "images: an augmented frame carries only its RGB image; ask for photometric "
            "transforms only, or leave out those images"
        )
    if fmt == "bop" and (spec.copies != 1 or spec.keep_original):
        raise ExportRequestError(
            "--augment: bop names images by frame number, so it takes one augmented copy in "
            f"place of each frame (copies: 1, keep_original: false; got copies: {spec.copies}, "
            f"keep_original: {str(spec.keep_original).lower()})"
        )


def _albumentations():
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI call at import
    import albumentations

    return albumentations


def copy_seed(seed: int, job_id: str, frame: int, copy: int) -> int:
    """The 32-bit seed of one copy: the same for the same spec seed, job, frame and copy."""
    digest = hashlib.sha256(f"{seed}:{job_id}:{frame}:{copy}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class Augmenter:
    """Makes a frame's augmented copies with one ``albumentations.Compose`` per image size
    (a crop's size is in pixels), reseeded for every copy."""

    def __init__(self, spec: AugmentSpec):
        self.spec = spec
        self.geometric = bool(spec.geometric)
        self._composes: dict[tuple[int, int], albumentations.Compose] = {}

    def frames(self, frame: ExportFrame) -> Iterator[ExportFrame]:
        """The frame (if the spec keeps originals), then each of its copies."""
        if self.spec.keep_original:
            yield frame
        for copy in range(self.spec.copies):
            yield self.apply(frame, copy)

    def compose(self, height: int, width: int) -> albumentations.Compose:
        key = (height, width)
        if key not in self._composes:
            self._composes[key] = self._build(height, width)
        return self._composes[key]

    def _build(self, height: int, width: int) -> albumentations.Compose:
        A = _albumentations()
        made = []
        for name, t in self.spec.transforms.named().items():
            if name == "hflip":
                made.append(A.HorizontalFlip(p=t.p))
            elif name == "vflip":
                made.append(A.VerticalFlip(p=t.p))
            elif name == "crop":
                size = (max(1, round(t.side * height)), max(1, round(t.side * width)))
                made.append(A.RandomCrop(*size, p=t.p))
            elif name == "scale":
                low, high = t.range
                made.append(
                    A.RandomScale(
                        scale_limit=(low - 1, high - 1),
                        interpolation=cv2.INTER_LINEAR,
                        mask_interpolation=cv2.INTER_NEAREST,
                        p=t.p,
                    )
                )
            elif name in ("brightness", "contrast"):
                limits = {"brightness_limit": 0.0, "contrast_limit": 0.0}
                limits[f"{name}_limit"] = t.limit
                made.append(A.RandomBrightnessContrast(**limits, p=t.p))
            elif name == "blur":
                made.append(A.GaussianBlur(blur_limit=0, sigma_limit=t.sigma, p=t.p))
            elif name == "noise":
                made.append(A.GaussNoise(std_range=t.std, p=t.p))
            elif name == "jpeg":
                made.append(A.ImageCompression(quality_range=t.quality, p=t.p))
        return A.Compose(
            made,
            mask_interpolation=cv2.INTER_NEAREST,
            seed=self.spec.seed,
            save_applied_params=True,
        )

    def apply(self, frame: ExportFrame, copy: int) -> ExportFrame:
        """Copy ``copy`` of ``frame``: its image, masks, boxes and intrinsics transformed
        together, the same bytes for the same spec, job, frame and copy."""
        row = frame.row
        height, width = int(row["height"]), int(row["width"])
        bgr = cv2.imdecode(np.frombuffer(frame.image("rgb"), np.uint8), cv2.IMREAD_COLOR)
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if image.shape[:2] != (height, width):
            raise ValueError(f"frame {frame.stem}: RGB image is not {width} x {height}")
        masks = [
            mask_utils.decode({"size": [height, width], "counts": o["mask_rle"].encode()})
            for o in frame.objects
        ]
        compose = self.compose(height, width)
        compose.set_random_seed(copy_seed(self.spec.seed, frame.job_id, frame.frame, copy))
        out = compose(image=image, masks=masks)
        new_h, new_w = out["image"].shape[:2]
        camera = _intrinsics(row, out["applied_transforms"], (new_h, new_w))
        objects = []
        for obj, mask in zip(frame.objects, out["masks"], strict=True):
            labelled = _relabelled(obj, np.asarray(mask))
            if labelled is not None:
                objects.append(labelled)
        return replace(
            frame,
            row={**row, "width": new_w, "height": new_h, **camera},
            objects=objects,
            images={"rgb": encode_png(out["image"])},
            archive_images=not self.geometric,
            suffix=f"_a{copy}",
        )


def _intrinsics(
    row: dict[str, Any], applied: list[tuple[str, dict[str, Any]]], size: tuple[int, int]
) -> dict[str, float]:
    """``fx, fy, cx, cy`` after the geometric transforms that ran, in order; ``size`` is the
    final image's (height, width)."""
    fx, fy, cx, cy = (float(row[k]) for k in ("fx", "fy", "cx", "cy"))
    for name, params in applied:
        height, width = params["shape"][:2]  # the image's as the transform got it
        if name == "HorizontalFlip":
            cx = width - cx
        elif name == "VerticalFlip":
            cy = height - cy
        elif name == "RandomCrop":
            x0, y0, _, _ = params["crop_coords"]
            cx, cy = cx - x0, cy - y0
        elif name == "RandomScale":  # the last to change the size (GEOMETRIC's order)
            sy, sx = size[0] / height, size[1] / width  # cv2.resize: corners to corners
            fx, cx, fy, cy = fx * sx, cx * sx, fy * sy, cy * sy
    return {"fx": fx, "fy": fy, "cx": cx, "cy": cy}


def _relabelled(obj: dict[str, Any], mask: np.ndarray) -> dict[str, Any] | None:
    """The object's row with the box, area and RLE of its transformed mask; None if empty."""
    mask = mask.astype(bool)
    area = int(mask.sum())
    if area == 0:
        return None
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        **obj,
        "box_x_min": int(cols[0]),
        "box_y_min": int(rows[0]),
        "box_x_max": int(cols[-1]) + 1,
        "box_y_max": int(rows[-1]) + 1,
        "visible_pixels": area,
        "mask_rle": rle["counts"].decode("ascii"),
    }
