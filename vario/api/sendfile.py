"""Whole files (archives, export files, reports) sent by the kernel: ``os.sendfile`` from the
page cache to the socket, on a worker thread, for ``vario serve``.

uvicorn sends a body the way an application hands it over, a chunk at a time: Starlette's
``FileResponse`` reads a chunk on a thread, the event loop writes it and waits for it to drain,
then the next. On two cores that cost the server twice the CPU of the bytes themselves, and a
verified download reached only 0.7 of a cold read from disk. ASGI's ``http.response.pathsend``
extension lets an application hand over a path instead (``FileResponse`` does whenever the
server offers it); this protocol offers it and sends the file with ``sendfile`` on a thread of
its own pool, so no byte passes through Python and the event loop never waits for the disk.
Ranges, ``HEAD`` and error answers take uvicorn's usual path.

It subclasses uvicorn's httptools protocol, which is why pyproject.toml pins uvicorn to one
minor version.
"""

from __future__ import annotations

import asyncio
import os
import select
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

PATHSEND = "http.response.pathsend"
TRANSFERS = 16  # files sent at once; more wait for a thread, other requests never do
STALL_SECONDS = 60.0  # a client that takes no byte for this long is dropped

_transfers = ThreadPoolExecutor(TRANSFERS, thread_name_prefix="sendfile")


def send_file(sock: int, path: str, count: int, stall: float = STALL_SECONDS) -> None:
    """The first ``count`` bytes of ``path`` into the non-blocking socket ``sock``, waiting
    for room while the client reads. ``OSError`` when the client goes, stalls for ``stall``
    seconds (``TimeoutError``), or the file is shorter than ``count``."""
    room = select.poll()
    room.register(sock, select.POLLOUT)
    with open(path, "rb") as file:
        sent = 0
        while sent < count:
            try:
                n = os.sendfile(sock, file.fileno(), sent, count - sent)
            except BlockingIOError:
                if not room.poll(stall * 1000):
                    raise TimeoutError(f"the client took nothing for {stall:g} s") from None
                continue
            if n == 0:
                raise EOFError(f"{path} ended after {sent} of {count} bytes")
            sent += n


def _send_and_close(sock: int, path: str, count: int) -> None:
    try:
        send_file(sock, path, count)
    finally:
        os.close(sock)


class _Cycle(RequestResponseCycle):
    """One request and its answer, as uvicorn's, whose body may also be a file's path."""

    async def send(self, message: Any) -> None:
        if message["type"] != PATHSEND or not self.response_started or self.response_complete:
            await super().send(message)  # uvicorn's, and its errors for a message out of turn
            return
        if self.chunked_encoding or self.scope["method"] == "HEAD":
            raise RuntimeError("http.response.pathsend needs a Content-Length and a body")
        if self.disconnected:
            return
        try:
            await self._flushed()
            socket = self.transport.get_extra_info("socket")
            if socket is None:
                raise ConnectionError("the transport has closed")
            # a duplicate, closed by the thread when it is done with it: the transport may
            # close its own meanwhile (the client went, or this task was cancelled), and the
            # thread must never write to a new connection that got the same number
            sock = os.dup(socket.fileno())
            await asyncio.get_running_loop().run_in_executor(
                _transfers, _send_and_close, sock, message["path"], self.expected_content_length
            )
        except (OSError, EOFError):  # the client went or stalled, or the file shrank
            self.disconnected = True  # what the client has is cut short: it knows by the length
            self.transport.close()
            return
        self.expected_content_length = 0
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    async def _flushed(self) -> None:
        """Until what uvicorn has written (the answer's head) has left its buffer: the file
        goes to the socket directly, after it."""
        waited = 0.0
        while self.transport.get_write_buffer_size() and not self.disconnected:
            if waited > STALL_SECONDS:
                raise TimeoutError(f"the client took nothing for {STALL_SECONDS:g} s")
            await asyncio.sleep(0.005)
            waited += 0.005


class FileSendingProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) offering ``http.response.pathsend`` (Linux)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if sys.platform == "linux":  # sendfile to a socket, and poll, as this module uses them
            self.scope.setdefault("extensions", {})[PATHSEND] = {}

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if type(self.cycle) is RequestResponseCycle:  # uvicorn makes it; it gains pathsend
            self.cycle.__class__ = _Cycle
