"""What every job needs, loaded once per process by the forkserver that pool workers fork from.

The forkserver can only be told module names to import, so importing this module does the
work: afterwards each worker starts with it in memory (shared copy-on-write) instead of paying
seconds for it on its first job. It loads:

- every installed generator (through the registry) and so the scene, physics, renderer and
  label modules they import: PyBullet, PyAV, pycocotools, trimesh;
- the asset catalog, whose meshes trimesh reads and measures;
- pandas, which pyarrow imports the first time it builds a table from Python rows.

The catalog reflects the environment the forkserver started with; a worker given other
``VARIO_*`` settings reads it again (``vario.run.pool.init_worker``).

In the forkserver (the process whose parent started it, as ``FORKSERVER_PARENT`` names) it
also ties the forkserver's life to that parent's: Python's forkserver outlives a parent
killed with SIGKILL, and keeps its pool workers with it.
"""

from __future__ import annotations

import contextlib
import os

import pyarrow as pa

from generators.contract import registry
from generators.render.isolation import die_with_parent
from generators.scene import catalog
from vario.run.pool import FORKSERVER_PARENT


def warm() -> None:
    """Load it all; a failure is left for the first job that needs the piece to report, since
    an exception here would take the forkserver, and with it the whole pool, down."""
    with contextlib.suppress(Exception):
        registry.available()
        catalog.default_catalog()
        pa.Table.from_pylist([{"warm": 1}])


if os.environ.get(FORKSERVER_PARENT) == str(os.getppid()):
    die_with_parent(os.getppid())
warm()
