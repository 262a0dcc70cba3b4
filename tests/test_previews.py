"""Readable previews: contact sheets of real rendered frames with their labels drawn, where the
shard and batch assets write and link them, the report's categorical plots with every declared
level (zero counts included, as the balance check counts them) and the grid of frames behind
a failed dataset test."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import cv2
import dagster as dg
import numpy as np
import pytest
from conftest import build_batch, read_member

from assets_defs.batches import shard
from assets_defs.quality import DatasetTestsResource, batch_dataset
from generators.labels import archive as arc
from generators.labels.preview import contact_image, contact_sheet
from vario.quality import checks as quality
from vario.quality.report import factor_counts, write_report
from vario.store.layout import DataStore
from vario.store.views import connect

NAME = "peek"
TEXTURES = {"wood": 3, "checker": 1, "grid": 0, "uv": 0, "plain": 0}  # table_texture's levels


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Four jobs in one shard: three draw ducks on wood, one draws a single object from mug
    and cube on checker, so a declared category and three textures are never rendered.
    Objects at rest under a static camera: each job's three frames repeat one image, which
    fails novelty."""
    jobs = [
        {"categories": ["duck"], "n_objects": 2, "table_texture": "wood", "light_azimuth": a}
        for a in (0, 90, 180)
    ] + [{"categories": ["mug", "cube"], "n_objects": 1, "table_texture": "checker"}]
    spec = {
        "name": NAME,
        "generator": "tabletop",
        "seed": 4,
        "shard_size": 4,
        "fixed": {"resolution": 64, "n_distractors": 0, "n_frames": 3, "start_time": 2.0},
        "jobs": jobs,
    }
    return build_batch(tmp_path_factory.mktemp("previews"), spec)


def _decoded(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _tile_and_raw(archive, width: int) -> tuple[np.ndarray, np.ndarray, list[dict], float]:
    """The labelled frame 0 of a one-frame sheet (its caption bar cut off), the raw frame
    scaled the same way, the frame's objects and the scale."""
    sheet = contact_image([(archive, 0)], width=width)
    raw = _decoded(read_member(archive, "rgb/00000.png"))
    scale = width / raw.shape[1]
    height = round(raw.shape[0] * scale)
    raw = cv2.resize(raw, (width, height), interpolation=cv2.INTER_NEAREST)
    objects = [o for o in arc.read_tables(archive)["objects"].to_pylist() if o["frame"] == 0]
    return sheet[sheet.shape[0] - height :], raw, objects, scale


def test_a_contact_sheet_is_wide_small_and_decodes(tabletop_job):
    data = contact_sheet([tabletop_job.archive] * 4)
    image = _decoded(data)
    assert image.shape[1] == 1024 and image.shape[0] > 2 * 1024 // 3  # two rows of 96 px renders
    assert 30_000 < len(data) < 300_000
    assert _decoded(contact_sheet([tabletop_job.archive], width=512)).shape[1] == 512
    with pytest.raises(ValueError, match="at least 512"):
        contact_sheet([tabletop_job.archive], width=256)
    with pytest.raises(ValueError, match="at least one frame"):
        contact_sheet([])


def test_boxes_are_drawn_on_the_upscaled_frame(tabletop_job):
    tile, raw, objects, scale = _tile_and_raw(tabletop_job.archive, 768)
    assert objects and scale == 8
    changed = np.abs(tile.astype(int) - raw.astype(int)).max(axis=2) > 40
    for o in objects:
        x0, y0 = round(o["box_x_min"] * scale), round(o["box_y_min"] * scale)
        x1, y1 = round(o["box_x_max"] * scale) - 1, round(o["box_y_max"] * scale) - 1
        edges = np.concatenate([changed[y0 : y1 + 1, x0], changed[y0 : y1 + 1, x1]])
        assert edges.mean() > 0.6, (o["category"], edges.mean())
    # away from every box the frame is the raw frame scaled up (no blur): only labels differ
    boxes = np.zeros(changed.shape, bool)
    for o in objects:
        x0, y0 = round(o["box_x_min"] * scale), round(o["box_y_min"] * scale)
        boxes[max(y0 - 40, 0) : round(o["box_y_max"] * scale) + 40, :] = True
    assert not changed[~boxes].any()


def test_category_names_sit_on_filled_labels_outside_the_box_lines(tabletop_job):
    tile, raw, objects, scale = _tile_and_raw(tabletop_job.archive, 768)
    changed = (np.abs(tile.astype(int) - raw.astype(int)).max(axis=2) > 40).astype(np.uint8)
    inside = np.zeros(changed.shape, np.uint8)
    for o in objects:  # box lines and mask outlines, a pixel wider
        x0, y0 = round(o["box_x_min"] * scale) - 1, round(o["box_y_min"] * scale) - 1
        x1, y1 = round(o["box_x_max"] * scale), round(o["box_y_max"] * scale)
        inside[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = 1
    n, _, stats, _ = cv2.connectedComponentsWithStats(changed * (1 - inside))
    labels = [
        (x, y, w, h)
        for x, y, w, h, area in stats[1:n]
        if w >= 20 and 12 <= h <= 30 and area >= 0.6 * w * h  # a filled text-high rectangle
    ]
    assert len(labels) >= len(objects) // 2, stats
    for x, y, w, h in labels:
        patch = tile[y : y + h, x : x + w].reshape(-1, 3).astype(int)
        background = np.median(patch, axis=0)
        ink = np.abs(patch - background).max(axis=1) > 80
        assert 10 < ink.sum() < 0.6 * len(ink)  # letters on the label's own colour


def test_preview_paths_stay_inside_the_store(tmp_path):
    store = DataStore(tmp_path)
    assert store.preview_path("good", "good~00001") == tmp_path / "previews/good/good~00001.jpg"
    for name in ("../x", "a/b", ".hidden", "", "x" * 81, "Up"):
        with pytest.raises(ValueError, match="not a preview name"):
            store.preview_path("good", name)
    with pytest.raises(ValueError, match="not a batch name"):
        store.preview_path("../good", "good")


def _materialized(result, node: str, asset: str) -> dict:
    (m,) = [m for m in result.asset_materializations_for_node(node) if m.asset_key.path == [asset]]
    return m.metadata


def _inline_jpeg(metadata: dict) -> np.ndarray:
    text = metadata["preview"].value
    prefix = "![contact sheet](data:image/jpeg;base64,"
    assert text.startswith(prefix) and text.endswith(")")
    return _decoded(base64.b64decode(text[len(prefix) : -1]))


def test_the_shard_writes_links_and_shows_its_contact_sheet(batch):
    store, key = batch.store, f"{NAME}~00000"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", [key])
        result = dg.materialize(
            [shard], partition_key=key, instance=instance, resources={"storage": batch}
        )  # its jobs are done: skipped, the sheet drawn again from their archives
    metadata = _materialized(result, "shard", "rendered_shard")
    path = store.preview_path(NAME, key)
    assert metadata["contact sheet"].value == str(path)
    sheet = _decoded(path.read_bytes())
    assert sheet.shape[1] >= 512 and np.array_equal(_inline_jpeg(metadata), sheet)


def test_the_batch_dataset_links_a_contact_sheet_of_the_batch(batch, tmp_path):
    tests = DatasetTestsResource(templates=str(tmp_path / "no-templates"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", [NAME])
        result = dg.materialize(
            [batch_dataset],
            partition_key=NAME,
            instance=instance,
            resources={"storage": batch, "dataset_tests": tests},
            raise_on_error=False,  # a small batch fails coverage, an ERROR check
        )
    metadata = _materialized(result, "batch_dataset", "batch_dataset")
    path = batch.store.preview_path(NAME, NAME)
    assert metadata["contact sheet"].value == str(path)
    sheet = _decoded(path.read_bytes())
    assert sheet.shape[1] == 1024 and sheet.shape[0] > 2 * 1024 // 3  # four jobs: two rows
    assert np.array_equal(_inline_jpeg(metadata), sheet)


def test_report_counts_show_declared_levels_never_rendered_as_the_balance_check_does(batch):
    store = batch.store
    con = connect(store)
    categories = quality.category_counts(con, NAME)
    seen = {c for (c,) in con.execute("SELECT DISTINCT category FROM objects").fetchall()}
    assert set(categories) == {"duck", "mug", "cube"}
    never = {c for c, n in categories.items() if n == 0}
    assert never and not never & seen  # one object from mug and cube: one is never drawn
    textures = factor_counts(con, NAME, quality.design(store, NAME), "table_texture")
    assert textures == TEXTURES
    balance = next(r for r in quality.run_checks(store, NAME) if r.name == "balance")
    assert balance.metadata == {"category": categories, "table_texture": textures}


class _Sections(HTMLParser):
    """The report's sections (h2 titles), each with the image that follows it."""

    def __init__(self, text: str):
        super().__init__()
        self.images: dict[str, str] = {}
        self._title: str | None = None
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._in_h2, self._title = True, ""
        elif tag == "img" and self._title is not None:
            self.images[self._title] = dict(attrs)["src"]

    def handle_endtag(self, tag):
        self._in_h2 = self._in_h2 and tag != "h2"

    def handle_data(self, data):
        if self._in_h2:
            self._title += data


def _slice_grids(store: DataStore, results) -> dict[str, np.ndarray]:
    page = _Sections(write_report(store, NAME, results).path.read_text())
    prefix = "data:image/png;base64,"
    return {
        title.removeprefix("Frames behind the failed test "): _decoded(
            base64.b64decode(src.removeprefix(prefix))
        )
        for title, src in page.images.items()
        if title.startswith("Frames behind")
    }


def test_the_report_shows_the_frames_behind_a_failed_test(batch):
    store = batch.store
    results = quality.run_checks(store, NAME)
    novelty = next(r for r in results if r.name == "novelty")
    assert not novelty.passed  # each job repeats one image three times
    grids = _slice_grids(store, results)
    # balance failed on levels never rendered (no frame to show), novelty on the four jobs
    assert list(grids) == ["novelty: the jobs whose frames repeat most"]
    grid = grids["novelty: the jobs whose frames repeat most"]
    archives = sorted(store.archive_dir(NAME).glob("*.zip"))  # equal repeats: in id order
    assert len(archives) == 4 and grid.shape[1] >= 512
    assert np.array_equal(grid, contact_image([(a, 0) for a in archives], width=768, columns=4))
    lenient = quality.DatasetTests(novelty={"max_duplicate_share": 1.0})
    assert _slice_grids(store, quality.run_checks(store, NAME, lenient)) == {}


def test_a_failed_balance_shows_its_rarest_level(batch):
    """The report shows what was recorded: a balance result that names checker, held by one
    job, as the rarest table texture shows that job's frame."""
    store = batch.store
    counts = {"wood": 3, "checker": 1}
    balance = quality.CheckResult(
        "balance",
        False,
        "WARN",
        "table_texture: rarest 'checker' (1) / most common 'wood' (3) = 0.33 < 0.5",
        {"table_texture": counts},
    )
    grids = _slice_grids(store, [balance])
    grid = grids.pop("balance: table_texture 'checker', the rarest")
    assert grids == {} and grid.shape[1] >= 512
    assert np.array_equal(grid, contact_image([(_checker_archive(store), 0)], width=768))


def _checker_archive(store: DataStore):
    (job,) = (
        connect(store)
        .execute("SELECT job_id FROM jobs WHERE param_table_texture = 'checker'")
        .fetchall()[0]
    )
    return store.archive_dir(NAME) / f"{job}.zip"
