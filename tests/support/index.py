"""A PEP 503 / 691 / 658 / 714 package index served on 127.0.0.1 for hermetic tests.

One `IndexServer` hosts several named indexes under path prefixes (`simple`,
`whl/cu126`, `whl/nightly/cu132`, ...), so a single port stands in for both
PyPI and download.pytorch.org. It records every request and can inject faults
(status codes, delays) so tests can assert *where* uv went and how it copes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urlsplit

from . import pages
from .httpserver import QuietHTTPServer
from .pages import HTML_V1, JSON_V1, HashMode, IndexFile
from .wheels import canonical_name, read_wheel_metadata

__all__ = ["HTML_V1", "JSON_V1", "OLD_UPLOAD", "HashMode", "Index", "IndexFile", "IndexServer", "Request"]

OLD_UPLOAD = "2025-01-01T00:00:00Z"  # the upload time a test file has unless a test says otherwise


class Request(NamedTuple):
    """One logged request; compares equal to a plain `(method, path)` tuple."""

    method: str
    path: str  # percent-decoded, without query string


class Index:
    """One named index under `/<prefix>/` of an `IndexServer`.

    `json=False` makes it answer HTML whatever the Accept header says, as
    download.pytorch.org does; uv then exercises its HTML parser.
    """

    def __init__(self, server: IndexServer, prefix: str, *, json: bool = True) -> None:
        self.server = server
        self.prefix = prefix
        self.json = json
        # flat=True: `/<prefix>/` is one page of links to every file, as many PyTorch mirrors
        # serve a variant (pip's --find-links, uv's `format = "flat"`); no per-project pages.
        self.flat = False
        # Set: files and their `.metadata` say so in Cache-Control, as PyPI's file host does
        # (`max-age=365000000, immutable, public`): a client may answer them from its cache.
        self.file_cache_control: str | None = None
        self._files: dict[str, IndexFile] = {}

    @property
    def url(self) -> str:
        """Simple API root, e.g. `http://127.0.0.1:PORT/whl/cu126`."""
        return f"{self.server.url}/{self.prefix}"

    def file_url(self, filename: str) -> str:
        return f"{self.url}/files/{quote(filename, safe='')}"

    def add(self, wheel_path: Path, *, hash: HashMode = "good", metadata: bool | bytes = True,
            upload_time: str | None = OLD_UPLOAD) -> IndexFile:
        """Publish a wheel; its name, version and Requires-Python come from its METADATA.

        `upload_time` (ISO 8601, e.g. "2026-01-26T10:46:43Z") is listed as PEP 700 `upload-time` in JSON
        and `data-upload-time` in HTML: what uv's `exclude-newer` compares with. By default a file is long
        published (envbuild's default cooldown takes it); None lists no upload time (uv then drops the file
        under any cutoff).

        `metadata` may be bytes: the PEP 658 `.metadata` file then says that instead of what the
        wheel's own METADATA says (an index whose metadata disagrees with its wheel).
        """
        if hash not in ("good", "none", "wrong"):
            raise ValueError(f"hash must be good/none/wrong, not {hash!r}")
        wheel_path = Path(wheel_path)
        data = wheel_path.read_bytes()
        raw_meta, fields = read_wheel_metadata(wheel_path)
        entry = IndexFile(
            filename=wheel_path.name,
            project=canonical_name(str(fields["Name"])),
            version=str(fields["Version"]),
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            requires_python=str(fields["Requires-Python"]) if "Requires-Python" in fields else None,
            metadata=metadata if isinstance(metadata, bytes) else (raw_meta if metadata else None),
            hash=hash,
            upload_time=upload_time,
        )
        with self.server._lock:
            self._files[entry.filename] = entry
        return entry

    def add_sdist(self, sdist_path: Path, name: str, version: str, *, upload_time: str | None = OLD_UPLOAD,
                  ) -> IndexFile:
        """Publish a source distribution (no PEP 658 metadata: an installer must build it to learn more)."""
        data = Path(sdist_path).read_bytes()
        entry = IndexFile(filename=Path(sdist_path).name, project=canonical_name(name), version=version, data=data,
                          sha256=hashlib.sha256(data).hexdigest(), requires_python=None, metadata=None,
                          upload_time=upload_time)
        with self.server._lock:
            self._files[entry.filename] = entry
        return entry

    def tamper(self, filename: str, data: bytes, *, rehash: bool = False) -> IndexFile:
        """Serve other bytes under a published file's name. By default its listings keep the original
        sha256 (a compromised mirror or proxy); `rehash=True` lists the new bytes' sha256 too (the file
        was re-uploaded), while its PEP 658 metadata stays the original's. Returns the original entry."""
        with self.server._lock:
            original = self._files[filename]
            digest = hashlib.sha256(data).hexdigest() if rehash else original.sha256
            self._files[filename] = dataclasses.replace(original, data=data, sha256=digest)
        return original

    def remove(self, filename: str) -> None:
        """Withdraw a file (KeyError if it was never added)."""
        with self.server._lock:
            del self._files[filename]

    def files(self, project: str | None = None) -> list[IndexFile]:
        """Registered files, optionally only one project's, in filename order."""
        with self.server._lock:
            entries = list(self._files.values())
        if project is not None:
            entries = [e for e in entries if e.project == canonical_name(project)]
        return sorted(entries, key=lambda e: e.filename)

    def projects(self) -> list[str]:
        return sorted({e.project for e in self.files()})

    def get(self, filename: str) -> IndexFile | None:
        with self.server._lock:
            return self._files.get(filename)

    def snapshot(self) -> dict[str, IndexFile]:
        """The current file set, for `restore` (files are immutable, so a shallow copy)."""
        with self.server._lock:
            return dict(self._files)

    def restore(self, snapshot: dict[str, IndexFile]) -> None:
        with self.server._lock:
            self._files = dict(snapshot)


@dataclass
class _Fault:
    prefix: str
    status: int = 500
    times: int | None = None  # None: forever
    delay: float = 0.0
    cut: int | None = None  # send only this many body bytes, then drop the connection


@dataclass(frozen=True)
class _Auth:
    prefix: str
    token: str  # the expected `Authorization` header value


class IndexServer:
    """ThreadingHTTPServer on 127.0.0.1:<ephemeral> hosting several indexes."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._indexes: dict[str, Index] = {}
        self._faults: list[_Fault] = []
        self._delays: list[_Fault] = []
        self._cuts: list[_Fault] = []
        self._auth: list[_Auth] = []
        self._log: list[Request] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> IndexServer:
        """Bind first, then serve: the port accepts connections before this returns."""
        if self._httpd is not None:
            return self
        httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        httpd.index_server = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="test-index",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> IndexServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("IndexServer is not started")
        return f"http://127.0.0.1:{self._httpd.server_port}"

    # -- indexes -----------------------------------------------------------
    def add_index(self, prefix: str, *, json: bool = True) -> Index:
        """Create an empty index at `/<prefix>/` (may contain `/`: `whl/nightly/cu132`)."""
        prefix = prefix.strip("/")
        if not prefix or "files" in prefix.split("/"):
            raise ValueError(f"bad index prefix {prefix!r}")
        with self._lock:
            if prefix in self._indexes:
                raise ValueError(f"index {prefix!r} already exists")
            index = self._indexes[prefix] = Index(self, prefix, json=json)
        return index

    def remove_index(self, prefix: str) -> None:
        with self._lock:
            self._indexes.pop(prefix.strip("/"), None)

    def index(self, prefix: str) -> Index:
        with self._lock:
            return self._indexes[prefix.strip("/")]

    @property
    def indexes(self) -> dict[str, Index]:
        with self._lock:
            return dict(self._indexes)

    # -- request log -------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._log)

    def requests_for(self, prefix: str) -> list[Request]:
        """Logged requests whose decoded path starts with `prefix` (leading `/` optional)."""
        prefix = _slash(prefix)
        return [r for r in self.requests if r.path.startswith(prefix)]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- fault injection ---------------------------------------------------
    def fail(self, path_prefix: str, status: int = 500, times: int | None = None) -> None:
        """Answer the next `times` requests under `path_prefix` with `status` (None: forever)."""
        with self._lock:
            self._faults.append(_Fault(_slash(path_prefix), status=status, times=times))

    def delay(self, path_prefix: str, seconds: float) -> None:
        """Sleep `seconds` before answering any request under `path_prefix`."""
        with self._lock:
            self._delays.append(_Fault(_slash(path_prefix), delay=seconds))

    def drop_mid_body(self, path_prefix: str, keep: int = 1024, times: int | None = None) -> None:
        """Announce the full Content-Length, send `keep` bytes of the body, then close the connection."""
        with self._lock:
            self._cuts.append(_Fault(_slash(path_prefix), times=times, cut=keep))

    def require_auth(self, path_prefix: str, username: str, password: str) -> None:
        """HTTP Basic auth for everything under `path_prefix`: 401 without the right credentials."""
        token = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        with self._lock:
            self._auth.append(_Auth(_slash(path_prefix), token))

    def clear_faults(self) -> None:
        """Remove every fault, delay, cut and auth requirement."""
        with self._lock:
            self._faults.clear()
            self._delays.clear()
            self._cuts.clear()
            self._auth.clear()

    # -- request handling (called from handler threads) --------------------
    def _record(self, method: str, path: str, authorization: str | None = None) -> tuple[float, int | None, int | None]:
        """Log the request and consume any matching fault; returns (delay, fail status, body cut)."""
        with self._lock:
            self._log.append(Request(method, path))
            delay = sum(d.delay for d in self._delays if path.startswith(d.prefix))
            if any(path.startswith(a.prefix) and authorization != a.token for a in self._auth):
                return delay, 401, None
            status = _consume(self._faults, path)
            self._faults = [f for f in self._faults if f.times is None or f.times > 0]
            cut_fault = None if status is not None else _consume_fault(self._cuts, path)
            self._cuts = [f for f in self._cuts if f.times is None or f.times > 0]
        return delay, status, cut_fault.cut if cut_fault else None

    def _resolve(self, path: str) -> tuple[Index, str] | None:
        """Longest index prefix owning `path`, and the rest of the path after it."""
        with self._lock:
            candidates = sorted(self._indexes.items(), key=lambda kv: len(kv[0]), reverse=True)
        for prefix, index in candidates:
            root = f"/{prefix}"
            if path == root or path.startswith(root + "/"):
                return index, path[len(root) :]
        return None

    def _respond(self, path: str, query: str, accept: str) -> pages.Response:
        found = self._resolve(path)
        if found is None:
            return pages.text(404, "no such index\n")
        index, rest = found
        if rest == "":
            return pages.redirect(f"/{index.prefix}/")
        if rest == "/":
            if index.flat:
                return pages.flat_page(index.files())
            return pages.root_page(index.projects(), index.json and pages.wants_json(accept, query))
        parts = rest.strip("/").split("/")
        if parts[0] == "files" and len(parts) == 2:
            name = parts[1]
            sidecar = name.endswith(".metadata")
            response = pages.file_response(index.get(name.removesuffix(".metadata")), metadata=sidecar)
            if index.file_cache_control and response.status == 200:
                response.headers["Cache-Control"] = index.file_cache_control
            return response
        if len(parts) != 1:
            return pages.text(404, "not found\n")
        if not rest.endswith("/"):
            # Relative hrefs (`../files/x`) only resolve correctly from `<project>/`.
            return pages.redirect(f"/{index.prefix}/{quote(parts[0])}/")
        files = index.files(parts[0])  # un-normalized names get the same page
        if not files:
            return pages.text(404, f"no project {parts[0]!r}\n")
        return pages.project_page(files, index.json and pages.wants_json(accept, query))


class _QuietServer(QuietHTTPServer):
    allow_reuse_address = True
    index_server: IndexServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: uv pools connections
    server_version = "envbuild-test-index/1.0"
    timeout = 30  # idle keep-alive connections do not pin threads forever
    server: _QuietServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        owner = self.server.index_server
        split = urlsplit(self.path)
        path = unquote(split.path)
        delay, status, cut = owner._record(self.command, path, self.headers.get("Authorization"))
        if delay:
            time.sleep(delay)
        if status == 401:
            resp = pages.text(401, "authentication required\n")
            resp.headers["WWW-Authenticate"] = 'Basic realm="envbuild-test-index"'
        elif status is not None:
            resp = pages.text(status, f"injected fault {status}\n")
        else:
            resp = owner._respond(path, split.query, self.headers.get("Accept", ""))
        body = resp.body if cut is None else resp.body[:cut]
        try:
            self.send_response(resp.status)
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            if cut is not None:  # the promised length never arrives: the client sees the connection drop
                self.wfile.flush()
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _consume_fault(faults: list[_Fault], path: str) -> _Fault | None:
    """The first fault matching `path` that has uses left, with one use taken."""
    for fault in faults:
        if path.startswith(fault.prefix) and (fault.times is None or fault.times > 0):
            if fault.times is not None:
                fault.times -= 1
            return fault
    return None


def _consume(faults: list[_Fault], path: str) -> int | None:
    fault = _consume_fault(faults, path)
    return fault.status if fault else None


def _slash(prefix: str) -> str:
    return prefix if prefix.startswith("/") else "/" + prefix
