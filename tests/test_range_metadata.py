"""A wheel's METADATA by HTTP range reads (zipfile over envbuild.core.http.remotewheel._RangeFile): how many
requests, how many bytes, and the errors for wheels and servers it cannot read."""

from __future__ import annotations

import os
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from envbuild.core.http import remotewheel
from envbuild.core.http.errors import IndexReadError
from envbuild.core.http.remotewheel import metadata_by_range
from tests.support.httpserver import QuietHTTPServer
from tests.support.wheels import build_wheel


class _Files(BaseHTTPRequestHandler):
    """Serves files from a folder, answering `Range` with 206 (or 200 when told to ignore it)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server: _FileServer = self.server  # type: ignore[assignment]
        path = server.root / self.path.lstrip("/")
        size = path.stat().st_size
        first, _, last = self.headers.get("Range", "bytes=0-").removeprefix("bytes=").partition("-")
        start = max(size - int(last), 0) if first == "" else int(first)
        end = size - 1 if first == "" or not last else min(int(last), size - 1)
        status = 200 if server.ignore_ranges else 206
        if status == 200:
            start, end = 0, size - 1
        with path.open("rb") as handle:
            body = os.pread(handle.fileno(), end - start + 1, start)
        server.log.append((self.headers.get("Range", ""), len(body)))
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _FileServer(QuietHTTPServer):

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Files)
        self.root = root
        self.ignore_ranges = False
        self.log: list[tuple[str, int]] = []

    def url(self, path: Path) -> str:
        return f"http://127.0.0.1:{self.server_port}/{path.name}"


@pytest.fixture
def files(tmp_path: Path) -> Iterator[_FileServer]:
    server = _FileServer(tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _read(server: _FileServer, path: Path) -> bytes:
    with httpx.Client(timeout=10) as http:
        return metadata_by_range(http, server.url(path))


def test_a_small_wheel_is_read_with_one_request_of_its_tail(files: _FileServer, tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "torch", "2.7.1", requires_dist=["nvidia-cuda-runtime-cu12==12.6.77"])
    assert b"Requires-Dist: nvidia-cuda-runtime-cu12==12.6.77" in _read(files, wheel)
    assert files.log == [(f"bytes=-{remotewheel._TAIL}", wheel.stat().st_size)]


def test_a_directory_larger_than_the_tail_costs_two_more_requests_not_the_wheel(
    files: _FileServer, tmp_path: Path
) -> None:
    """Like torch (13,000 members, a 1.2 MB directory): tail, directory, member."""
    payload = {f"pkg/module_with_a_long_descriptive_name_{i:05d}.py": os.urandom(200) for i in range(2000)}
    wheel = build_wheel(tmp_path, "bigdir", "1.0", files=payload, requires_dist=["six"])
    with zipfile.ZipFile(wheel) as local:
        directory = wheel.stat().st_size - local.start_dir
    assert directory > 2 * remotewheel._TAIL
    assert b"Requires-Dist: six" in _read(files, wheel)
    assert len(files.log) == 3
    assert sum(n for _, n in files.log) < directory + 3 * remotewheel._TAIL < wheel.stat().st_size


def test_reading_more_than_the_budget_is_refused(files: _FileServer, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    payload = {f"pkg/m{i:05d}.py": b"" for i in range(3000)}
    wheel = build_wheel(tmp_path, "bigdir", "1.0", files=payload)
    monkeypatch.setattr(remotewheel, "_MAX_RANGE_BYTES", 2 * remotewheel._TAIL)
    with pytest.raises(IndexReadError, match="would download over 0.125 MiB of the wheel"):
        _read(files, wheel)
    assert len(files.log) == 1  # only the tail was fetched


def test_unreadable_wheels_and_servers_are_index_read_errors(files: _FileServer, tmp_path: Path) -> None:
    not_zip = tmp_path / "broken-1.0-py3-none-any.whl"
    not_zip.write_bytes(b"<html>an error page, not a wheel</html>")
    with pytest.raises(IndexReadError, match="not a readable zip file"):
        _read(files, not_zip)
    bare = tmp_path / "bare-1.0-py3-none-any.whl"
    with zipfile.ZipFile(bare, "w") as archive:
        archive.writestr("bare/__init__.py", "")
    with pytest.raises(IndexReadError, match=r"the wheel has no \.dist-info/METADATA"):
        _read(files, bare)
    files.ignore_ranges = True
    wheel = build_wheel(tmp_path, "whole", "1.0")
    with pytest.raises(IndexReadError, match="answered a range request with HTTP 200"):
        _read(files, wheel)


def test_a_stored_metadata_member_behind_other_members_is_read(files: _FileServer, tmp_path: Path) -> None:
    """Not every wheel puts .dist-info last or deflates it: zipfile reads what the directory says."""
    wheel = tmp_path / "odd-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("odd-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: odd\nVersion: 1.0\n",
                         compress_type=zipfile.ZIP_STORED)
        archive.writestr("odd/data.bin", os.urandom(300_000), compress_type=zipfile.ZIP_DEFLATED)
    assert _read(files, wheel).startswith(b"Metadata-Version: 2.1\nName: odd")
    assert len(files.log) == 2  # the tail, then the member at the start of the file
