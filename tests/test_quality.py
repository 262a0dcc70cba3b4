"""Dataset tests on small real datasets: good batches pass, deliberate defects fail with the
offending names, and an ERROR failure blocks the export in the same run."""

from __future__ import annotations

import json
import shutil
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import cv2
import dagster as dg
import imagehash
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import build_batch
from PIL import Image

from assets_defs.quality import DatasetTestsResource, batch_dataset, batch_export
from assets_defs.storage import StorageResource
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.quality import checks as quality
from vario.quality.report import write_report
from vario.store.layout import DataStore

FIXED = {"resolution": 64, "n_distractors": 0, "start_time": 0.5}


def _by_name(results) -> dict[str, quality.CheckResult]:
    return {r.name: r for r in results}


@pytest.fixture(scope="module")
def sobol_batch(tmp_path_factory):
    spec = {
        "name": "good",
        "generator": "tabletop",
        "seed": 3,
        "shard_size": 32,
        "fixed": {**FIXED, "n_objects": 6, "categories": ["duck", "cube", "mug"]},
        "sampler": {
            "kind": "sobol",
            "count": 32,
            "ranges": {
                "light_azimuth": [0, 360],
                "camera_azimuth": [0, 360],
                "table_texture": {"choices": ["wood", "checker", "grid", "uv", "plain"]},
            },
        },
    }
    return build_batch(tmp_path_factory.mktemp("quality"), spec)


def test_a_sobol_batch_passes_coverage_balance_bias_and_integrity(sobol_batch):
    results = _by_name(quality.run_checks(sobol_batch.store, "good"))
    for name in ("coverage", "balance", "bias", "integrity"):
        assert results[name].passed, results[name].message
    ratio = results["coverage"].metadata["discrepancy"]["ratio"]
    assert ratio < 1.0  # a low-discrepancy design beats independent sampling


def test_lighting_chosen_from_the_category_fails_bias_naming_the_pair(tmp_path):
    jobs = [
        {"categories": [category], "light_azimuth": azimuth + 7 * k, "n_objects": 3}
        for category, azimuth in (("duck", 20), ("cube", 110), ("mug", 200), ("torus", 290))
        for k in range(6)
    ]
    spec = {
        "name": "leak",
        "generator": "tabletop",
        "seed": 1,
        "shard_size": 24,
        "fixed": FIXED,
        "jobs": jobs,
    }
    storage = build_batch(tmp_path, spec)
    bias = _by_name(quality.run_checks(storage.store, "leak"))["bias"]
    assert not bias.passed and bias.severity == "ERROR"
    assert "light_azimuth predicts category: Cramér's V" in bias.message
    worst = bias.metadata["pairs"][0]
    assert (worst["nuisance"], worst["target"]) == ("light_azimuth", "category")
    assert worst["cramers_v"] > 0.8 and worst["p_value"] < 1e-6


def test_a_parameter_squeezed_to_a_quarter_of_its_range_fails_coverage(tmp_path):
    spec = {
        "name": "squeezed",
        "generator": "tabletop",
        "seed": 2,
        "shard_size": 16,
        "fixed": {**FIXED, "n_objects": 2},
        "sampler": {
            "kind": "sobol",
            "count": 16,
            "ranges": {"light_azimuth": [0, 90], "camera_azimuth": [0, 360]},
        },
    }
    storage = build_batch(tmp_path, spec)
    coverage = _by_name(quality.run_checks(storage.store, "squeezed"))["coverage"]
    assert not coverage.passed
    assert "light_azimuth: 3 of 4 bins over its range [0, 360]" in coverage.message
    assert "worst: light_azimuth" in coverage.message
    assert "camera_azimuth:" not in coverage.message


def test_a_corrupted_mask_fails_integrity_naming_the_job_and_frame(sobol_batch, tmp_path):
    store = sobol_batch.store
    path = store.table_path("objects", "good", "good~00000")
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[5]["mask_rle"] = rows[0]["mask_rle"]  # another object's mask
    broken = StorageResource(root=str(tmp_path / "broken"))
    shutil.copytree(store.root, broken.store.root)
    pq.write_table(
        table.from_pylist(rows, table.schema),
        broken.store.table_path("objects", "good", "good~00000"),
    )
    integrity = _by_name(quality.run_checks(broken.store, "good"))["integrity"]
    assert not integrity.passed
    assert f"job {rows[5]['job_id']} frame {rows[5]['frame']} instance " in integrity.message


def test_a_failing_error_check_stops_the_export_in_the_same_run(tmp_path):
    jobs = [
        {"categories": [c], "light_azimuth": a}
        for c, a in (("duck", 10), ("cube", 200))
        for _ in range(4)
    ]
    storage = build_batch(
        tmp_path,
        {
            "name": "blocked",
            "generator": "tabletop",
            "seed": 1,
            "shard_size": 8,
            "fixed": FIXED,
            "jobs": jobs,
        },
    )
    templates = tmp_path / "templates"
    templates.mkdir()
    resources = {
        "storage": storage,
        "dataset_tests": DatasetTestsResource(templates=str(templates)),
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", ["blocked"])
        run = dg.materialize(
            [batch_dataset, batch_export],
            partition_key="blocked",
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
        assert not run.success and not checks["bias"].passed
        assert instance.get_latest_materialization_event(dg.AssetKey("batch_export")) is None
        # with that check relaxed to a warning, the same batch is released
        (templates / "blocked.tests.yaml").write_text(
            yaml.safe_dump({"coverage": {"severity": "WARN"}, "bias": {"severity": "WARN"}})
        )
        run = dg.materialize(
            [batch_dataset, batch_export],
            partition_key="blocked",
            instance=instance,
            resources=resources,
        )
        assert run.success
        assert instance.get_latest_materialization_event(dg.AssetKey("batch_export"))
    assert (storage.store.root / "exports" / "blocked" / "objects.parquet").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {"bias": {"max_cramers_v": 2}},
            "bias.max_cramers_v: Input should be less than or equal to 1 (got 2)",
        ),
        ({"coverage": {"bins": 1}}, "coverage.bins: Input should be greater than or equal to 2"),
        ({"balanse": {}}, "balanse: Extra inputs are not permitted"),
        (
            {"integrity": {"severity": "FATAL"}},
            "integrity.severity: Input should be 'ERROR' or 'WARN' (got 'FATAL')",
        ),
    ],
)
def test_invalid_thresholds_files_get_a_clear_error(tmp_path, content, expected):
    path = tmp_path / "bad.tests.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(quality.TestsFileError) as err:
        quality.load_tests(path)
    assert expected in str(err.value) and str(path) in str(err.value)


def test_checks_on_an_empty_batch_fail_with_a_message(tmp_path):
    spec = {
        "name": "empty",
        "generator": "tabletop",
        "shard_size": 4,
        "fixed": FIXED,
        "sampler": {"kind": "random", "count": 4, "ranges": {"fov": [20, 90]}},
    }
    storage = build_batch(tmp_path, spec, render=False)
    for result in quality.run_checks(storage.store, "empty"):
        assert not result.passed and "no rendered jobs" in result.message
    for result in quality.run_checks(storage.store, "never-submitted"):
        assert not result.passed


def test_checks_on_a_single_job_and_a_one_level_factor_do_not_raise(tmp_path):
    spec = {
        "name": "single",
        "generator": "tabletop",
        "shard_size": 1,
        "fixed": {**FIXED, "categories": ["duck"]},
        "jobs": [{"light_azimuth": 30}],
    }
    storage = build_batch(tmp_path, spec)
    tests = quality.DatasetTests(
        balance={"factors": ["category"]}, bias={"nuisance": ["light_azimuth"]}
    )
    results = _by_name(quality.run_checks(storage.store, "single", tests))
    assert "category: 1 level(s); balance needs at least two" in results["balance"].message
    assert not results["bias"].passed and "one level" in results["bias"].message
    assert not results["coverage"].passed and results["integrity"].passed


def test_plans_carry_their_template_for_the_tests_file():
    spec = BatchSpec.model_validate(
        {"name": "demo-20261122", "template": "demo", "generator": "tabletop", "jobs": [{}]}
    )
    assert plan(spec).spec.template == "demo"


SECTIONS = (
    "Factor histograms",
    "Coverage pair plot",
    "Nuisance x target association",
    "Category balance",
    "Occlusion and truncation",
    "Sample frames",
)


class _Page(HTMLParser):
    """The report's tables (by id) as rows of cell texts, and its sections with their images."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.sections: list[str] = []
        self.images: list[str] = []
        self._cell: str | None = None
        self._in_h2 = False
        self.feed(text)

    @property
    def rows(self) -> list[list[str]]:
        return self.tables.get("tests", [])

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables[dict(attrs)["id"]] = []
            self._rows = self.tables[dict(attrs)["id"]]
        elif tag == "tr":
            self._rows.append([])
        elif tag == "td":
            self._cell = ""
        elif tag == "h2":
            self._in_h2 = True
            self.sections.append("")
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag == "td":
            self._rows[-1].append(self._cell)
            self._cell = None
        elif tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_h2:
            self.sections[-1] += data


def _expected_rows(results) -> list[list[str]]:
    return [[r.name, "pass" if r.passed else "FAIL", r.severity, r.message] for r in results]


def test_recorded_results_read_back_as_they_were_recorded(sobol_batch):
    store = sobol_batch.store
    results = quality.run_checks(store, "good")
    path = quality.record_results(store, "good", results)
    assert path == store.batch_dir("good") / "tests.json"
    assert quality.recorded_results(store, "good") == results
    assert quality.recorded_results(store, "never-tested") is None


def test_the_report_shows_the_recorded_tests_and_every_plot(sobol_batch):
    store = sobol_batch.store
    results = quality.run_checks(store, "good")
    report = write_report(store, "good", results)
    page = _Page(report.path.read_text())
    assert [row for row in page.rows if row] == _expected_rows(results)
    assert [s for s in SECTIONS if not any(t.startswith(s) for t in page.sections)] == []
    assert len(page.images) == len(SECTIONS) == len(report.plots)
    assert all(src.startswith("data:image/png;base64,iVBOR") for src in page.images)
    sizes = _by_name(results)["edge_cases"].metadata["box area by category"]
    assert [row for row in page.tables["sizes"] if row] == [
        [
            c,
            str(v["objects"]),
            str(v["p10"]),
            str(v["median"]),
            str(v["p90"]),
            f"{100 * v['small share']:.1f}%",
        ]
        for c, v in sizes.items()
    ]


def test_the_report_shows_what_was_recorded_not_the_checks_run_again(sobol_batch, tmp_path):
    store = DataStore(tmp_path / "copy")
    shutil.copytree(sobol_batch.store.root, store.root)
    quality.record_results(store, "good", quality.run_checks(store, "good"))
    path = store.batch_dir("good") / "tests.json"
    record = json.loads(path.read_text())
    coverage = next(r for r in record["results"] if r["name"] == "coverage")
    assert coverage["passed"]
    coverage.update(passed=False, message="<b>altered</b> after the run")
    path.write_text(json.dumps(record))
    report = write_report(store, "good", quality.recorded_results(store, "good"))
    text = report.path.read_text()
    rows = {row[0]: row for row in _Page(text).rows if row}
    assert rows["coverage"][1:] == ["FAIL", "ERROR", "<b>altered</b> after the run"]
    assert "&lt;b&gt;altered&lt;/b&gt;" in text  # autoescaped
    assert rows["balance"][1] == "pass"


def test_the_cli_reports_the_results_vario_dataset_test_recorded(sobol_batch, tmp_path):
    from click.testing import CliRunner

    from dagster_project.cli import main

    root = tmp_path / "copy"
    shutil.copytree(sobol_batch.store.root, root)
    (root / "batches" / "good" / "tests.json").unlink(missing_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VARIO_DATA_DIR", str(root))
        untested = CliRunner().invoke(main, ["dataset", "report", "good"])
        tested = CliRunner().invoke(main, ["dataset", "test", "good"])
        result = CliRunner().invoke(main, ["dataset", "report", "good"])
    assert untested.exit_code == 2, untested.output
    assert tested.exit_code == 0 and "coverage" in tested.output, tested.output
    assert result.exit_code == 0, result.output
    page = _Page(Path(result.output.strip().splitlines()[-1]).read_text())
    assert [row for row in page.rows if row] == _expected_rows(
        quality.recorded_results(DataStore(root), "good")
    )
    assert len(page.images) == len(SECTIONS)


def test_dataset_test_exits_1_when_an_error_check_fails(sobol_batch, tmp_path):
    """A tests file that no batch of 32 jobs can meet (coverage: 100 jobs per bin)."""
    from click.testing import CliRunner

    from dagster_project.cli import main

    root = tmp_path / "copy"
    shutil.copytree(sobol_batch.store.root, root)
    strict = tmp_path / "strict.tests.yaml"
    strict.write_text(yaml.safe_dump({"coverage": {"min_bin_count": 100}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VARIO_DATA_DIR", str(root))
        result = CliRunner().invoke(main, ["dataset", "test", "good", "--tests", str(strict)])
    assert result.exit_code == 1, result.output
    recorded = {r.name: r for r in quality.recorded_results(DataStore(root), "good")}
    assert not recorded["coverage"].passed and recorded["coverage"].severity == "ERROR"


def test_integrity_reads_each_mask_at_its_own_frame_size(tmp_path):
    """Frames of two sizes in one batch: every mask is decoded at its frame's size (a mask
    read at the other size would give another box), and a wrong box is still found."""
    spec = {
        "name": "sizes",
        "generator": "tabletop",
        "shard_size": 2,
        "fixed": {**FIXED, "n_objects": 3},
        "jobs": [{"resolution": 64}, {"resolution": 96}],
    }
    storage = build_batch(tmp_path, spec)
    integrity = _by_name(quality.run_checks(storage.store, "sizes"))["integrity"]
    assert integrity.passed, integrity.message
    path = storage.store.table_path("objects", "sizes", "sizes~00000")
    table = pq.read_table(path)
    rows = table.to_pylist()
    frames = pq.read_table(storage.store.table_path("frames", "sizes", "sizes~00000"))
    wide = {f["job_id"] for f in frames.to_pylist() if f["width"] == 96}
    big = next(i for i, r in enumerate(rows) if r["job_id"] in wide)
    rows[big]["box_x_min"] += 1
    pq.write_table(table.from_pylist(rows, table.schema), path)
    integrity = _by_name(quality.run_checks(storage.store, "sizes"))["integrity"]
    assert not integrity.passed
    assert f"job {rows[big]['job_id']} frame {rows[big]['frame']}" in integrity.message


def _objects_and_frames(store: DataStore, batch: str):
    """The batch's objects and frames tables read straight from Parquet (not through DuckDB),
    for expectations computed independently of the checks."""
    read = lambda t: pq.ParquetDataset(store.root / "tables" / t / f"batch={batch}").read()  # noqa: E731
    return read("objects"), read("frames")


@pytest.mark.parametrize("above", [False, True])
def test_edge_cases_pass_or_fail_at_the_shares_the_tables_hold(sobol_batch, above):
    objects, frames = _objects_and_frames(sobol_batch.store, "good")
    occlusion = objects.column("occlusion").to_numpy()
    box = {k: objects.column(f"box_{k}").to_numpy() for k in ("x_min", "y_min", "x_max", "y_max")}
    area = (box["x_max"] - box["x_min"]) * (box["y_max"] - box["y_min"])
    small_area = int(np.median(area))  # about half the boxes are small at this threshold
    shares = {
        "occluded": float((occlusion >= 0.3).mean()),
        "truncated": float((objects.column("truncation").to_numpy() > 0).mean()),
        "crowded frames": float((frames.column("n_objects").to_numpy() >= 7).mean()),
        "small": float((area < small_area).mean()),
    }
    step = 0.01 if above else -0.01
    thresholds = {
        "occlusion_level": 0.3,
        "crowded_objects": 7,
        "min_occluded_share": max(0.0, shares["occluded"] + step),
        "min_truncated_share": max(0.0, shares["truncated"] + step),
        "min_crowded_share": max(0.0, shares["crowded frames"] + step),
        "small_box_area": small_area,
        "min_small_share": max(0.0, shares["small"] + step),
        "max_small_share": shares["small"] + (0.5 if above else 0.0),
    }
    tests = quality.DatasetTests(edge_cases=thresholds)
    result = _by_name(quality.run_checks(sobol_batch.store, "good", tests))["edge_cases"]
    figures = {k: v for k, v in result.metadata.items() if k != "box area by category"}
    assert figures == pytest.approx({k: round(v, 4) for k, v in shares.items()})
    assert result.passed is not above and result.severity == "WARN"
    if above:
        for name, share in shares.items():
            assert f"{name} share {share:.3f} < " in result.message
    assert f"boxes under {small_area} px²: {shares['small']:.1%}" in result.message
    categories = objects.column("category").to_numpy(zero_copy_only=False)
    per_category = result.metadata["box area by category"]
    assert sorted(per_category) == sorted(set(categories))
    for category, figures in per_category.items():
        mine = np.sort(area[categories == category])
        assert figures["objects"] == len(mine) and figures["median"] in mine
        assert figures["p10"] <= figures["median"] <= figures["p90"] <= mine.max()
        assert figures["small"] == int((mine < small_area).sum())


def test_too_many_small_objects_warn(sobol_batch):
    tests = quality.DatasetTests(edge_cases={"small_box_area": 10**6, "max_small_share": 0.5})
    result = _by_name(quality.run_checks(sobol_batch.store, "good", tests))["edge_cases"]
    assert not result.passed and "small share 1.000 > 0.5" in result.message


@pytest.mark.parametrize("above", [False, True])
def test_balance_passes_or_fails_at_the_category_ratio_the_tables_hold(sobol_batch, above):
    objects, _ = _objects_and_frames(sobol_batch.store, "good")
    categories = [c for c in objects.column("category").to_pylist() if c != "distractor"]
    counts = {c: categories.count(c) for c in ("duck", "cube", "mug")}
    ratio = min(counts.values()) / max(counts.values())
    tests = quality.DatasetTests(
        balance={"factors": ["category"], "min_ratio": min(1.0, ratio + (0.01 if above else -0.01))}
    )
    result = _by_name(quality.run_checks(sobol_batch.store, "good", tests))["balance"]
    assert result.metadata["category"] == counts
    assert result.passed is not above
    if above:
        rarest = min(counts, key=counts.get)
        assert f"category: rarest {rarest!r} ({counts[rarest]})" in result.message


def _png(image) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


CORRUPTIONS = {  # archive member (frame 0) -> its broken content, and what integrity says
    "rgb": ("rgb/00000.png", lambda h, w: _png(np.full((h, w, 3), 128, np.uint8)), "empty RGB"),
    "no depth": ("depth/00000.png", lambda h, w: _png(np.zeros((h, w), np.uint16)), "empty depth"),
    "far depth": (
        "depth/00000.png",
        lambda h, w: _png(np.full((h, w), 60_000, np.uint16)),  # 60 m, past the far plane
        "outside the clip range",
    ),
    "normals": (
        "normals/00000.png",
        lambda h, w: _png(np.zeros((h, w, 3), np.uint16)),
        "empty normals map",
    ),
}


@pytest.mark.parametrize("corruption", [*CORRUPTIONS, "missing archive"])
def test_integrity_finds_a_broken_or_missing_archive(sobol_batch, tmp_path, corruption):
    broken = DataStore(tmp_path / "broken")
    shutil.copytree(sobol_batch.store.root, broken.root)
    job = sorted(p.stem for p in broken.archive_dir("good").glob("*.zip"))[3]
    archive = broken.archive_dir("good") / f"{job}.zip"
    if corruption == "missing archive":
        archive.unlink()
        expected = f"job {job}: no complete archive"
    else:
        member, content, expected = CORRUPTIONS[corruption]
        with zipfile.ZipFile(archive) as z:
            members = {name: z.read(name) for name in z.namelist()}
        members[member] = content(64, 64)
        with zipfile.ZipFile(archive, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
        expected = f"job {job} frame 0: "
    tests = quality.DatasetTests(integrity={"sample_jobs": 32})  # every archive
    integrity = _by_name(quality.run_checks(broken, "good", tests))["integrity"]
    assert not integrity.passed and integrity.severity == "ERROR"
    problems = integrity.metadata["problems"]
    assert any(p.startswith(expected) for p in problems), problems
    if corruption != "missing archive":
        assert any(CORRUPTIONS[corruption][2] in p for p in problems), problems


def test_a_batch_read_in_small_chunks_gives_the_same_answer(sobol_batch, tmp_path, monkeypatch):
    """Integrity reads a batch's objects a chunk of rows at a time (forced small here); a
    mask broken in the last chunk is still found."""
    store = sobol_batch.store
    table = pq.read_table(store.table_path("objects", "good", "good~00000"))
    rows = table.to_pylist()
    rows[-1]["mask_rle"] = rows[0]["mask_rle"]
    broken = DataStore(tmp_path / "broken")
    shutil.copytree(store.root, broken.root)
    pq.write_table(
        table.from_pylist(rows, table.schema), broken.table_path("objects", "good", "good~00000")
    )
    whole = _by_name(quality.run_checks(broken, "good"))["integrity"]
    monkeypatch.setattr(quality, "_CHUNK_ROWS", 5)
    chunked = _by_name(quality.run_checks(broken, "good"))["integrity"]
    assert chunked.metadata["problems"] == whole.metadata["problems"]
    assert any(f"instance {rows[-1]['instance_id']}" in p for p in chunked.metadata["problems"])


def _rgb_frames(archive) -> list[np.ndarray]:
    with zipfile.ZipFile(archive) as z:
        names = sorted(n for n in z.namelist() if n.startswith("rgb/"))
        return [cv2.imdecode(np.frombuffer(z.read(n), np.uint8), cv2.IMREAD_COLOR) for n in names]


@pytest.mark.parametrize("motion", ["static", "orbit"])
def test_novelty_counts_the_frames_that_repeat_an_image(tmp_path, motion):
    """Objects at rest under a static camera: each job shows one image three times (the
    pixels are identical). An orbit of 15 degrees a frame: three views. The check's repeats
    are those of perceptual hashes computed here from the archived PNGs."""
    spec = {
        "name": f"novel-{motion}",
        "generator": "tabletop",
        "seed": 5,
        "shard_size": 4,
        "fixed": {**FIXED, "n_objects": 3, "n_frames": 3, "start_time": 2.0, "frame_rate": 8},
        "jobs": [
            {"light_azimuth": a, "camera_motion": motion, "orbit_speed": 120}
            for a in (0, 90, 180, 270)
        ],
    }
    storage = build_batch(tmp_path, spec)
    result = _by_name(quality.run_checks(storage.store, spec["name"]))["novelty"]
    repeats = identical = 0
    for archive in sorted(storage.store.archive_dir(spec["name"]).glob("*.zip")):
        images = _rgb_frames(archive)
        hashes = [
            imagehash.phash(Image.fromarray(cv2.cvtColor(i, cv2.COLOR_BGR2RGB))) for i in images
        ]
        for k in range(1, len(images)):
            repeats += min(hashes[k] - hashes[j] for j in range(k)) <= 2
            identical += any(np.array_equal(images[k], images[j]) for j in range(k))
    assert result.metadata["repeats within jobs"] == repeats
    assert identical == repeats == (8 if motion == "static" else 0)
    assert result.metadata["repeats across jobs"] == 0  # four lightings: four looks
    assert f"{12 - repeats} distinct images of 12 frames" in result.message
    assert result.passed is (motion == "orbit") and result.severity == "WARN"


def test_each_batchs_check_results_carry_its_partition_and_numbers(sobol_batch, tmp_path):
    """In the UI a dataset test's history is read per batch: each result is recorded under
    its batch's partition, with the numbers behind the verdict as numeric metadata."""
    other = build_batch(
        tmp_path,
        {
            "name": "other",
            "generator": "tabletop",
            "seed": 2,
            "shard_size": 4,
            "fixed": {**FIXED, "n_objects": 2},
            "sampler": {"kind": "random", "count": 4, "ranges": {"light_azimuth": [0, 360]}},
        },
    )
    warn = DatasetTestsResource(templates=str(tmp_path / "no-templates"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", ["good", "other"])
        for name, storage in (("good", sobol_batch), ("other", other)):
            dg.materialize(
                [batch_dataset],
                partition_key=name,
                instance=instance,
                resources={"storage": storage, "dataset_tests": warn},
                raise_on_error=False,
            )
        for check in quality.CHECKS:
            key = dg.AssetCheckKey(dg.AssetKey("batch_dataset"), check)
            history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
            assert sorted(r.partition for r in history) == ["good", "other"], check
        (good,) = [
            r
            for r in instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey("batch_dataset"), "balance"), limit=10
            )
            if r.partition == "good"
        ]
    metadata = good.event.dagster_event.event_specific_data.metadata
    numbers = {k: v.value for k, v in metadata.items() if isinstance(v.value, int | float)}
    assert {"category / duck", "category / cube", "category / mug"} <= set(numbers), metadata
    assert all(n > 0 for k, n in numbers.items() if k.startswith("category / "))
