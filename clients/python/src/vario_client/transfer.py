"""Files' bytes from the API straight into files: archives and export files.

Requests and JSON answers go through httpx (``Client``); bodies saved to disk come here,
through the standard library's ``http.client``, which reads a body into one reused buffer
(``readinto``: one copy from the socket) that is then hashed and written as it is. httpx hands
a body over in new 64 KiB ``bytes`` through h11's buffers: measured on two cores, that cost
the client about three times the CPU of the rest of a download, and a download was bound by
the client's CPU. Each thread keeps one keep-alive connection per ``Transfers``.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx

from vario_client.errors import raise_for

BUFFER = 1 << 20  # bytes read, hashed and written at a time
ERROR_BODY = 64 * 1024  # at most this much of an error answer is read (a problem document)

Failure = (OSError, http.client.HTTPException)  # a connection refused, reset or cut short


class Cut(ConnectionError):
    """The body ended before its ``Content-Length``: the server or the network dropped it."""


class Transfers:
    """GETs against ``url`` (the API's base, ``…/v1``) with ``headers`` on every request;
    a context manager that closes every connection it opened."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url}: not an http(s) URL")
        self._secure = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = headers
        self._timeout = timeout
        self._local = threading.local()
        self._opened: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Transfers:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            for connection in self._opened:
                connection.close()
            self._opened.clear()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self._secure:
                connection = http.client.HTTPSConnection(
                    self._host,
                    self._port,
                    timeout=self._timeout,
                    context=ssl.create_default_context(),
                )
            else:
                connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    @contextmanager
    def get(self, path: str, headers: dict[str, str] | None = None) -> Iterator[Answer]:
        """The answer to ``GET path`` (relative to the base), its body not read yet. A
        connection that failed is dropped: the next request opens a new one."""
        connection = self._connection()
        try:
            connection.request(
                "GET", self._prefix + path, headers={**self._headers, **(headers or {})}
            )
            answer = Answer(connection.getresponse())
            yield answer
            answer.finish()
        except BaseException:
            connection.close()
            raise


class Answer:
    """One answer: ``status``, ``headers``; ``save`` writes its body, ``raise_for_status``
    raises the API's typed error for an error answer."""

    def __init__(self, response: http.client.HTTPResponse):
        self._response = response
        self.status = response.status
        self.headers = response.headers
        self.received = 0  # bytes of the body saved so far, also when it was cut short

    def save(self, out: IO[bytes], digest: Any = None) -> int:
        """The body written to ``out`` (and fed to ``digest``), a buffer at a time; returns
        its size. ``Cut`` when it ends before its announced length."""
        expected = self._response.length
        buffer = memoryview(bytearray(BUFFER))
        while n := self._response.readinto(buffer):
            chunk = buffer[:n]
            out.write(chunk)
            if digest is not None:
                digest.update(chunk)
            self.received += n
        if expected is not None and self.received < expected:
            raise Cut(f"the answer ended after {self.received} of its {expected} bytes")
        return self.received

    def raise_for_status(self) -> None:
        if self.status >= 400:
            body = self._response.read(ERROR_BODY)
            raise_for(httpx.Response(self.status, headers=self.headers.items(), content=body))

    def finish(self) -> None:
        """Whatever is left of the body read, so the connection can carry the next request."""
        if not self._response.isclosed():
            self._response.read()
