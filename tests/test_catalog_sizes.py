"""True sizes: every catalog entry's dimensions, in metres, agree with its source files (the
URDF's scale of the mesh, the mesh's own extents, the primitive's construction), read here
independently of the catalog's code."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pybullet as pb
import pytest
import trimesh

from generators.scene.catalog import DISTRACTOR, OBJECT_CATEGORIES, default_catalog
from generators.scene.description import SceneObject
from generators.sim import bullet

PRIMITIVES = {  # sides (x, y, z) in metres, from each primitive's radius and height
    "cylinder": (0.05, 0.05, 0.07),
    "cone": (0.06, 0.06, 0.07),
    "torus": (0.084, 0.084, 0.024),
    "capsule": (0.036, 0.036, 0.086),
}


def _urdf_scale(entry) -> np.ndarray:
    """The scale the entry's URDF gives its render mesh."""
    for mesh in ET.parse(entry.urdf).getroot().iter("mesh"):
        if mesh.get("filename").endswith(entry.render_mesh.name):
            values = [float(v) for v in mesh.get("scale", "1 1 1").split()]
            return np.array(values * 3 if len(values) == 1 else values)
    raise AssertionError(f"{entry.urdf} does not use {entry.render_mesh}")


def _extents(entry) -> np.ndarray:
    return trimesh.load(entry.render_mesh, force="mesh").extents


NAMED = [e for e in default_catalog() if e.category != DISTRACTOR]


@pytest.mark.parametrize("entry", NAMED, ids=lambda e: e.asset_id)
def test_dimensions_follow_the_assets_own_description(entry):
    dims = np.array(entry.dimensions)
    if entry.category in PRIMITIVES:
        np.testing.assert_allclose(dims, PRIMITIVES[entry.category], rtol=0.02)
        return
    if entry.urdf is None:  # a mesh alone: its proportions, at the catalog's size
        shape = _extents(entry)
        np.testing.assert_allclose(dims / dims.max(), shape / shape.max(), rtol=1e-6)
        return
    described = _extents(entry) * _urdf_scale(entry)
    if not np.allclose(dims, described, rtol=1e-6):
        # not the URDF's size: its shape, scaled uniformly to a tabletop object's size
        assert entry.category in OBJECT_CATEGORIES and 0.02 <= dims.max() <= 0.15
        np.testing.assert_allclose(dims / dims.max(), described / described.max(), rtol=1e-6)


def test_distractors_have_their_urdfs_size():
    distractors = default_catalog().category(DISTRACTOR)
    wrong = [
        e.asset_id
        for e in distractors
        if not np.allclose(e.dimensions, _extents(e) * _urdf_scale(e), rtol=1e-6)
    ]
    assert len(distractors) == 999 and wrong == []  # random_urdfs/168 has NaN vertices
    assert all(np.isfinite(e.dimensions).all() and min(e.dimensions) > 0 for e in distractors)


def test_a_jenga_block_is_a_block_in_the_catalog_and_in_the_simulator():
    entry = default_catalog()["jenga_block"]
    np.testing.assert_allclose(sorted(entry.dimensions), (0.015, 0.025, 0.075), rtol=0.01)
    client = bullet.connect()
    try:
        obj = SceneObject(
            name="j",
            asset_id="jenga_block",
            category="jenga_block",
            position=(0, 0, 0),
            static=True,
        )
        body = bullet.add_body(client, obj, default_catalog(), visual=False, collision=True)
        lo, hi = pb.getAABB(body, physicsClientId=client)
        margin = np.subtract(hi, lo) - entry.dimensions  # PyBullet pads by a collision margin
        assert np.allclose(margin, margin[0], atol=1e-4) and 0 <= margin[0] <= 0.005, margin
    finally:
        pb.disconnect(client)
