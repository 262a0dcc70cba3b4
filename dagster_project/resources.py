"""Resources configured from the environment (``generators.settings``), with the embedded
local defaults. A value the environment sets is passed as ``EnvVar``, so the UI shows where
it comes from; a default is passed as its value."""

from __future__ import annotations

import dagster as dg

from assets_defs.evaluation import ModelTestsResource
from assets_defs.quality import DatasetTestsResource
from assets_defs.storage import StorageResource
from generators.settings import Settings, settings


def _setting(s: Settings, field: str) -> dg.EnvVar | str | None:
    if field in s.model_fields_set:
        return dg.EnvVar(f"VARIO_{field.upper()}")
    value = getattr(s, field)
    return None if value is None else str(value)


def storage() -> StorageResource:
    """The local data folder; with ``VARIO_S3_BUCKET`` (and optionally ``VARIO_S3_PREFIX``,
    ``VARIO_S3_ENDPOINT_URL``, ``VARIO_S3_REGION``; credentials from the usual AWS variables)
    a working copy of that S3 prefix."""
    s = settings()
    fields = ("s3_bucket", "s3_prefix", "s3_endpoint_url", "s3_region")
    s3 = {f: _setting(s, f) for f in fields if _setting(s, f) is not None}
    return StorageResource(root=_setting(s, "data_dir"), **s3)


def resolved_storage() -> StorageResource:
    """``storage()`` with its environment variables read, for use outside Dagster (the CLI)."""
    with dg.build_resources({"storage": storage()}) as resources:
        return resources.storage


def dataset_tests() -> DatasetTestsResource:
    """Tests files from the templates folder (``VARIO_TEMPLATES_DIR``)."""
    return DatasetTestsResource(templates=_setting(settings(), "templates_dir"))


def model_tests() -> ModelTestsResource:
    """Model tests files from the templates folder (``VARIO_TEMPLATES_DIR``)."""
    return ModelTestsResource(templates=_setting(settings(), "templates_dir"))
