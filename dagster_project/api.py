"""The HTTP API as ``vario serve`` runs it: over the settings' data folder, and, with
``VARIO_S3_BUCKET``, over the data on S3 through the same storage resource (dagster-aws)
the assets use, which the Dagster-free API package cannot import itself."""

from __future__ import annotations

from fastapi import FastAPI

from dagster_project.resources import resolved_storage
from vario.api.app import create_app


def served_app() -> FastAPI:
    """The app uvicorn serves (a factory: each worker process builds its own)."""
    storage = resolved_storage()
    return create_app(storage.store, mirror=storage if storage.s3_bucket else None)
