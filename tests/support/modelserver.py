"""A loopback HTTP server for model files, with the faults real hosts have: Range (206), a connection
dropped mid-file, a server that ignores Range, bytes that change (tampering), redirects to a "signed"
URL on another origin, 401/403/404, and a slow drip. It counts the body bytes it sent, per path, so a
test can prove a resume fetched only the rest.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Served:
    data: bytes | None = None  # the body, or
    file: Path | None = None  # a file on disk (the benchmark's large ones: sent with sendfile)
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drops: int = 0  # ... this many times
    tamper: bool = False  # flip one byte in the middle
    ignore_range: bool = False
    status: int = 200  # 401/403/404/500: answered instead of the body
    redirect: str | None = None  # 302 to this URL (absolute)
    need_auth: str | None = None  # the Authorization header required (403 without it)
    drip: float = 0.0  # seconds between one-byte writes
    disposition: str | None = None  # a Content-Disposition file name

    def etag(self) -> str:
        """A strong ETag of what is served now (tampered bytes get their own)."""
        if self.file is not None:
            info = self.file.stat()
            return f'"{info.st_size}-{info.st_mtime_ns}"'
        import hashlib

        return '"' + hashlib.sha256((self.data or b"") + (b"t" if self.tamper else b"")).hexdigest()[:16] + '"'

    def size(self) -> int:
        return len(self.data) if self.data is not None else (self.file.stat().st_size if self.file else 0)


@dataclass
class ModelServer:
    files: dict[str, Served] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)  # path -> body bytes sent
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, headers)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, path: str, served: Served) -> str:
        self.files[path] = served
        return f"{self.url}{path}"

    def __enter__(self) -> ModelServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner._handle(self)

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up mid-body (the tests make them) is not news

        self._server = Quiet(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        self.requests.append((handler.path, dict(handler.headers.items())))
        served = self.files.get(path)
        if served is None:
            return self._status(handler, 404)
        if served.redirect:
            handler.send_response(302)
            handler.send_header("Location", served.redirect)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return None
        if served.need_auth and handler.headers.get("Authorization") != served.need_auth:
            return self._status(handler, 403)
        if served.status != 200:
            return self._status(handler, served.status)
        size = served.size()
        start = 0
        wanted = handler.headers.get("Range")
        condition = handler.headers.get("If-Range")
        if condition is not None and condition != served.etag():
            wanted = None  # RFC 9110 13.1.5: the file changed, the whole of it
        if wanted and not served.ignore_range:
            start = int(wanted.removeprefix("bytes=").split("-", 1)[0])
            if start >= size:
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{size}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return None
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Length", str(size - start))
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("ETag", served.etag())
        if served.disposition:
            handler.send_header("Content-Disposition", f'attachment; filename="{served.disposition}"')
        handler.end_headers()
        limit = size
        if served.drops > 0 and served.drop_after is not None and served.drop_after > start:
            served.drops -= 1
            limit = served.drop_after
        self._body(handler, served, path, start, limit)
        if limit < size:
            handler.close_connection = True
            handler.connection.shutdown(2)
        return None

    def _body(self, handler: BaseHTTPRequestHandler, served: Served, path: str, start: int, end: int) -> None:
        if served.file is not None and not served.tamper and not served.drip:
            with open(served.file, "rb") as handle:
                handler.wfile.flush()
                sent = handler.connection.sendfile(handle, offset=start, count=end - start)
            self.sent[path] = self.sent.get(path, 0) + sent
            return
        data = served.data if served.data is not None else Path(served.file or os.devnull).read_bytes()
        if served.tamper:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        body = data[start:end]
        try:
            if served.drip:
                for i in range(len(body)):
                    handler.wfile.write(body[i:i + 1])
                    handler.wfile.flush()
                    self.sent[path] = self.sent.get(path, 0) + 1
                    time.sleep(served.drip)
                return
            handler.wfile.write(body)
            self.sent[path] = self.sent.get(path, 0) + len(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def _status(handler: BaseHTTPRequestHandler, status: int) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
