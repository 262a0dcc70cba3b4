"""The application: every router under ``/v1``, errors as problem documents, request bodies
capped, CORS only for configured origins. ``create_app`` reads the settings once."""

from __future__ import annotations

from importlib.metadata import version

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from generators.settings import settings
from vario.api import problems
from vario.api.auth import RateLimiter
from vario.api.routers import batches, exports, generators, jobs, query
from vario.api.working_copy import Mirror
from vario.store.layout import DataStore


class BodyLimit:
    """Refuses (413) a request whose body is larger than ``limit`` bytes, by its
    ``Content-Length`` before reading it, or as it streams in when it has none."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is larger than {self.limit:,} bytes (VARIO_API_MAX_BODY_BYTES)"
        await problems.response(413, detail)(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(store: DataStore | None = None, mirror: Mirror | None = None) -> FastAPI:
    """The API over ``store`` (default: the settings' data folder); with ``mirror``, that
    folder is a working copy of the data on S3 (``vario.api.working_copy``)."""
    config = settings()
    app = FastAPI(
        title="Vario",
        version=version("vario"),
        description="Synthetic data for computer vision: generators, batches, jobs and "
        "their archives, queries over the labels. Every route needs an API key "
        "(`vario api-key create`) as a bearer token; errors are problem documents.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.store = store or DataStore(config.data_dir)
    app.state.mirror = mirror
    app.state.limiter = RateLimiter(config.api_rate_per_minute)
    problems.install(app)
    routers = (generators.router, batches.router, exports.router, jobs.router, query.router)
    for router in routers:
        app.include_router(router, prefix="/v1")
    if config.api_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.api_cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Range"],
        )
    app.add_middleware(BodyLimit, limit=config.api_max_body_bytes)
    made = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            made()["components"]["schemas"].update(batches.spec_schemas())
        return app.openapi_schema

    app.openapi = openapi
    return app
