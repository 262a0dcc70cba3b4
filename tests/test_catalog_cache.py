"""The catalog's distractors are found once per PyBullet version and kept in the cache folder:
a catalog built from that file is the one a scan of ``pybullet_data`` builds, and a file that
is damaged or names paths outside the package is scanned again, not trusted."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest

from generators.scene.catalog import DISTRACTOR, default_catalog


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder, and a catalog built afresh from it (and again after)."""
    monkeypatch.setenv("VARIO_CACHE_DIR", str(tmp_path))
    default_catalog.cache_clear()
    yield tmp_path / "catalog" / f"random_urdfs-pybullet-{version('pybullet')}.json"
    default_catalog.cache_clear()


def _distractors() -> list:
    default_catalog.cache_clear()
    return default_catalog().category(DISTRACTOR)


def test_a_catalog_from_the_cache_is_the_scanned_one(cache: Path):
    scanned, scanned_hash = _distractors(), default_catalog().content_hash
    assert cache.exists() and len(scanned) == 999  # random_urdfs/168 has NaN vertices
    assert [e.asset_id for e in scanned[:2]] == ["random_000", "random_001"]
    assert _distractors() == scanned and default_catalog().content_hash == scanned_hash

    rows = json.loads(cache.read_text())  # what is read is the cache's: a changed colour shows
    rows[0][3] = [0.1, 0.2, 0.3, 1.0]
    cache.write_text(json.dumps(rows))
    assert _distractors()[0].color == (0.1, 0.2, 0.3, 1.0)


@pytest.mark.parametrize(
    "damage",
    [
        lambda rows: "{not json",
        lambda rows: json.dumps(rows[:3] + [["x.urdf", "x.obj", [1, 1], [0, 0, 0, 1]]]),
        lambda rows: json.dumps([["../../etc/x.urdf", *rows[0][1:]], *rows[1:]]),
        lambda rows: json.dumps([["/etc/x.urdf", *rows[0][1:]], *rows[1:]]),
    ],
    ids=["not-json", "a-bad-row", "a-path-out-of-the-package", "an-absolute-path"],
)
def test_a_damaged_cache_is_scanned_again(cache: Path, damage):
    scanned = _distractors()
    cache.write_text(damage(json.loads(cache.read_text())))
    assert _distractors() == scanned
    assert _distractors() == scanned  # and the file made whole again
