"""Typed errors for the API's problem documents (RFC 9457)."""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    """An error answer: its status, the problem's detail and, for invalid input, the errors
    per field (``[{"field": ..., "message": ...}]``)."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, str]] | None = None):
        self.status = status
        self.detail = detail
        self.errors = errors or []
        lines = [f"{status}: {detail}", *(f"  {e['field']}: {e['message']}" for e in self.errors)]
        super().__init__("\n".join(lines))


class InvalidRequest(ApiError):
    """422 (or 400, 413, 415): what was sent cannot be used; ``errors`` says where."""


class Unauthorized(ApiError):
    """401: no API key, or not a valid one."""


class Forbidden(ApiError):
    """403: the key's scope does not allow this."""


class NotFound(ApiError):
    """404."""


class Conflict(ApiError):
    """409: a batch name taken by another spec."""


class RateLimited(ApiError):
    """429: ``retry_after`` seconds until the key may go on."""

    def __init__(self, status: int, detail: str, retry_after: float):
        super().__init__(status, detail)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx, after the retries."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
}


def raise_for(response: httpx.Response) -> None:
    """The typed error for an error answer; nothing for a success."""
    if response.status_code < 400:
        return
    try:
        problem: dict[str, Any] = response.json()
    except ValueError:
        problem = {"detail": response.text[:500]}
    detail = str(problem.get("detail") or problem.get("title") or response.reason_phrase)
    status = response.status_code
    if status == 429:
        raise RateLimited(status, detail, float(response.headers.get("Retry-After", "1")))
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    raise cls(status, detail, problem.get("errors"))
