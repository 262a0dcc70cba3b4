"""Resources configured from the environment, with embedded local defaults."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets_defs.storage import StorageResource

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def storage() -> StorageResource:
    """``VARIO_DATA_DIR`` when set, else the project's ``data/`` folder."""
    if os.environ.get("VARIO_DATA_DIR"):
        return StorageResource(root=dg.EnvVar("VARIO_DATA_DIR"))
    return StorageResource(root=str(DEFAULT_DATA_DIR))
