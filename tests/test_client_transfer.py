"""The client's downloads when the network fails (``vario_client.transfer``): a body cut short
is resumed from what arrived, a server error is retried, and a download that keeps failing
raises and leaves only its part to resume from. The peer is a real HTTP server on loopback
that misbehaves on purpose; the full API's downloads are in test_api.py and test_api_e2e.py."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading

import pytest
from vario_client import Client
from vario_client.batch import _download
from vario_client.transfer import Cut

ARCHIVE = os.urandom(3 * 2**20 + 123)
ETAG = f'"{hashlib.sha256(ARCHIVE).hexdigest()}"'


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Serves ARCHIVE at any path, but answers as ``script`` says, one step per request:
    ``cut`` (half the body, then the connection closes), ``503``, or ``ok``."""

    protocol_version = "HTTP/1.1"
    script: list[str] = []
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(dict(self.headers))
        step = self.script.pop(0) if self.script else "ok"
        if step == "503":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        if "Range" in self.headers and self.headers.get("If-Range") == ETAG:
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
        body = ARCHIVE[start:]
        self.send_response(206 if start else 200)
        self.send_header("ETag", ETAG)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(ARCHIVE) - 1}/{len(ARCHIVE)}")
        self.end_headers()
        if step == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def flaky():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Flaky.script, _Flaky.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}", _Flaky
    server.shutdown()
    server.server_close()


def test_a_body_cut_short_is_resumed_from_what_arrived(flaky, tmp_path):
    url, handler = flaky
    handler.script = ["cut", "cut"]
    with Client(url, "key", retries=2) as client, client.transfers() as transfers:
        received = _download(client, transfers, "job", tmp_path)
    assert (tmp_path / "job.zip").read_bytes() == ARCHIVE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.zip"]
    ranges = [seen.get("Range") for seen in handler.seen]
    assert ranges[0] is None and ranges[1] and ranges[2]  # each try resumed
    assert received == len(ARCHIVE)  # every byte sent once


def test_a_server_error_is_retried(flaky, tmp_path):
    url, handler = flaky
    handler.script = ["503", "503"]
    with Client(url, "key", retries=2) as client, client.transfers() as transfers:
        _download(client, transfers, "job", tmp_path)
    assert (tmp_path / "job.zip").read_bytes() == ARCHIVE
    assert handler.seen[0]["Authorization"] == "Bearer key"


def test_a_download_that_keeps_failing_raises_and_keeps_its_part(flaky, tmp_path):
    url, handler = flaky
    handler.script = ["cut"] * 3
    with Client(url, "key", retries=1) as client, client.transfers() as transfers:
        with pytest.raises(Cut):
            _download(client, transfers, "job", tmp_path)
        assert not (tmp_path / "job.zip").exists()
        kept = (tmp_path / "job.zip.part").read_bytes()
        assert 0 < len(kept) < len(ARCHIVE) and ARCHIVE.startswith(kept)
        _download(client, transfers, "job", tmp_path)  # the next try resumes it
    assert (tmp_path / "job.zip").read_bytes() == ARCHIVE
