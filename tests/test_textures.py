"""Texture images (generators.randomize.textures): every pattern is a function of its draw
alone, draws use the stream alike whatever the kind, files are written once and atomically,
and folder images are checked from their headers before anything decodes them."""

from __future__ import annotations

import colorsys
import dataclasses
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from generators.randomize import textures
from generators.randomize.textures import (
    MAX_IMAGE_PIXELS,
    PROCEDURAL_KINDS,
    TEXTURE_KINDS,
    TextureDraw,
    check_image,
    draw_texture,
    image_folder,
    texture_file,
    texture_pixels,
)

RED, BLUE = (0.9, 0.1, 0.1), (0.1, 0.2, 0.8)


def _draw(kind: str = "checker", **fields: object) -> TextureDraw:
    values = {"color": RED, "color2": BLUE, "scale": 4.0, "rotation": 0.0, "seed": 7}
    return TextureDraw(kind=kind, **{**values, **fields})


def _png(path: Path, size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 50, 0)):
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


def _bomb(path: Path, width: int, height: int) -> Path:
    """A real 1 x 1 PNG whose header claims ``width`` x ``height`` (its CRC fixed to match)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"  # after the 8-byte signature and the chunk's length
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def _hue(color: tuple[float, float, float]) -> float:
    return colorsys.rgb_to_hsv(*color)[0]


# --- texture_pixels ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROCEDURAL_KINDS)
def test_pattern_is_a_function_of_its_draw_and_size(kind):
    draw = _draw(kind, rotation=30.0)
    pixels = texture_pixels(draw, 48, 32)
    assert pixels.shape == (32, 48, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, texture_pixels(dataclasses.replace(draw), 48, 32))
    assert texture_pixels(draw, 40).shape == (40, 40, 3)


@pytest.mark.parametrize("kind", ["noise", "perlin", "voronoi"])
def test_seed_changes_random_patterns(kind):
    first = texture_pixels(_draw(kind, seed=1), 64)
    second = texture_pixels(_draw(kind, seed=2), 64)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("kind", ["noise", "perlin", "voronoi", "gradient", "stripes"])
def test_patterns_use_both_colours(kind):
    pixels = texture_pixels(_draw(kind, rotation=20.0), 64).reshape(-1, 3).astype(float)
    red, blue = np.array(RED) * 255, np.array(BLUE) * 255
    nearer_red = np.linalg.norm(pixels - red, axis=1) < np.linalg.norm(pixels - blue, axis=1)
    assert 0.05 < nearer_red.mean() < 0.95


def test_flat_is_one_colour():
    pixels = texture_pixels(_draw("flat", rotation=45.0), 32)
    assert np.all(pixels == pixels[0, 0])
    assert np.abs(pixels[0, 0].astype(int) - np.rint(np.array(RED) * 255)).max() <= 1


def test_checker_has_exactly_its_two_colours():
    pixels = texture_pixels(_draw("checker", scale=5.0), 64)
    colours = np.unique(pixels.reshape(-1, 3), axis=0).astype(int)
    expected = np.rint(np.array([BLUE, RED]) * 255)  # np.unique sorts: blue's red is lower
    assert colours.shape == (2, 3) and np.abs(colours - expected).max() <= 1


def test_stripes_turned_a_quarter_are_the_stripes_transposed():
    upright = texture_pixels(_draw("stripes", scale=6.0, rotation=0.0), 64)
    turned = texture_pixels(_draw("stripes", scale=6.0, rotation=90.0), 64)
    assert not np.array_equal(upright, turned)
    assert np.mean(turned != upright.transpose(1, 0, 2)) < 0.01


def test_gradient_runs_from_colour_to_colour2_along_its_axis():
    pixels = texture_pixels(_draw("gradient"), 64).astype(float)
    assert np.allclose(pixels[:, 0], np.array(RED) * 255, atol=6)
    assert np.allclose(pixels[:, -1], np.array(BLUE) * 255, atol=6)
    assert np.array_equal(pixels[0], pixels[-1])  # rotation 0: constant down a column


def test_unknown_kind_and_empty_size_are_refused():
    with pytest.raises(ValueError, match="kind"):
        texture_pixels(_draw("marble"), 16)
    with pytest.raises(ValueError, match="size"):
        texture_pixels(_draw("flat"), 0)


# --- draw_texture --------------------------------------------------------------------------


def test_draw_is_deterministic_and_json_able():
    first = draw_texture(np.random.default_rng(3), PROCEDURAL_KINDS)
    assert first == draw_texture(np.random.default_rng(3), PROCEDURAL_KINDS)
    assert first != draw_texture(np.random.default_rng(4), PROCEDURAL_KINDS)
    fields = json.loads(json.dumps(dataclasses.asdict(first)))
    colors = {"color": tuple(fields["color"]), "color2": tuple(fields["color2"])}
    assert TextureDraw(**{**fields, **colors}) == first


def test_draw_respects_kinds_and_ranges():
    rng = np.random.default_rng(0)
    draws = [
        draw_texture(rng, ["checker", "voronoi"], scale=(3.0, 5.0), rotation=(10.0, 20.0))
        for _ in range(200)
    ]
    assert {d.kind for d in draws} == {"checker", "voronoi"}
    assert all(3.0 <= d.scale <= 5.0 and 10.0 <= d.rotation <= 20.0 for d in draws)
    assert all(0 <= d.seed < 2**31 and d.source is None for d in draws)
    assert all(0.0 <= c <= 1.0 for d in draws for c in (*d.color, *d.color2))


def test_kinds_do_not_shift_the_later_draws():
    """The same stream drawn with other kinds gives the same scale, rotation and seed."""
    one = draw_texture(np.random.default_rng(9), ["flat"])
    many = draw_texture(np.random.default_rng(9), PROCEDURAL_KINDS)
    assert (one.scale, one.rotation, one.seed) == (many.scale, many.rotation, many.seed)
    rng_one, rng_many = np.random.default_rng(9), np.random.default_rng(9)
    draw_texture(rng_one, ["flat"])
    draw_texture(rng_many, PROCEDURAL_KINDS)
    assert rng_one.uniform() == rng_many.uniform()


@pytest.mark.parametrize("hue, jitter", [(0.3, 0.0), (0.02, 0.1), (0.95, 0.2)])
def test_given_hue_is_the_primary_colours_hue(hue, jitter):
    rng = np.random.default_rng(1)
    for _ in range(50):
        drawn = _hue(draw_texture(rng, ["flat"], hue=hue, hue_jitter=jitter).color)
        assert abs((drawn - hue + 0.5) % 1.0 - 0.5) <= jitter / 2 + 1e-9


def test_bad_draw_arguments_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="image"):
        draw_texture(rng, ["flat", "image"])
    with pytest.raises(ValueError, match="kinds"):
        draw_texture(rng, ["marble"])
    with pytest.raises(ValueError, match="kinds"):
        draw_texture(rng, [])
    with pytest.raises(ValueError, match="scale"):
        draw_texture(rng, ["flat"], scale=(0.5, 2.0))
    with pytest.raises(ValueError, match="rotation"):
        draw_texture(rng, ["flat"], rotation=(90.0, 10.0))


def test_image_draw_takes_a_file_from_images(tmp_path):
    images = (_png(tmp_path / "a.png"), _png(tmp_path / "b.png"))
    draws = [draw_texture(np.random.default_rng(s), ["image"], images=images) for s in range(40)]
    assert {d.source for d in draws} == {str(p) for p in images}


# --- texture_file --------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """The cache folder in tmp_path (settings() reads the environment on every call)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("VARIO_CACHE_DIR", str(folder))
    return folder


def test_texture_file_is_written_once_as_a_png(cache, monkeypatch):
    draw = _draw("voronoi", rotation=15.0)
    path = texture_file(draw, 48)
    assert path.parent == cache / "textures" / "drawn" and path.suffix == ".png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (48, 48)
        assert np.array_equal(np.asarray(image.convert("RGB")), texture_pixels(draw, 48))
    stamp = path.stat().st_mtime_ns

    def fail(*args: object) -> None:
        raise AssertionError("an existing texture file is not made again")

    monkeypatch.setattr(textures, "texture_pixels", fail)
    assert texture_file(draw, 48) == path
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no .partial left


def test_texture_file_differs_by_draw_and_size(cache):
    draw = _draw("checker")
    names = {texture_file(draw, 16), texture_file(draw, 32), texture_file(_draw("stripes"), 16)}
    assert len(names) == 3


def test_image_texture_file_is_made_from_the_source(cache, tmp_path):
    source = _png(tmp_path / "photo.png", (40, 30))
    path = texture_file(_draw("image", source=str(source)), 24)
    with Image.open(path) as image:
        assert image.size == (24, 24)
        assert np.all(np.asarray(image.convert("RGB")) == (200, 50, 0))


# --- image kind ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))  # the seed turns the image by 0 to 3 quarters
def test_image_texture_covers_the_requested_size(tmp_path, seed):
    source = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)).save(source)
    draw = _draw("image", source=str(source), seed=seed)
    pixels = texture_pixels(draw, 64, 48)
    assert pixels.shape == (48, 64, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, texture_pixels(draw, 64, 48))
    assert pixels.std() > 20  # the image itself, not a fill
    assert texture_pixels(draw, 20, 90).shape == (90, 20, 3)


def test_image_texture_needs_a_source():
    with pytest.raises(ValueError, match="source"):
        texture_pixels(_draw("image"), 16)


# --- image_folder and check_image ----------------------------------------------------------


def test_image_folder_lists_its_images_sorted(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    second, first = _png(folder / "b.png"), folder / "a.JPG"
    Image.new("RGB", (5, 5)).save(first, format="JPEG")
    (folder / "notes.txt").write_text("not an image")
    (folder / "nested").mkdir()
    _png(folder / "nested" / "c.png")
    assert image_folder(folder) == (first, second)
    assert image_folder(str(folder)) == (first, second)


def test_image_folder_skips_hidden_files_and_links_that_leave_it(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    inside = _png(folder / "a.png")
    (folder / "._a.png").write_bytes(b"macOS metadata, not an image")
    (folder / "outside.png").symlink_to(_png(tmp_path / "elsewhere.png"))
    assert image_folder(folder) == (inside,)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "text only"])
def test_image_folder_refuses_folders_without_images(tmp_path, case):
    folder = tmp_path / "images"
    if case == "file":
        folder.write_text("a file")
    elif case != "missing":
        folder.mkdir()
    if case == "text only":
        (folder / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="image folder"):
        image_folder(folder)


def test_image_folder_refuses_too_many_images(tmp_path, monkeypatch):
    monkeypatch.setattr(textures, "MAX_FOLDER_IMAGES", 2)
    for name in "abc":
        _png(tmp_path / f"{name}.png")
    with pytest.raises(ValueError, match="more than 2"):
        image_folder(tmp_path)


def test_image_folder_refuses_a_bad_image(tmp_path):
    _png(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        image_folder(tmp_path)


@pytest.mark.parametrize("size", [(8000, 6000), (100_000, 100_000)])
def test_check_image_refuses_a_bomb_from_its_header(tmp_path, monkeypatch, size):
    """Over our limit (8000 x 6000) and over Pillow's own (100 000 squared): refused from the
    header, with nothing decoded."""
    bomb = _bomb(tmp_path / "bomb.png", *size)

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ValueError, match=f"{MAX_IMAGE_PIXELS} pixels"):
        check_image(bomb)
    with pytest.raises(ValueError, match="bomb.png"):
        image_folder(tmp_path)


def test_check_image_reads_the_size_and_refuses_other_formats(tmp_path):
    assert check_image(_png(tmp_path / "a.png", (12, 7))) == (12, 7)
    Image.new("RGB", (4, 4)).save(tmp_path / "b.gif", format="GIF")
    with pytest.raises(ValueError, match="GIF"):
        check_image(tmp_path / "b.gif")
    (tmp_path / "c.png").write_text("text")
    with pytest.raises(ValueError, match="c.png"):
        check_image(tmp_path / "c.png")


def test_texture_kinds_end_with_image():
    assert TEXTURE_KINDS[-1] == "image" and "image" not in PROCEDURAL_KINDS
