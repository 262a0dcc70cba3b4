"""Texture images for domain randomization: procedural patterns and images from a folder.

A texture is drawn once (``draw_texture``): a small, JSON-able ``TextureDraw`` that a job's
description records. Its pixels are made from the draw alone (``texture_pixels``), the same
every time, so a recorded draw can be looked at again long after the job. PyBullet and Blender
read textures from files, so ``texture_file`` writes a draw once into the cache folder as a
PNG; a background takes the pixels at the image's size.

Images from a user's folder are checked from their headers (``check_image``) before anything
decodes them: a huge or mislabelled file is a parameter error when a batch is set up, not a
render worker that runs out of memory in the middle of one.

The noise patterns give each point of an unbounded lattice its random values by hashing it
through a permutation (Perlin 1985), so any scale and any rotation find random values wherever
the image falls; the pattern repeats only every ``_PERIOD`` cells.
"""

from __future__ import annotations

import colorsys
import contextlib
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from generators.settings import settings

TEXTURE_KINDS: tuple[str, ...] = (
    "flat",
    "checker",
    "stripes",
    "gradient",
    "noise",
    "perlin",
    "voronoi",
    "image",
)
PROCEDURAL_KINDS = TEXTURE_KINDS[:-1]  # everything but "image"
MAX_IMAGE_PIXELS = 40_000_000  # a folder image larger than this is refused before decoding
MAX_FOLDER_IMAGES = 10_000  # more image files than this in a folder is refused

_SUFFIXES = (".png", ".jpg", ".jpeg")
# "MPO" is how Pillow names the JPEGs many phone cameras write (a JPEG with a second image).
_FORMATS = ("PNG", "JPEG", "MPO")
_PERIOD = 256  # lattice cells before a noise pattern repeats (a power of two)
_MASK = _PERIOD - 1
_OCTAVES = 4  # Perlin octaves, each twice the frequency and half the amplitude of the last
_BORDER = 0.04  # half-width of a Voronoi border, in cells
_BORDER_SHADE = 0.2  # how bright a Voronoi border is, relative to its cell


@dataclass(frozen=True)
class TextureDraw:
    """One texture as drawn: everything needed to make its pixels again, JSON-able via
    ``dataclasses.asdict``.

    ``color`` and ``color2`` are sRGB in [0, 1] (the patterns blend between them), ``scale``
    the pattern cells (or noise features) across the image (at least 1), ``rotation`` the
    pattern's rotation about the image centre in degrees, ``seed`` (0 to 2**31 - 1) the noise,
    Voronoi points and image crop, and ``source`` the image file of kind ``"image"``.
    """

    kind: str
    color: tuple[float, float, float]
    color2: tuple[float, float, float]
    scale: float
    rotation: float
    seed: int
    source: str | None = None


def draw_texture(
    rng: np.random.Generator,
    kinds: Sequence[str],
    *,
    scale: tuple[float, float] = (2.0, 8.0),
    rotation: tuple[float, float] = (0.0, 180.0),
    hue: float | None = None,
    hue_jitter: float = 0.0,
    images: Sequence[Path] = (),
) -> TextureDraw:
    """A texture drawn from ``rng``: a kind uniformly from ``kinds``, a saturated primary
    colour (of hue ``hue``, give or take ``hue_jitter / 2`` turns, when given) and a
    contrasting second one, ``scale`` and ``rotation`` uniform in their ranges, a pattern seed,
    and for kind ``"image"`` a file uniformly from ``images``.

    Every value is drawn, in the same order and from the same amount of the stream, whatever
    the kind and however many ``kinds`` or ``images`` there are: a change to one of them moves
    no other value drawn after it. ``"image"`` in ``kinds`` needs ``images`` (ValueError).
    """
    _check_kinds(kinds, images)
    _check_range("scale", scale, least=1.0)
    _check_range("rotation", rotation)
    if not 0.0 <= hue_jitter <= 1.0:
        raise ValueError(f"hue_jitter must be in [0, 1] turns, not {hue_jitter}")
    kind = kinds[_index(rng.uniform(), len(kinds))]
    drawn_hue = float(rng.uniform())
    saturation = float(rng.uniform(0.5, 1.0))
    value = float(rng.uniform(0.5, 1.0))
    second = rng.uniform(size=3)
    drawn_scale = float(rng.uniform(*scale))
    drawn_rotation = float(rng.uniform(*rotation))
    seed = int(rng.integers(2**31))
    image = _index(rng.uniform(), len(images))
    primary = drawn_hue if hue is None else (hue + (drawn_hue - 0.5) * hue_jitter) % 1.0
    return TextureDraw(
        kind=kind,
        color=_rgb(primary, saturation, value),
        color2=_contrasting(primary, value, second),
        scale=drawn_scale,
        rotation=drawn_rotation,
        seed=seed,
        source=str(images[image]) if kind == "image" else None,
    )


def _check_kinds(kinds: Sequence[str], images: Sequence[Path]) -> None:
    """Kinds are known ones, at least one, and ``"image"`` only with images to draw from."""
    unknown = [kind for kind in kinds if kind not in TEXTURE_KINDS]
    if not kinds or unknown:
        raise ValueError(f"texture kinds must be some of {TEXTURE_KINDS}, not {list(kinds)}")
    if "image" in kinds and not images:
        raise ValueError("texture kind 'image' needs images (a folder of PNG or JPEG files)")


def _check_range(name: str, bounds: tuple[float, float], least: float = -math.inf) -> None:
    low, high = bounds
    if not least <= low <= high:  # NaN fails too
        floor = f", low at least {least}" if least > -math.inf else ""
        raise ValueError(f"{name} range must be (low, high) with low <= high{floor}: {bounds}")


def _index(uniform: float, count: int) -> int:
    """An index in ``range(count)`` from one uniform draw (0 when there is nothing to index):
    unlike ``rng.integers(count)``, it uses the same amount of the stream for every count."""
    return min(int(uniform * count), max(count - 1, 0))


def _rgb(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
    return (float(red), float(green), float(blue))


def _contrasting(hue: float, value: float, uniforms: np.ndarray) -> tuple[float, float, float]:
    """A second colour that stands out from the first: a hue a quarter to three quarters of a
    turn away and 30 to 70 % darker, so the pattern shows whatever the two colours are."""
    offset, saturation, darker = uniforms
    return _rgb(
        (hue + 0.25 + 0.5 * offset) % 1.0, 0.3 + 0.7 * saturation, value * (0.3 + 0.4 * darker)
    )


def texture_pixels(draw: TextureDraw, width: int, height: int | None = None) -> np.ndarray:
    """The texture as a uint8 sRGB array (height, width, 3); ``height`` defaults to ``width``.

    The same draw and size give the same pixels. Patterns are measured in the image's longer
    side (cells stay square on a non-square image) and rotate about its centre.
    """
    height = width if height is None else height
    if width < 1 or height < 1:
        raise ValueError(f"texture size must be positive, not {width} x {height}")
    if draw.kind == "image":
        return _image_pixels(draw, width, height)
    if draw.kind not in _PATTERNS:
        raise ValueError(f"unknown texture kind {draw.kind!r}: one of {TEXTURE_KINDS}")
    u, v = _plane(draw, width, height)
    return _to_uint8(_PATTERNS[draw.kind](draw, u, v))


def _plane(draw: TextureDraw, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in pattern cells, about the image centre, rotated by ``draw.rotation``."""
    side = max(width, height)
    x = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) * (draw.scale / side)
    y = (np.arange(height, dtype=np.float32) + 0.5 - height / 2) * (draw.scale / side)
    cos, sin = math.cos(math.radians(draw.rotation)), math.sin(math.radians(draw.rotation))
    u = cos * x[None, :] + sin * y[:, None]
    v = cos * y[:, None] - sin * x[None, :]
    return u, v


def _blend(draw: TextureDraw, weight: np.ndarray) -> np.ndarray:
    """``color`` where ``weight`` is 0, ``color2`` where it is 1, linear in between."""
    first = np.asarray(draw.color, dtype=np.float32)
    second = np.asarray(draw.color2, dtype=np.float32)
    return first + weight[..., None] * (second - first)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _flat(draw: TextureDraw, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _blend(draw, np.zeros_like(u))


def _checker(draw: TextureDraw, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _blend(draw, (np.floor(u) + np.floor(v)) % 2)


def _stripes(draw: TextureDraw, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _blend(draw, np.floor(u) % 2)


def _gradient(draw: TextureDraw, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """From ``color`` to ``color2`` along the rotated axis, end to end of the image."""
    extent = max(np.abs(u).max(), 1e-9)
    return _blend(draw, 0.5 + 0.5 * u / extent)


def _noise(draw: TextureDraw, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Value noise: a random value per lattice point, smoothly interpolated between them."""
    rng = np.random.default_rng(draw.seed)
    permutation, values = rng.permutation(_PERIOD), rng.uniform(size=_PERIOD)
    lattice = _lattice(u, v)
    table = lattice.table(permutation, values)
    return _blend(draw, lattice.smooth(lambda dx, dy: lattice.at(table, dx, dy)))


def _perlin(draw: TextureDraw, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Gradient noise in ``_OCTAVES`` octaves (fractal noise), each with its own lattice."""
    rng = np.random.default_rng(draw.seed)
    total = np.zeros_like(u)
    for octave in range(_OCTAVES):
        permutation = rng.permutation(_PERIOD)
        angles = rng.uniform(0.0, 2.0 * math.pi, size=_PERIOD)
        total += 0.5**octave * _gradient_noise(
            _lattice(u * 2**octave, v * 2**octave), permutation, angles
        )
    # the octaves' sum lies mostly within +-0.5: about 0.5, it spans the two colours (some
    # 2 % of the pixels at each end are clipped to one colour)
    return _blend(draw, np.clip(0.5 + total, 0.0, 1.0))


def _gradient_noise(lattice: _Lattice, permutation: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Perlin noise: a random unit gradient per lattice point, its ramps blended smoothly."""
    gx, gy = lattice.table(permutation, np.cos(angles)), lattice.table(permutation, np.sin(angles))

    def ramp(dx: int, dy: int) -> np.ndarray:
        x, y = lattice.fx - dx, lattice.fy - dy
        return lattice.at(gx, dx, dy) * x + lattice.at(gy, dx, dy) * y

    return lattice.smooth(ramp)


def _voronoi(draw: TextureDraw, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Cells around one random point per lattice cell (Worley 1996), each a random blend of
    the two colours; the seed decides whether the borders between cells are drawn dark.

    A point lies in its own cell, so the nearest two are among the 3 x 3 cells around a pixel:
    nine distances per pixel, however many cells the image holds.
    """
    rng = np.random.default_rng(draw.seed)
    permutation, jitter = rng.permutation(_PERIOD), rng.uniform(size=(2, _PERIOD))
    shades, borders = rng.uniform(size=_PERIOD), rng.uniform() < 0.5
    lattice = _lattice(u, v)
    jx, jy, shade = (lattice.table(permutation, values) for values in (*jitter, shades))

    def point(dx: np.ndarray | int, dy: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Where the point of the cell (dx, dy) away lies, from the pixel."""
        return dx + lattice.at(jx, dx, dy) - lattice.fx, dy + lattice.at(jy, dx, dy) - lattice.fy

    dx, dy = np.array([-1, 0, 1] * 3), np.repeat([-1, 0, 1], 3)
    distances = np.stack([np.square(point(x, y)).sum(axis=0) for x, y in zip(dx, dy, strict=True)])
    first = np.argmin(distances, axis=0)
    rgb = _blend(draw, lattice.at(shade, dx[first], dy[first]))
    if not borders:
        return rgb
    np.put_along_axis(distances, first[None], np.inf, axis=0)
    second = np.argmin(distances, axis=0)
    (x1, y1), (x2, y2) = point(dx[first], dy[first]), point(dx[second], dy[second])
    # the distance from the pixel to the bisector of its nearest two points
    edge = (x2**2 + y2**2 - x1**2 - y1**2) / (2.0 * np.hypot(x2 - x1, y2 - y1))
    return rgb * np.where(edge < _BORDER, _BORDER_SHADE, 1.0)[..., None]


@dataclass(frozen=True)
class _Lattice:
    """The unit lattice under an image: each pixel's cell, as an index into a table of the
    lattice points around the image (one cell of margin all round), and its place in the cell.

    A value per lattice point is hashed once per point into the table, then looked up for
    each pixel: far fewer hashes than pixels.
    """

    index: np.ndarray  # (height, width): the pixel's cell in the flattened table
    fx: np.ndarray  # (height, width): where in its cell the pixel lies, in [0, 1)
    fy: np.ndarray
    x: np.ndarray  # the table's lattice columns
    y: np.ndarray  # and rows

    def table(self, permutation: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``values`` (one per hash) at each lattice point of the table, flattened."""
        hashes = permutation[(permutation[self.x[None, :] & _MASK] + self.y[:, None]) & _MASK]
        return values.astype(np.float32)[hashes].ravel()

    def at(self, table: np.ndarray, dx: np.ndarray | int, dy: np.ndarray | int) -> np.ndarray:
        """``table`` at the lattice point (dx, dy) cells from each pixel's cell corner."""
        return np.take(table, self.index + (dy * len(self.x) + dx))

    def smooth(self, corner: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """The four corner values of each pixel's cell, interpolated with Perlin's quintic
        6t^5 - 15t^4 + 10t^3 (smooth, no creases at cell edges)."""
        sx, sy = (t * t * t * (t * (t * 6.0 - 15.0) + 10.0) for t in (self.fx, self.fy))
        top = corner(0, 0) + sx * (corner(1, 0) - corner(0, 0))
        bottom = corner(0, 1) + sx * (corner(1, 1) - corner(0, 1))
        return top + sy * (bottom - top)


def _lattice(u: np.ndarray, v: np.ndarray) -> _Lattice:
    iu, iv = np.floor(u), np.floor(v)
    cu, cv = iu.astype(np.int64), iv.astype(np.int64)
    x = np.arange(cu.min() - 1, cu.max() + 2)
    y = np.arange(cv.min() - 1, cv.max() + 2)
    index = (cv - y[0]) * len(x) + (cu - x[0])
    return _Lattice(index=index, fx=u - iu, fy=v - iv, x=x, y=y)


_PATTERNS: dict[str, Callable[[TextureDraw, np.ndarray, np.ndarray], np.ndarray]] = {
    "flat": _flat,
    "checker": _checker,
    "stripes": _stripes,
    "gradient": _gradient,
    "noise": _noise,
    "perlin": _perlin,
    "voronoi": _voronoi,
}


def _image_pixels(draw: TextureDraw, width: int, height: int) -> np.ndarray:
    """The source image scaled to cover the size, cropped at a place the seed picks, and
    turned by a multiple of 90 degrees the seed picks too."""
    if draw.source is None:
        raise ValueError("a texture of kind 'image' needs a source file")
    rng = np.random.default_rng(draw.seed)
    turns, (across, down) = int(rng.integers(4)), rng.uniform(size=2)
    w, h = (width, height) if turns % 2 == 0 else (height, width)  # the size before turning
    path = Path(draw.source)
    with _opened(path) as image:
        image.draft("RGB", (w, h))  # a JPEG decodes at a reduced scale still covering the size
        rgb = image.convert("RGB")
    factor = max(w / rgb.width, h / rgb.height)
    size = (max(w, round(rgb.width * factor)), max(h, round(rgb.height * factor)))
    covered = rgb.resize(size, Image.Resampling.LANCZOS)
    left, top = int(across * (size[0] - w)), int(down * (size[1] - h))
    crop = np.asarray(covered.crop((left, top, left + w, top + h)))
    return np.ascontiguousarray(np.rot90(crop, turns))


def texture_file(draw: TextureDraw, size: int = 256, cache: Path | None = None) -> Path:
    """The texture as a ``size`` x ``size`` PNG in the cache folder ``cache`` (default the
    settings' ``cache_dir``; a scene of many textures reads the settings once and passes it)
    as ``<cache>/textures/drawn/<digest>.png``, written once and then reused.

    It is written under a temporary name in the same folder and then renamed into place, so
    concurrent workers drawing the same texture never read a half-written file. PNG's
    fastest compression: a drawn texture is written once per draw and read once.
    """
    cache = settings().cache_dir if cache is None else cache
    target = cache / "textures" / "drawn" / f"{_digest(draw, size)}.png"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial.png")
    try:
        Image.fromarray(texture_pixels(draw, size)).save(partial, format="PNG", compress_level=1)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _digest(draw: TextureDraw, size: int) -> str:
    """The file name of a draw at a size. An image's own size and modification time are in
    it too, so a file replaced in the user's folder is not served from an old copy."""
    stamp = None
    if draw.source is not None:
        status = Path(draw.source).stat()
        stamp = [status.st_size, status.st_mtime_ns]
    key = json.dumps([asdict(draw), size, stamp], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def image_folder(folder: Path | str) -> tuple[Path, ...]:
    """The PNG and JPEG files (``.png``, ``.jpg``, ``.jpeg``, any case) directly in ``folder``,
    sorted by name, each checked with ``check_image``.

    Hidden files (a name starting with ".", such as the "._name.jpg" files macOS leaves on
    shared drives) and links to files outside the folder are not its images. ValueError when
    the folder is missing or not a folder, holds no image or more than ``MAX_FOLDER_IMAGES``,
    or any image fails its check.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist or is not a folder")
    root = root.resolve()
    images = sorted(_image_files(root), key=lambda path: path.name)
    if not images:
        raise ValueError(f"image folder {root} holds no PNG or JPEG image")
    for path in images:
        check_image(path)
    return tuple(images)


def _image_files(root: Path) -> list[Path]:
    found = []
    for entry in root.iterdir():
        if entry.name.startswith(".") or entry.suffix.lower() not in _SUFFIXES:
            continue
        if _inside(entry, root):
            found.append(entry)
        if len(found) > MAX_FOLDER_IMAGES:
            raise ValueError(f"image folder {root} holds more than {MAX_FOLDER_IMAGES} images")
    return found


def _inside(entry: Path, root: Path) -> bool:
    """Whether ``entry``, links followed, is a file directly in ``root``."""
    try:
        target = entry.resolve(strict=True)
    except (OSError, RuntimeError):  # a broken link, or a loop of links
        return False
    return target.parent == root and target.is_file()


def check_image(path: Path) -> tuple[int, int]:
    """The image's (width, height), read from its header without decoding it. ValueError when
    the file is unreadable, neither PNG nor JPEG, or over ``MAX_IMAGE_PIXELS`` pixels."""
    with _opened(Path(path)) as image:
        return image.size


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """The image at ``path``, open and checked from its header: anything that goes wrong,
    then or while the caller decodes it, is a ValueError that names the file.

    Pillow's own decompression-bomb warning is an error here, should its limit ever be the
    lower one; and the size is checked on every opening, not once, as a file may change.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_header(image, path)
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(f"image {path} is over {MAX_IMAGE_PIXELS} pixels ({error})") from error
    except (OSError, SyntaxError) as error:
        raise ValueError(f"image {path} is not a readable PNG or JPEG ({error})") from error


def _check_header(image: Image.Image, path: Path) -> None:
    if image.format not in _FORMATS:
        raise ValueError(f"image {path} is {image.format}, not PNG or JPEG")
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"image {path} is {width} x {height}, over {MAX_IMAGE_PIXELS} pixels (MAX_IMAGE_PIXELS)"
        )
