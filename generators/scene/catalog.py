"""The offline asset catalog: named objects from ``pybullet_data``, trimesh primitives, the
procedural ``random_urdfs`` objects (999 of 1,000: one has NaN vertices) as the ``distractor``
category, and the user's own assets. Every entry's size is in metres (``dimensions``).

Nothing is downloaded: ``pybullet_data`` ships with PyBullet, and primitives are generated once
into the cache folder (``VARIO_CACHE_DIR``, default ``~/.cache/vario``), as is the list of
distractors found in ``random_urdfs`` (once per PyBullet version). User assets are OBJ
meshes in ``$VARIO_CATALOG_DIR/<category>/<name>.obj`` (metres), each with an optional
``<name>.json`` giving ``size`` (longest side, m), ``color`` (RGBA) and ``mass`` (kg).

A catalog has a content hash (``Catalog.content_hash``) that job ids include, and fixed COCO
category ids (``Catalog.category_ids``): docs/conventions.md, "Identity and determinism".
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import numpy as np
import pybullet_data
from pydantic import AfterValidator, TypeAdapter, ValidationError, WithJsonSchema

from generators.settings import settings

PYBULLET_DATA = Path(pybullet_data.getDataPath())
DISTRACTOR = "distractor"
SILHOUETTE_FACES = 400  # enough for a pixel-accurate outline at 1024 px, cheap to rasterise


def cache_dir() -> Path:
    return settings().cache_dir


def user_catalog_dir() -> Path:
    return settings().user_catalog_dir


def user_asset_files() -> list[Path]:
    """The user's meshes, ``<category>/<name>.obj`` in the user catalog folder, sorted."""
    folder = user_catalog_dir()
    return sorted(folder.glob("*/*.obj")) if folder.is_dir() else []


@dataclass(frozen=True)
class MeshInfo:
    """What labelling needs of a render mesh, in mesh units (before the asset's scale)."""

    center: np.ndarray  # centre of the axis-aligned box; an object's reference point
    half_extents: np.ndarray
    convex: bool
    silhouette_vertices: np.ndarray  # (V, 3), relative to ``center``
    silhouette_faces: np.ndarray  # (F, 3); empty when ``convex`` (the hull of vertices suffices)


@dataclass(frozen=True)
class AssetEntry:
    asset_id: str
    category: str
    render_mesh: Path
    collision_mesh: Path  # convex-decomposed where the source has one; PyBullet hulls it
    urdf: Path | None  # the URDF the asset's shape comes from, where there is one
    scale: tuple[float, float, float]  # from mesh units to metres, per mesh axis
    color: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0)
    texture: Path | None = None
    mass: float = 0.1

    @property
    def mesh(self) -> MeshInfo:
        return mesh_info(self.render_mesh)

    @property
    def dimensions(self) -> tuple[float, float, float]:
        """The sides of the asset's box along its mesh axes, in metres."""
        return tuple(float(v) for v in 2 * self.mesh.half_extents * np.asarray(self.scale))

    @property
    def nominal_size(self) -> float:
        """Longest side of the asset's box, in metres."""
        return max(self.dimensions)


@functools.lru_cache(maxsize=2048)
def mesh_info(path: Path) -> MeshInfo:
    import trimesh  # on first use: it imports scipy and networkx, which listing generators skips

    mesh = trimesh.load(path, force="mesh")
    mesh.merge_vertices(merge_tex=True, merge_norm=True)  # UV seams split otherwise-closed meshes
    lo, hi = mesh.bounds
    center = (lo + hi) / 2
    convex = bool(mesh.is_watertight and mesh.is_convex)
    if convex:
        vertices, faces = mesh.convex_hull.vertices, np.empty((0, 3), np.int64)
    else:
        small = mesh
        if len(mesh.faces) > SILHOUETTE_FACES:
            small = mesh.simplify_quadric_decimation(face_count=SILHOUETTE_FACES)
        vertices, faces = small.vertices, small.faces
    return MeshInfo(center, (hi - lo) / 2, convex, np.asarray(vertices) - center, faces)


# category -> (render mesh, collision mesh or None for the render mesh, the URDF describing the
# asset or None, longest side in m or None, rgba, texture, mass in kg). The shape, and unless a
# longest side is given the size too, come from the URDF's scale of the mesh (per axis). A
# longest side given here scales that shape uniformly to a tabletop-realistic size where
# pybullet_data's own is not (a 1 m soccer ball, a 15 cm jenga block, twice the real one).
_NAMED = {
    "duck": (
        "duck.obj",
        "duck_vhacd.obj",
        "duck_vhacd.urdf",
        None,
        (1, 1, 0.4, 1),
        "duckCM.png",
        0.1,
    ),
    "teddy": ("teddy2_VHACD_CHs.obj", None, "teddy_vhacd.urdf", None, (1, 0.4, 0.4, 1), None, 0.1),
    "bunny": ("bunny.obj", None, None, 0.08, (0.9, 0.85, 0.8, 1), None, 0.1),
    "soccer_ball": (
        "soccerball.obj",
        None,
        "soccerball.urdf",
        0.07,
        (1, 1, 1, 1),
        "colors16.png",
        0.05,
    ),
    "lego_brick": (
        "lego/lego.obj",
        "lego/lego_vhacd.obj",
        "lego/lego.urdf",
        None,
        (1, 0.2, 0.2, 1),
        None,
        0.01,
    ),
    "jenga_block": (
        "jenga/jenga.obj",
        None,
        "jenga/jenga.urdf",
        0.075,
        (1, 1, 1, 1),
        "jenga/jenga.png",
        0.02,
    ),
    "domino": (
        "domino/domino.obj",
        None,
        "domino/domino.urdf",
        None,
        (1, 1, 1, 1),
        "domino/domino.jpg",
        0.025,
    ),
    "cube": ("cube.obj", None, "cube.urdf", 0.05, (0.3, 0.6, 1, 1), "cube.png", 0.1),
    "sphere": (
        "textured_sphere_smooth.obj",
        None,
        "sphere_small.urdf",
        None,
        (1, 1, 1, 1),
        "checker_blue.png",
        0.1,
    ),
    "mug": (
        "objects/mug.obj",
        "objects/mug_col.obj",
        "objects/mug.urdf",
        None,
        (1, 0.2, 0.2, 1),
        None,
        0.2,
    ),
    "table": (
        "table/table.obj",
        None,
        "table/table.urdf",
        None,
        (1, 1, 1, 1),
        "table/table.png",
        0.0,
    ),
    "tray": (
        "tray/tray_textured.obj",
        None,
        "tray/traybox.urdf",
        None,
        (1, 1, 1, 1),
        "tray/tray.jpg",
        0.0,
    ),
}

# Primitives made with trimesh.creation, in metres (scale 1): function name and arguments.
_PRIMITIVES = {
    "cylinder": ("cylinder", {"radius": 0.025, "height": 0.07, "sections": 32}),
    "cone": ("cone", {"radius": 0.03, "height": 0.07, "sections": 32}),
    "torus": ("torus", {"major_radius": 0.03, "minor_radius": 0.012}),
    "capsule": ("capsule", {"height": 0.05, "radius": 0.018, "count": [16, 16]}),
}
_PRIMITIVE_COLORS = {
    "cylinder": (0.2, 0.8, 0.3, 1),
    "cone": (0.9, 0.5, 0.1, 1),
    "torus": (0.6, 0.3, 0.9, 1),
    "capsule": (0.1, 0.7, 0.8, 1),
}

# The categories a tabletop scene treats as objects of interest (furniture and distractors aside).
OBJECT_CATEGORIES = tuple([c for c in _NAMED if c not in ("table", "tray")] + list(_PRIMITIVES))

# The built-in categories in the order that gives their COCO category ids (1, 2, ...), so that
# no user category ever moves them. Frozen: a new built-in category is appended, never
# inserted, and none is removed (the first 17 are in the order of the ids they had when
# every category was numbered by name).
BUILTIN_CATEGORIES = (
    "bunny",
    "capsule",
    "cone",
    "cube",
    "cylinder",
    DISTRACTOR,
    "domino",
    "duck",
    "jenga_block",
    "lego_brick",
    "mug",
    "soccer_ball",
    "sphere",
    "table",
    "teddy",
    "torus",
    "tray",
)


def _write_cached(path: Path, text: str) -> None:
    """A cache file written whole or not at all: concurrent workers never read half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _primitive_mesh(name: str) -> Path:
    """The primitive's OBJ, written into the cache folder once."""
    path = cache_dir() / "primitives" / f"{name}.obj"
    if not path.exists():
        import trimesh

        make, arguments = _PRIMITIVES[name]
        mesh = getattr(trimesh.creation, make)(**arguments)
        _write_cached(path, trimesh.exchange.obj.export_obj(mesh, include_texture=False))
    return path


# a distractor as cached: URDF and mesh paths relative to pybullet_data, scale, colour
_Distractor = tuple[str, str, tuple[float, float, float], tuple[float, float, float, float]]
_DISTRACTORS = TypeAdapter(list[_Distractor])


def _distractors() -> list[AssetEntry]:
    """The ``random_urdfs`` objects whose mesh is finite, as ``distractor`` entries.

    Parsing the 1,000 URDFs and scanning their meshes took a fifth of a second of every
    process that loads the catalog (render workers, exports, the CLI). What it finds depends
    on ``pybullet_data``'s files alone, which the package's version stands for (as in the
    content hash), so it is kept in the cache folder once per version; a cache file that
    does not read back as expected is made again."""
    path = cache_dir() / "catalog" / f"random_urdfs-pybullet-{version('pybullet')}.json"
    try:
        found = _DISTRACTORS.validate_json(path.read_bytes())
        if any(not _inside_package(name) for row in found for name in row[:2]):
            raise ValueError(f"{path}: a path outside pybullet_data")
    except (OSError, ValidationError, ValueError):
        found = _scan_distractors()
        _write_cached(path, _DISTRACTORS.dump_json(found).decode())
    return [
        AssetEntry(
            f"random_{Path(urdf).stem}",
            DISTRACTOR,
            PYBULLET_DATA / mesh,
            PYBULLET_DATA / mesh,
            PYBULLET_DATA / urdf,
            scale,
            rgba,
        )
        for urdf, mesh, scale, rgba in found
    ]


def _inside_package(name: str) -> bool:
    """Whether a cached relative path names a file inside ``pybullet_data``."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _scan_distractors() -> list[_Distractor]:
    found = []
    for urdf in sorted((PYBULLET_DATA / "random_urdfs").glob("*/*.urdf")):
        mesh, scale, rgba = _urdf_mesh(urdf)
        if _finite_obj(mesh):  # random_urdfs/168 ships NaN vertices
            relative = (urdf.relative_to(PYBULLET_DATA), mesh.relative_to(PYBULLET_DATA))
            found.append((*(p.as_posix() for p in relative), scale, rgba))
    return found


def _urdf_mesh(
    urdf: Path, mesh_name: str | None = None
) -> tuple[Path, tuple[float, float, float], tuple[float, float, float, float]]:
    """Render mesh, per-axis scale and colour of a URDF's first visual (or of its first
    visual whose mesh file is ``mesh_name``)."""
    for visual in ET.parse(urdf).getroot().iter("visual"):
        mesh = visual.find("geometry/mesh")
        if mesh is None or (mesh_name and Path(mesh.get("filename")).name != mesh_name):
            continue
        color = visual.find("material/color")
        rgba = tuple(float(v) for v in color.get("rgba").split()) if color is not None else None
        scale = [float(v) for v in mesh.get("scale", "1 1 1").split()]
        scale = scale * 3 if len(scale) == 1 else scale
        return urdf.parent / mesh.get("filename"), tuple(scale), rgba or (0.8, 0.8, 0.8, 1.0)
    raise ValueError(f"{urdf}: no visual mesh {mesh_name or ''}".rstrip())


_VERTEX = re.compile(rb"^v[ \t]([^\n]*)", re.MULTILINE)


def _obj_vertices(path: Path) -> list[bytes]:
    """The text of an OBJ file's vertex lines after the ``v``."""
    return _VERTEX.findall(path.read_bytes())


def _finite_obj(path: Path) -> bool:
    """Whether every vertex of an OBJ file is a finite number."""
    vertices = b"\n".join(_obj_vertices(path)).lower()
    return bool(vertices) and b"nan" not in vertices and b"inf" not in vertices


def _obj_half_extents(path: Path) -> np.ndarray:
    """Half the size of an OBJ file's vertices' bounding box along each axis: what
    ``mesh_info(path).half_extents`` gives for the built-in meshes (every vertex of theirs
    is on a face), without loading the mesh (trimesh and its imports)."""
    points = np.array([[float(v) for v in line.split()[:3]] for line in _obj_vertices(path)])
    return (points.max(0) - points.min(0)) / 2


def _named_scale(render: Path, urdf: Path | None, size: float | None) -> tuple[float, ...]:
    """The URDF's scale of the mesh, uniformly rescaled to ``size`` (longest side) if given."""
    shape = np.asarray(_urdf_mesh(urdf, render.name)[1] if urdf else (1.0, 1.0, 1.0))
    if size is not None:
        shape = shape * size / (2 * _obj_half_extents(render) * shape).max()
    return tuple(float(v) for v in shape)


def _number(value: float) -> str:
    """A number as the content hash reads it: 12 significant digits, so that the last bit of
    a computed scale cannot make two equal catalogs differ."""
    return f"{float(value):.12g}"


_PYBULLET_PREFIX = os.path.join(PYBULLET_DATA, "")  # the folder, with its separator


def _file_identity(path: Path | None, digests: dict[Path, str]) -> str | None:
    """A file as the content hash reads it: one of ``pybullet_data`` by its path in the
    package (the package's version stands for its bytes), any other (primitives, user meshes)
    by the SHA-256 of its bytes, read once per hash. Never the absolute path: the same files
    in another folder or on another machine are the same catalog."""
    if path is None:
        return None
    name = os.fspath(path)  # string checks: pathlib's cost most of the hash (4,000 files)
    if name.startswith(_PYBULLET_PREFIX):
        return "pybullet_data/" + name[len(_PYBULLET_PREFIX) :].replace(os.sep, "/")
    if path not in digests:
        digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests[path]


def _entry_identity(entry: AssetEntry, digests: dict[Path, str]) -> list:
    """Everything of an entry that can change a render or a label. A user mesh's ``.json``
    counts through what it sets (scale, colour, mass)."""
    files = (entry.render_mesh, entry.collision_mesh, entry.urdf, entry.texture)
    return [
        entry.asset_id,
        entry.category,
        *(_file_identity(f, digests) for f in files),
        [_number(v) for v in entry.scale],
        [_number(v) for v in entry.color],
        _number(entry.mass),
    ]


class Catalog:
    """All assets by id; ``category(name)`` lists one category's ids in a stable order."""

    def __init__(self, entries: list[AssetEntry]):
        self._entries = {e.asset_id: e for e in entries}

    @functools.cached_property
    def content_hash(self) -> str:
        """16 hex digits of SHA-256 over every entry in catalog order (the order a generator
        picks assets in) and PyBullet's version. Job ids include it, so a job rendered with
        other assets never shares an id with one rendered with these. Computed once per
        catalog, which ``default_catalog`` builds once per process."""
        digest = hashlib.sha256(f"pybullet {version('pybullet')}\n".encode())
        digests: dict[Path, str] = {}
        for entry in self:
            digest.update(json.dumps(_entry_identity(entry, digests)).encode() + b"\n")
        return digest.hexdigest()[:16]

    def category_ids(self) -> dict[str, int]:
        """COCO category ids: the built-in categories' from ``BUILTIN_CATEGORIES`` (1, 2, ...),
        whatever the user adds; then the user's own categories, sorted by name."""
        user = sorted(set(self.categories()) - set(BUILTIN_CATEGORIES))
        return {name: i + 1 for i, name in enumerate((*BUILTIN_CATEGORIES, *user))}

    def __getitem__(self, asset_id: str) -> AssetEntry:
        return self._entries[asset_id]

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def categories(self) -> list[str]:
        return sorted({e.category for e in self})

    def category(self, name: str) -> list[AssetEntry]:
        return [e for e in self if e.category == name]


@functools.cache
def default_catalog() -> Catalog:
    entries = []
    for category, (render, collision, urdf_name, size, rgba, texture, mass) in _NAMED.items():
        render_path = PYBULLET_DATA / render
        urdf = PYBULLET_DATA / urdf_name if urdf_name else None
        entries.append(
            AssetEntry(
                asset_id=category,
                category=category,
                render_mesh=render_path,
                collision_mesh=PYBULLET_DATA / (collision or render),
                urdf=urdf,
                scale=_named_scale(render_path, urdf, size),
                color=rgba,
                texture=PYBULLET_DATA / texture if texture else None,
                mass=mass,
            )
        )
    for name in _PRIMITIVES:
        path = _primitive_mesh(name)
        entries.append(
            AssetEntry(name, name, path, path, None, (1.0,) * 3, _PRIMITIVE_COLORS[name], None, 0.1)
        )
    entries += _distractors()
    entries += [_user_entry(path) for path in user_asset_files()]
    return Catalog(entries)


def _user_entry(path: Path) -> AssetEntry:
    meta_file = path.with_suffix(".json")
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    extent = 2 * mesh_info(path).half_extents.max()
    return AssetEntry(
        asset_id=f"{path.parent.name}/{path.stem}",
        category=path.parent.name,
        render_mesh=path,
        collision_mesh=path,
        urdf=None,
        scale=(meta.get("size", extent) / extent,) * 3,
        color=tuple(meta.get("color", (0.7, 0.7, 0.7, 1.0))),
        mass=meta.get("mass", 0.1),
    )


def object_categories() -> tuple[str, ...]:
    """Categories that can be objects of interest: the built-in ones and the user's."""
    user = sorted({p.parent.name for p in user_asset_files()} - set(OBJECT_CATEGORIES))
    return (*OBJECT_CATEGORIES, *user)


def refresh() -> Catalog:
    """The catalog read again, with user assets added since it was last read."""
    default_catalog.cache_clear()
    return default_catalog()


def check_category(name: str, extra: tuple[str, ...] = ()) -> str:
    """A pydantic validator: ``name`` must be a category of the catalog as it is now."""
    if name in extra or name in OBJECT_CATEGORIES:
        return name
    if name not in object_categories():
        raise ValueError(f"{name!r} is not a catalog category ({', '.join(object_categories())})")
    return name


# A parameter naming an object category. Its choices come from the catalog: the built-in
# categories and the user's, checked against the catalog as it is when a job is validated
# (so new user assets need no restart).
ObjectCategory = Annotated[
    str,
    AfterValidator(check_category),
    WithJsonSchema({"type": "string", "enum": list(object_categories())}),
]
