"""``Client``: one HTTP session with the API key, typed answers, retries with backoff on
connection errors and 5xx answers (POSTs only when they carry an idempotency key). Files'
bytes (archives, exports) come over their own connections (``vario_client.transfer``)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from vario_client.errors import raise_for
from vario_client.models import GeneratorDetail, GeneratorSummary, QueryResult, Submitted
from vario_client.transfer import Transfers


class Client:
    """``Client(url, api_key)``; use it as a context manager, or ``close()`` it."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
    ):
        self.retries = retries
        self.base_url = f"{url.rstrip('/')}/v1"
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self.http = httpx.Client(base_url=self.base_url, headers=self._auth, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -- generators --------------------------------------------------------------------

    def generators(self) -> list[GeneratorSummary]:
        return [GeneratorSummary.model_validate(g) for g in self._json("GET", "/generators")]

    def parameters(self, name: str) -> GeneratorDetail:
        """The generator's version, description and parameters' JSON Schema."""
        return GeneratorDetail.model_validate(self._json("GET", f"/generators/{name}"))

    def validate(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Every parameter with defaults filled in; ``InvalidRequest`` names each bad one."""
        return self._json("POST", f"/generators/{name}/validate", json={"params": params})["params"]

    def random_params(self, name: str, seed: int = 0) -> dict[str, Any]:
        """Valid parameters drawn over the generator's domain for ``seed``."""
        return self._json("POST", f"/generators/{name}/sample", json={"seed": seed})["params"]

    # -- batches -----------------------------------------------------------------------

    def submit(self, spec: dict[str, Any] | str | Path, *, idempotency_key: str | None = None):
        """Queue a batch spec (a dict, or a YAML/JSON file's path); returns its ``Batch``.
        Retried safely: the request carries an idempotency key."""
        from vario_client.batch import Batch

        if isinstance(spec, dict):
            body, kind = json.dumps(spec).encode(), "application/json"
        else:
            body, kind = Path(spec).read_bytes(), "application/yaml"
        headers = {"Content-Type": kind, "Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        answer = Submitted.model_validate(
            self._json("POST", "/batches", content=body, headers=headers)
        )
        return Batch(self, answer.name)

    def batch(self, name: str):
        from vario_client.batch import Batch

        return Batch(self, name)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{job_id}")

    def query(self, sql: str, max_rows: int = 1000) -> QueryResult:
        """One read-only statement over the dataset's views."""
        body = {"sql": sql, "max_rows": max_rows}
        return QueryResult.model_validate(self._json("POST", "/query", json=body))

    # -- plumbing ----------------------------------------------------------------------

    def transfers(self) -> Transfers:
        """Connections for files' bytes (``vario_client.transfer``): archives and exports."""
        return Transfers(self.base_url, self._auth, self.timeout)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        raise_for(response)
        return response.json()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer to one request, retried with backoff (0.5 s, 1 s, 2 s...) when the
        connection fails or the server answers 5xx, if the request is safe to repeat."""
        headers = kwargs.get("headers") or {}
        repeatable = method in ("GET", "HEAD") or "Idempotency-Key" in headers
        attempts = self.retries + 1 if repeatable else 1
        for attempt in range(attempts - 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                pass
            else:
                if response.status_code < 500:
                    return response
            time.sleep(0.5 * 2**attempt)
        return self.http.request(method, path, **kwargs)  # the last try: its answer or error
