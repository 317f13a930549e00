"""Trust, round two, class 3: every network client has an overall deadline, not only a per-read timeout.
A server sending one byte every few seconds held the registry download and `profiles update`'s index
reads past 150 s; now each read ends at its deadline with the URL named."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.support.httpserver import QuietHTTPServer

pytestmark = pytest.mark.unit


@pytest.fixture
def drip() -> Iterator[str]:
    """A server that answers 200 and then one byte every 0.2 s, for at most 10 s."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.end_headers()
            for _ in range(50):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)

        def log_message(self, *args: object) -> None:
            pass

    server = QuietHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_bounded_reader_stops_at_its_deadline(drip: str) -> None:
    from envbuild.core.http.client import HttpFailure, read_bytes

    started = time.monotonic()
    with pytest.raises(HttpFailure, match="did not finish within 1 s"):
        read_bytes(drip + "/archive.zip", limit=1024 * 1024, timeout=5.0, deadline=1.0)
    assert time.monotonic() - started < 4


def test_the_index_client_stops_at_its_deadline(drip: str, tmp_path: Path) -> None:
    from envbuild.core.http.errors import IndexReadError
    from envbuild.core.http.indexclient import HttpCache, IndexClient

    client = IndexClient(HttpCache(tmp_path / "cache"), timeout=5.0, tries=3, deadline=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(IndexReadError, match="did not finish within 1 s"):
            client.project_page(drip + "/simple", "torch")
    finally:
        client.close()
    assert time.monotonic() - started < 4  # not retried: a deadline is the answer, not a passing fault
