"""Resources configured from the environment, with embedded local defaults."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets_defs.quality import DatasetTestsResource
from assets_defs.storage import StorageResource
from dagster_project.instance import PROJECT_ROOT

DATA_DIR_ENV = "VARIO_DATA_DIR"


def data_dir() -> Path:
    """``$VARIO_DATA_DIR``, else the project's ``data/`` folder."""
    return Path(os.environ.get(DATA_DIR_ENV) or PROJECT_ROOT / "data")


def user_catalog() -> Path:
    """``$VARIO_CATALOG_DIR``, defaulting to ``catalog/`` in the data folder; exported so that
    render workers see the same user assets."""
    from generators.scene.catalog import USER_CATALOG_ENV

    os.environ.setdefault(USER_CATALOG_ENV, str(data_dir() / "catalog"))
    return Path(os.environ[USER_CATALOG_ENV])


S3_SETTINGS = {  # StorageResource field -> environment variable
    "s3_bucket": "VARIO_S3_BUCKET",
    "s3_prefix": "VARIO_S3_PREFIX",
    "s3_endpoint_url": "VARIO_S3_ENDPOINT_URL",
    "s3_region": "VARIO_S3_REGION",
}


def storage() -> StorageResource:
    """The local data folder; with ``VARIO_S3_BUCKET`` (and optionally ``VARIO_S3_PREFIX``,
    ``VARIO_S3_ENDPOINT_URL``, ``VARIO_S3_REGION``; credentials from the usual AWS variables)
    a working copy of that S3 prefix."""
    root = dg.EnvVar(DATA_DIR_ENV) if os.environ.get(DATA_DIR_ENV) else str(data_dir())
    s3 = {field: dg.EnvVar(env) for field, env in S3_SETTINGS.items() if os.environ.get(env)}
    return StorageResource(root=root, **s3)


def resolved_storage() -> StorageResource:
    """``storage()`` with its environment variables read, for use outside Dagster (the CLI)."""
    with dg.build_resources({"storage": storage()}) as resources:
        return resources.storage


def dataset_tests() -> DatasetTestsResource:
    """Tests files from ``$VARIO_TEMPLATES_DIR``, default the project's ``batch_templates``."""
    folder = os.environ.get("VARIO_TEMPLATES_DIR") or str(PROJECT_ROOT / "batch_templates")
    return DatasetTestsResource(templates=folder)
