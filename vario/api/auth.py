"""The dependency every route declares: a bearer API key of the scope it needs, within the
key's rate. No key or a wrong one: 401 (with ``WWW-Authenticate``); a key whose scope is
too small: 403; too many requests: 429 with ``Retry-After``."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vario.api.keys import ApiKey, Scope, load_keys, verify
from vario.api.problems import ApiError

_bearer = HTTPBearer(auto_error=False, description="An API key: `vario api-key create`.")


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests a minute, in bursts of as many."""

    def __init__(self, per_minute: int):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)
        self._lock = threading.Lock()

    def wait(self, key_id: str) -> float:
        """0 when the key may go on (one token taken), else seconds until it may."""
        with self._lock:
            now = time.monotonic()
            tokens, then = self._buckets.get(key_id, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.rate)
            if tokens >= 1:
                self._buckets[key_id] = (tokens - 1, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1 - tokens) / self.rate


def require(scope: Scope) -> Callable[..., ApiKey]:
    """The dependency for a route that needs ``scope``."""

    async def authorized(  # async: checked in the event loop, not handed to a thread
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            detail = "an API key is required (Authorization: Bearer ...)"
            raise ApiError(401, detail, None, challenge)
        key = verify(load_keys(request.app.state.store), credentials.credentials)
        if key is None:
            raise ApiError(401, "the API key is not valid", None, challenge)
        if not key.allows(scope):
            raise ApiError(403, f"this key's scope is {key.scope!r}; this needs {scope!r}")
        wait = request.app.state.limiter.wait(key.id)
        if wait:
            headers = {"Retry-After": str(math.ceil(wait))}
            raise ApiError(429, "too many requests for this key; try again later", None, headers)
        return key

    return authorized
