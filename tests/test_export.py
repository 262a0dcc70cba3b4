"""Training exports, the part every format shares: the slice, the frames kept, the split by
job, the folder that appears whole and once, the gate of the dataset tests, the CLI and the
Dagster asset. Each format's own layout is tested with its consumers' libraries in
``test_export_*.py``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from conftest import build_batch

from assets_defs.exports import dataset_export
from vario.export import run
from vario.export.select import ExportRequestError, assign_splits, parse_split
from vario.export.worker import WorkerError
from vario.quality import checks as quality
from vario.store import sandbox
from vario.store.layout import DataStore

SPEC = {
    "name": "exp",
    "generator": "tabletop",
    "seed": 3,
    "shard_size": 3,
    "fixed": {"resolution": 64, "n_frames": 3, "n_objects": 4, "n_distractors": 1},
    "sampler": {"kind": "random", "count": 7, "ranges": {"light_azimuth": [0, 360]}},
}
LENIENT = {n: {"severity": "WARN"} for n in ("coverage", "bias", "balance", "edge_cases")}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A rendered, tested batch: 7 jobs of 3 frames in 3 shards."""
    storage = build_batch(tmp_path_factory.mktemp("export"), SPEC)
    tests = quality.DatasetTests.model_validate({**LENIENT, "novelty": {"severity": "WARN"}})
    results = quality.run_checks(storage.store, "exp", tests)
    quality.record_results(storage.store, "exp", results)
    assert not [r for r in results if r.blocking]
    return storage


def _coco(out, split: str) -> dict:
    return json.loads((out / "annotations" / f"instances_{split}.json").read_text())


def _exported_objects(out) -> Counter:
    """Objects per (job, frame) in a COCO export, from its per-image extension fields."""
    found: Counter = Counter()
    for split in ("train", "val", "test"):
        path = out / "annotations" / f"instances_{split}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        images = {i["id"]: (i["vario"]["job_id"], i["vario"]["frame"]) for i in data["images"]}
        found.update(images[a["image_id"]] for a in data["annotations"])
        found.update({key: 0 for key in images.values()})
    return found


def test_splits_are_by_job_within_one_job_of_the_fractions_and_stable():
    ids = [f"{i:016x}" for i in range(1001)]
    split = parse_split("train=0.7,val=0.2,test=0.1")
    first = assign_splits(ids, split, seed=5)
    assert first == assign_splits(list(reversed(ids)), split, seed=5)  # order does not matter
    counts = Counter(first.values())
    for name, fraction in split.items():
        assert abs(counts[name] - fraction * len(ids)) < 1, counts
    assert assign_splits(ids, split, seed=6) != first
    for bad in ("train=0.8,val=0.1", "train=1.2,val=-0.2", "train=0.5,dev=0.5", "train", "x=nan"):
        with pytest.raises(ExportRequestError, match="--split"):
            parse_split(bad)


def test_an_export_holds_every_frame_split_by_job_and_appears_once(batch, tmp_path):
    store = batch.store
    out = tmp_path / "coco"
    summary = run.export_batch(store, "exp", "coco", out, split={"train": 0.6, "val": 0.4})
    assert sum(summary.frames.values()) == 21 and set(summary.frames) == {"train", "val"}
    jobs_by_split = {
        split: {i["vario"]["job_id"] for i in _coco(out, split)["images"]}
        for split in summary.frames
    }
    assert not jobs_by_split["train"] & jobs_by_split["val"]  # no job on both sides
    assert {s: len(j) for s, j in jobs_by_split.items()} == {"train": 4, "val": 3}  # 4.2, 2.8
    con = sandbox.connection(store)
    (objects,) = con.execute("SELECT count(*) FROM objects WHERE batch = 'exp'").fetchone()
    assert sum(summary.objects.values()) == objects
    rendered_by = "SELECT DISTINCT generator || ' ' || generator_version FROM jobs"
    generators = [g for (g,) in con.execute(f"{rendered_by} WHERE batch = 'exp'").fetchall()]
    assert _coco(out, "train")["info"]["generators"] == generators and len(generators) == 1
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["request"]["split"] == {"train": 0.6, "val": 0.4}
    listed = (out / "checksums.sha256").read_text().splitlines()
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {line.split("  ", 1)[1] for line in listed} == files - {
        "checksums.sha256",
        "export.json",
    }
    for line in listed:  # images' digests come from the frames table (rgb_sha256): still true
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder
    # the same request again does nothing; another into the same folder is refused
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = run.export_batch(store, "exp", "coco", out, split={"train": 0.6, "val": 0.4})
    assert again.up_to_date and again.frames == summary.frames
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    with pytest.raises(ExportRequestError, match="holds another export"):
        run.export_batch(store, "exp", "coco", out, split={"train": 0.5, "val": 0.5})
    # the same split seed assigns the same jobs in another export
    other = tmp_path / "again"
    run.export_batch(store, "exp", "coco", other, split={"train": 0.6, "val": 0.4})
    assert {i["vario"]["job_id"] for i in _coco(other, "val")["images"]} == jobs_by_split["val"]


def test_a_where_slice_exports_exactly_what_the_same_where_selects(batch, tmp_path):
    where = (  # the batch column too, which the views have and the shard files do not
        "batch = 'exp' AND occlusion < 0.5 "
        "AND category IN ('cube', 'duck', 'mug', 'torus', 'capsule')"
    )
    out = tmp_path / "slice"
    run.export_batch(batch.store, "exp", "coco", out, where=where, frames="2")
    con = sandbox.connection(batch.store)
    rows = con.execute(
        f"SELECT job_id, frame, count(*) FROM objects WHERE batch = 'exp' AND ({where}) "
        "AND frame % 2 = 0 GROUP BY ALL"
    ).fetchall()
    assert rows and _exported_objects(out) == Counter({(j, f): n for j, f, n in rows})


def test_first_frames_only(batch, tmp_path):
    summary = run.export_batch(batch.store, "exp", "coco", tmp_path / "first", frames="first")
    assert sum(summary.frames.values()) == 7
    assert {f for _, f in _exported_objects(tmp_path / "first")} == {0}


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("1=1) OR (1=1", "not one SQL expression"),
        ("1; DROP TABLE objects", "not one SQL expression"),
        ("no_such_column > 1", "no_such_column"),
        ("length(read_text('/etc/passwd')) > 0", "--where"),
    ],
)
def test_a_hostile_or_wrong_where_is_refused_before_any_work(batch, tmp_path, where, message):
    with pytest.raises(ExportRequestError, match=message):
        run.export_batch(batch.store, "exp", "coco", tmp_path / "x", where=where)
    assert list(tmp_path.iterdir()) == []


def test_an_export_that_fails_midway_leaves_nothing(batch, tmp_path):
    # valid on the empty table, fails on the first row: after the export has begun
    where = "CAST(category AS INTEGER) > 0"
    with pytest.raises(Exception, match="Could not convert"):
        run.export_batch(batch.store, "exp", "coco", tmp_path / "broken", where=where)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["coco", "hf"])
def test_a_writer_failing_midway_stops_the_export_and_leaves_nothing(
    batch, tmp_path, monkeypatch, fmt
):
    """Images are copied, or shards written, on another process: a writer's error mid-job
    stops it and the export (no hang waiting on work that will never be asked), leaving no
    folder behind and no process running."""
    cls = run.writer_class(fmt)
    added, original = [], cls.add

    def add(self, frame):
        added.append(frame.stem)
        if len(added) == 5:
            raise RuntimeError("writer broke")
        original(self, frame)

    monkeypatch.setattr(cls, "add", add)
    options = {"row_group_rows": 2} if fmt == "hf" else {}  # row groups sent before the error
    before = _children()
    with pytest.raises(RuntimeError, match="writer broke"):
        run.export_batch(batch.store, "exp", fmt, tmp_path / "broken", options=options)
    assert len(added) == 5 and list(tmp_path.iterdir()) == []
    assert _children() <= before  # the helper process is gone


@pytest.mark.parametrize(
    ("fmt", "doing"), [("coco", "copying images"), ("hf", "writing Parquet shards")]
)
def test_an_archive_the_helper_cannot_read_fails_the_export_clearly(batch, tmp_path, fmt, doing):
    """Images are read on another process: its error ends the export with its message,
    naming the archive, leaving no folder and no process behind."""
    store = DataStore(tmp_path / "data")
    shutil.copytree(batch.store.root, store.root)
    damaged = sorted(store.archive_dir("exp").glob("*.zip"))[3]
    damaged.write_bytes(damaged.read_bytes()[:200])  # cut short, as a full disk leaves one
    before = _children()
    with pytest.raises(WorkerError, match=f"{doing}: BadZipFile: .*{damaged.name}"):
        run.export_batch(store, "exp", fmt, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"] and _children() <= before


def test_an_hf_export_counts_and_checksums_its_shards(batch, tmp_path):
    """The shards' digests come from the process that wrote them, hashed as they grew (two
    rows a row group: several a shard); the export's size is every file's it wrote."""
    options = {"row_group_rows": 2}
    summary = run.export_batch(batch.store, "exp", "hf", tmp_path / "hf", options=options)
    listed = dict(
        reversed(line.split("  ", 1))
        for line in (summary.out / "checksums.sha256").read_text().splitlines()
    )
    shards = sorted(p for p in (summary.out / "data").iterdir())
    assert shards and sorted(listed) == sorted(["README.md", *(f"data/{p.name}" for p in shards)])
    for name, digest in listed.items():
        assert hashlib.sha256((summary.out / name).read_bytes()).hexdigest() == digest
    assert summary.bytes == sum((summary.out / name).stat().st_size for name in listed)


def _children() -> set[int]:
    """This process's child processes (read from Linux's /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):  # ended while listed
            continue
        if parent == str(os.getpid()):
            found.add(int(stat.parent.name))
    return found


def test_an_export_killed_outright_leaves_nothing_once_run_again(batch, tmp_path):
    """A process killed with SIGKILL runs no cleanup: its temporary folder, named by its
    pid, is removed by the next export into the same place (a live one's is kept)."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], text=True, capture_output=True
    ).stdout.strip()
    stale = tmp_path / f".coco.partial-{gone}"
    (stale / "images").mkdir(parents=True)
    (stale / "images" / "half.png").write_bytes(b"\x89PNG")
    running = tmp_path / f".coco.partial-{os.getppid()}"  # a live process's: not touched
    running.mkdir()
    run.export_batch(batch.store, "exp", "coco", tmp_path / "coco", frames="first")
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "coco"]


_KILLED_MIDWAY = """
import os, signal, sys, time
from pathlib import Path
from vario.export import run
from vario.export.coco import CocoWriter
from vario.store.layout import DataStore

added, original = [], CocoWriter.add
def add(self, frame):
    added.append(frame)
    if len(added) == 12:  # some images written, the export not done: killed, no cleanup
        partial = self.ctx.out
        while len(list(partial.rglob("*.png"))) < 9:  # the copier's first three jobs
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
    original(self, frame)
CocoWriter.add = add
run.export_batch(DataStore(Path(sys.argv[1])), "exp", "coco", Path(sys.argv[2]))
"""


def test_an_export_killed_midway_resumes_without_writing_its_images_again(batch, tmp_path):
    out = tmp_path / "coco"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_MIDWAY, str(batch.store.root), str(out)], timeout=300
    )
    assert killed.returncode == -9 and not out.exists()
    (partial,) = tmp_path.glob(".coco.partial-*")
    cut, *whole = sorted(partial.rglob("*.png"))
    assert whole  # images were written before the kill
    cut.write_bytes(cut.read_bytes()[:100])  # as a write the kill cut short leaves it
    written = {p.relative_to(partial): p.stat().st_mtime_ns for p in whole}
    summary = run.export_batch(batch.store, "exp", "coco", out)
    assert sum(summary.frames.values()) == 21 and list(tmp_path.iterdir()) == [out]
    kept = {name: (out / name).stat().st_mtime_ns for name in written}
    assert kept == written  # taken over whole, not written again; the cut one written again
    fresh = run.export_batch(batch.store, "exp", "coco", tmp_path / "fresh")
    assert _files(out) == _files(fresh.out)


def _files(folder) -> dict:
    """Every file's bytes but the manifest's, COCO's ``info`` and the JSON files' digests
    (they hold the time)."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "export.json"):
        data = path.read_bytes()
        if path.suffix == ".json":
            data = {k: v for k, v in json.loads(data).items() if k != "info"}
        elif path.name == "checksums.sha256":  # those of JSON files hold the time too
            data = [line for line in data.splitlines() if not line.endswith(b".json")]
        found[path.relative_to(folder).as_posix()] = data
    return found


def test_linked_exports_share_one_read_only_copy_of_each_image(batch, tmp_path):
    first = run.export_batch(batch.store, "exp", "coco", tmp_path / "a", link=True)
    second = run.export_batch(batch.store, "exp", "yolo", tmp_path / "b", link=True)
    cache = batch.store.root / "cache" / "images"
    for summary in (first, second):
        for image in summary.out.rglob("*.png"):
            digest = hashlib.sha256(image.read_bytes()).hexdigest()
            cached = cache / digest[:2] / f"{digest}.png"
            assert image.stat().st_ino == cached.stat().st_ino  # a link, not a copy
            assert not cached.stat().st_mode & 0o222  # read-only: nobody edits it in place
    copied = run.export_batch(batch.store, "exp", "coco", tmp_path / "c")
    assert _files(copied.out) == _files(first.out)  # the same export, linked or copied
    assert all(p.stat().st_nlink == 1 for p in copied.out.rglob("*.png"))


def _vario(env: dict, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dagster_project.cli", "export", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_the_cli_exports_a_tested_batch_and_refuses_bad_requests(batch, tmp_path):
    env = {**os.environ, "VARIO_DATA_DIR": str(batch.store.root), "COLUMNS": "200"}
    done = _vario(env, "exp", "--format", "coco", "--out", str(tmp_path / "ok"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "ok")
    assert "coco export written: train" in done.stdout
    spec = tmp_path / "augment.yaml"
    spec.write_text("seed: 1\ntransforms:\n  sharpen: {p: 1}\n")
    bad = [
        (["--augment", str(spec)], "sharpen"),
        (["--where", "1=1) OR (1=1"], "not one SQL expression"),
        (["--split", "train=0.9"], "sum to 1"),
        (["--frames", "0"], "--frames"),
    ]
    for args, message in bad:
        refused = _vario(env, "exp", "--format", "coco", "--out", str(tmp_path / "no"), *args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert not (tmp_path / "no").exists()
    unknown = _vario(env, "nope", "--format", "coco", "--out", str(tmp_path / "no"))
    assert unknown.returncode == 2 and "no batch 'nope'" in unknown.stderr


def test_a_batch_failing_an_error_test_is_not_exported_unless_forced(batch, tmp_path):
    store = batch.store
    recorded = quality.results_path(store, "exp").read_text()
    failing = json.loads(recorded)
    failing["results"][0].update(passed=False, severity="ERROR")
    quality.results_path(store, "exp").write_text(json.dumps(failing))
    env = {**os.environ, "VARIO_DATA_DIR": str(store.root)}
    try:
        refused = _vario(env, "exp", "--format", "coco", "--out", str(tmp_path / "no"))
        assert refused.returncode == 1 and "failed ERROR dataset tests" in refused.stderr
        assert not (tmp_path / "no").exists()
        forced = _vario(env, "exp", "--format", "coco", "--out", str(tmp_path / "f"), "--force")
        assert forced.returncode == 0, forced.stderr
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("batches", ["exp"])
            result = dg.materialize(
                [dataset_export],
                partition_key=dg.MultiPartitionKey({"batch": "exp", "format": "yolo"}),
                instance=instance,
                resources={"storage": batch},
                raise_on_error=False,
            )
            assert not result.success
    finally:
        quality.results_path(store, "exp").write_text(recorded)


def test_the_dagster_asset_exports_one_batch_in_one_format(batch):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", ["exp"])
        result = dg.materialize(
            [dataset_export],
            partition_key=dg.MultiPartitionKey({"batch": "exp", "format": "coco"}),
            instance=instance,
            resources={"storage": batch},
        )
    (materialization,) = result.asset_materializations_for_node("dataset_export")
    metadata = materialization.metadata
    assert sum(metadata["frames per split"].value.values()) == 21
    assert metadata["size on disk (MiB)"].value > 0 and "sample" in metadata
    assert (batch.store.root / "exports" / "exp" / "coco" / "export.json").exists()
