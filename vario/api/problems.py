"""Every error the API answers, as ``application/problem+json`` (RFC 9457): ``type``,
``title``, ``status``, ``detail``, and for invalid input ``errors``, one per field with its
path (``jobs[3].fov``) and message."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from generators.params import FieldErrors

MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = None


class ApiError(HTTPException):
    """An error a route raises on purpose: its status, detail and any field errors."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status, detail, headers)
        self.errors = errors


def response(
    status: int,
    detail: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    problem = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, errors=errors)
    return JSONResponse(
        problem.model_dump(exclude_none=True), status, headers=headers, media_type=MEDIA_TYPE
    )


def field_errors(messages: list[str]) -> list[FieldError]:
    """Vario's own validation messages (``name: what is wrong``) as field errors."""
    found = []
    for message in messages:
        name, sep, text = message.partition(": ")
        found.append(FieldError(field=name if sep else "", message=text if sep else message))
    return found


def _location(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or str(loc[0] if loc else "")


def _methods(request: Request) -> list[str]:
    """The methods the routes of the request's path answer (HEAD is GET's, undocumented)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
            methods |= set(route.methods or ())
    return sorted(methods - {"HEAD"})


def install(app: FastAPI) -> None:
    """The handlers that make every error a problem document."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return response(exc.status_code, exc.detail, exc.errors, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:  # every method of the path, not the first route's only
            headers = {**(headers or {}), "Allow": ", ".join(_methods(request))}
        return response(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [FieldError(field=_location(e["loc"]), message=e["msg"]) for e in exc.errors()]
        return response(422, "the request is invalid", errors[:20])

    @app.exception_handler(FieldErrors)
    async def _field_errors(request: Request, exc: FieldErrors) -> JSONResponse:
        return response(422, "the request is invalid", field_errors(exc.messages)[:20])


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {MEDIA_TYPE: {}}}
    for status in (400, 401, 403, 404, 409, 413, 422, 429)
}
