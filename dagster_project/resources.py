"""Resources configured from the environment, with embedded local defaults."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets_defs.storage import StorageResource
from dagster_project.instance import PROJECT_ROOT

DATA_DIR_ENV = "VARIO_DATA_DIR"


def data_dir() -> Path:
    """``$VARIO_DATA_DIR``, else the project's ``data/`` folder."""
    return Path(os.environ.get(DATA_DIR_ENV) or PROJECT_ROOT / "data")


def user_catalog() -> Path:
    """``$VARIO_CATALOG_DIR``, defaulting to ``catalog/`` in the data folder; exported so that
    render workers see the same user assets."""
    from generators.catalog import USER_CATALOG_ENV

    os.environ.setdefault(USER_CATALOG_ENV, str(data_dir() / "catalog"))
    return Path(os.environ[USER_CATALOG_ENV])


def storage() -> StorageResource:
    if os.environ.get(DATA_DIR_ENV):
        return StorageResource(root=dg.EnvVar(DATA_DIR_ENV))
    return StorageResource(root=str(data_dir()))
