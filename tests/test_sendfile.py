"""Whole files sent by ``sendfile`` (``vario.api.sendfile``): the function against real socket
pairs, and uvicorn with the protocol on a loopback port, answering an ASGI app that hands
over paths (``http.response.pathsend``), as ``vario serve`` runs it."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import struct
import threading
import time

import pytest
import uvicorn

from vario.api.sendfile import PATHSEND, FileSendingProtocol, send_file

BIG = 24 << 20  # larger than any socket buffer: the sender must wait for the reader


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sendfile") / "big.bin"
    path.write_bytes(os.urandom(BIG))
    return path


def _pair() -> tuple[socket.socket, socket.socket]:
    sender, reader = socket.socketpair()
    sender.setblocking(False)  # as an event loop's socket is
    return sender, reader


def _read_all(reader: socket.socket, into: list[bytes]) -> None:
    while chunk := reader.recv(1 << 20):
        into.append(chunk)


def test_the_file_arrives_whole_through_a_full_socket_buffer(big_file):
    sender, reader = _pair()
    received: list[bytes] = []
    reading = threading.Thread(target=_read_all, args=(reader, received))
    reading.start()
    try:
        send_file(sender.fileno(), str(big_file), BIG)
    finally:
        sender.close()
        reading.join()
        reader.close()
    assert b"".join(received) == big_file.read_bytes()


def test_a_client_that_takes_nothing_is_given_up_on(big_file):
    sender, reader = _pair()
    with sender, reader:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="took nothing"):
            send_file(sender.fileno(), str(big_file), BIG, stall=0.3)
        assert time.monotonic() - started < 10


def test_a_client_that_goes_ends_the_transfer(big_file):
    sender, reader = _pair()
    with sender:
        reader.close()
        with pytest.raises(OSError):
            send_file(sender.fileno(), str(big_file), BIG, stall=5)


def test_a_file_shorter_than_announced_is_an_error(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"x" * 100)
    sender, reader = _pair()
    with sender, reader, pytest.raises(EOFError, match="after 100 of 200 bytes"):
        send_file(sender.fileno(), str(path), 200)


# --- uvicorn with the protocol ------------------------------------------------------------


def _app(files: dict[str, os.PathLike]):
    """A raw ASGI app: ``/file/NAME`` hands over ``files[NAME]`` by path (and fails unless
    the server offers pathsend), anything else answers ``ok``."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        name = scope["path"].removeprefix("/file/")
        if name in files:
            assert PATHSEND in scope.get("extensions", {})
            size = os.path.getsize(files[name])
            headers = [(b"content-length", str(size).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": PATHSEND, "path": str(files[name])})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.fixture(scope="module")
def server(big_file, tmp_path_factory):
    small = tmp_path_factory.mktemp("small") / "small.bin"
    small.write_bytes(os.urandom(5000))
    config = uvicorn.Config(
        _app({"big": big_file, "small": small}),
        host="127.0.0.1",
        port=0,
        http=FileSendingProtocol,
        log_level="error",
        lifespan="off",
    )
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not served.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    port = served.servers[0].sockets[0].getsockname()[1]
    yield port, {"big": big_file.read_bytes(), "small": small.read_bytes()}
    served.should_exit = True
    thread.join(timeout=30)


def test_files_and_other_answers_share_one_kept_alive_connection(server):
    port, contents = server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    opened = None
    for path, expected in [
        ("/file/big", contents["big"]),
        ("/other", b"ok"),
        ("/file/small", contents["small"]),
        ("/file/big", contents["big"]),
    ]:
        connection.request("GET", path)
        answer = connection.getresponse()
        assert answer.status == 200
        body = answer.read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest(), path
        opened = opened or connection.sock
        assert connection.sock is opened  # the same connection throughout, never reopened
    connection.request("HEAD", "/file/small")
    answer = connection.getresponse()
    assert answer.getheader("content-length") == "5000" and answer.read() == b""
    connection.close()


def test_a_client_that_stalls_or_goes_mid_file_does_not_hold_up_the_others(server):
    port, contents = server
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.sendall(b"GET /file/big HTTP/1.1\r\nHost: x\r\n\r\n")
    gone = socket.create_connection(("127.0.0.1", port))
    gone.sendall(b"GET /file/big HTTP/1.1\r\nHost: x\r\n\r\n")
    gone.recv(1 << 16)
    gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone.close()  # abruptly: a reset, mid-file
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/file/big")
        assert connection.getresponse().read() == contents["big"]
        connection.request("GET", "/other")
        assert connection.getresponse().read() == b"ok"
        connection.close()
    finally:
        stalled.close()
