"""A loopback pull-through PyPI mirror: this machine's local wheel indexes first, PyPI for the rest.

What a company's mirror (Artifactory, Nexus, devpi) does, small enough to read: `/simple/<project>/`
answers from the local PEP 503 trees (`/opt/pypi/simple`, `/opt/pypi-more/simple`) and find-links
folders (`/opt/wheels`) when they hold the project — their files only, merged with nothing else,
so uv can never pick PyPI's newer torch, torchvision, triton or nvidia/cuda wheels — and relays
`https://pypi.org/simple/<project>/` for every other project. Relayed pages have their file URLs
rewritten to this server's `/packages/...` (files.pythonhosted.org's own layout, which envbuild's
`pypi-files` setting assumes), so uv talks to the mirror only and the lock names the mirror only.

Local files are served from `/local/<sha256>/<filename>` with HEAD and single byte ranges (uv reads
a wheel's METADATA with range requests when an index has no PEP 658 files, instead of downloading
gigabytes of CUDA wheels), sent with `sendfile`. The local pages' `#sha256=` fragments are kept; a
link without one is hashed once per process. Answers are HTML (PEP 503); uv accepts them.
"""

from __future__ import annotations

import hashlib
import html
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpx

__all__ = ["FIND_LINKS", "LOCAL_INDEXES", "LocalFile", "LocalStore", "PullThrough", "canonical_name"]

LOCAL_INDEXES = (Path("/opt/pypi/simple"), Path("/opt/pypi-more/simple"))
FIND_LINKS = (Path("/opt/wheels"),)
PYPI_SIMPLE = "https://pypi.org/simple"
PYPI_FILES = "https://files.pythonhosted.org/packages"
_DIST_SUFFIXES = (".whl", ".tar.gz", ".zip")
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RELAYED_HEADERS = ("content-type", "content-range", "accept-ranges", "etag", "last-modified", "cache-control")
_HREF = re.compile(r'href="([^"]*)"')
_CHUNK = 1 << 20
UNSATISFIABLE = (-1, -1)  # a byte range outside the file


def canonical_name(name: str) -> str:
    """PEP 503 normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_of_filename(filename: str) -> str | None:
    """The project a wheel or sdist file name belongs to (None: not a distribution)."""
    if filename.endswith(".whl"):
        return canonical_name(filename.split("-", 1)[0])
    for suffix in (".tar.gz", ".zip"):
        if filename.endswith(suffix):
            match = re.match(r"^(.+?)-\d", filename[: -len(suffix)])
            return canonical_name(match.group(1)) if match else None
    return None


@dataclass(frozen=True)
class LocalFile:
    filename: str
    path: Path
    sha256: str
    requires_python: str | None = None


class _Anchors(HTMLParser):
    """The `<a>` elements of a PEP 503 page: (href, other attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            values = {key: value or "" for key, value in attrs}
            if values.get("href"):
                self.links.append((values.pop("href"), values))


class LocalStore:
    """The local indexes and find-links folders, read per project on first use and then kept."""

    def __init__(self, indexes: Sequence[Path] = LOCAL_INDEXES, find_links: Sequence[Path] = FIND_LINKS) -> None:
        self.indexes = tuple(Path(p) for p in indexes)
        self.find_links = tuple(Path(p) for p in find_links)
        self._lock = threading.Lock()
        self._projects: dict[str, tuple[LocalFile, ...] | None] = {}
        self._by_sha: dict[str, LocalFile] = {}
        self._hashes: dict[tuple[str, int, int], str] = {}
        self.hashed_bytes = 0  # how much had to be hashed because a page gave no sha256

    def project_names(self) -> list[str]:
        names = {canonical_name(p.name) for root in self.indexes if root.is_dir() for p in root.iterdir()
                 if (p / "index.html").is_file()}
        names.update(filter(None, (project_of_filename(p.name) for p in self._find_links_files())))
        return sorted(names)

    def files(self, project: str) -> tuple[LocalFile, ...] | None:
        """The local files of a project; None when no local index or folder holds it."""
        project = canonical_name(project)
        with self._lock:
            if project in self._projects:
                return self._projects[project]
        found = self._read(project)
        with self._lock:
            self._projects[project] = found
            for item in found or ():
                self._by_sha[item.sha256] = item
        return found

    def by_sha256(self, sha256: str, filename: str) -> LocalFile | None:
        """The file a `/local/<sha256>/<filename>` URL names (its project is read if it was not yet)."""
        project = project_of_filename(filename)
        if project is not None:
            self.files(project)
        with self._lock:
            item = self._by_sha.get(sha256)
        return item if item is not None and item.filename == filename else None

    def _read(self, project: str) -> tuple[LocalFile, ...] | None:
        seen: dict[str, LocalFile] = {}
        present = False
        for root in self.indexes:
            page = root / project / "index.html"
            if page.is_file():
                present = True
                for item in self._page_files(page):
                    seen.setdefault(item.filename, item)
        for path in self._find_links_files():
            if project_of_filename(path.name) == project:
                present = True
                seen.setdefault(path.name, LocalFile(path.name, path, self._sha256(path)))
        return tuple(seen[name] for name in sorted(seen)) if present else None

    def _page_files(self, page: Path) -> Iterator[LocalFile]:
        parser = _Anchors()
        parser.feed(page.read_text(encoding="utf-8"))
        for href, attrs in parser.links:
            url = urlsplit(urljoin(page.resolve().as_uri(), href))
            if url.scheme != "file":
                continue  # a local page pointing elsewhere: not a local file, left out
            path = Path(unquote(url.path))
            if not path.is_file():
                continue
            digest = dict(part.split("=", 1) for part in url.fragment.split("&") if "=" in part).get("sha256")
            yield LocalFile(path.name, path, digest or self._sha256(path), attrs.get("data-requires-python") or None)

    def _find_links_files(self) -> list[Path]:
        return [p for root in self.find_links if root.is_dir() for p in sorted(root.iterdir())
                if p.is_file() and p.name.endswith(_DIST_SUFFIXES)]

    def _sha256(self, path: Path) -> str:
        """Hash a file once per process (streamed: a CUDA wheel is half a gigabyte)."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._hashes:
                return self._hashes[key]
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(_CHUNK), b""):
                digest.update(block)
        with self._lock:
            self._hashes[key] = digest.hexdigest()
            self.hashed_bytes += stat.st_size
        return digest.hexdigest()


@dataclass(frozen=True)
class Served:
    """One answered request: what was asked, how it was answered, and how many body bytes went out."""

    method: str
    path: str
    status: int
    source: str  # "local", "relay" or "mirror" (root page, errors)
    nbytes: int


class PullThrough:
    """`with PullThrough() as mirror:` … `mirror.simple_url` is the PyPI mirror URL to give uv.

    `port=0` takes any free port; a given port is tried first and, if taken, any other is used
    (uv keys its cache by the index URL, so a stable port keeps a kept cache warm across runs).
    `served()` lists every answer, with where it came from and how many bytes it sent.
    """

    def __init__(self, store: LocalStore | None = None, *, upstream: str = PYPI_SIMPLE,
                 upstream_files: str = PYPI_FILES, port: int = 0, timeout: float = 60.0) -> None:
        self.store = store or LocalStore()
        self.upstream = upstream.rstrip("/")
        self.upstream_files = upstream_files.rstrip("/")
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=15.0), follow_redirects=True,
                                   limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))
        self._log: list[Served] = []
        self._log_lock = threading.Lock()
        # A client has the whole answer before the handler records it: readers of the log wait for
        # handlers still running, or a test that asserts right after a request would race them.
        self._in_flight = 0
        self._idle = threading.Condition(self._log_lock)
        # Bound here, before any thread starts: the port is known and taken when the constructor returns.
        # A preferred port (a stable URL keeps uv's per-index cache warm across runs) falls back to any.
        try:
            self._httpd = _Server(("127.0.0.1", port), _Handler)
        except OSError:
            if not port:
                raise
            self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.mirror = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple"

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> PullThrough:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="pullthrough", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()
        self.client.close()

    def __enter__(self) -> PullThrough:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def served(self) -> list[Served]:
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=10)
            return list(self._log)

    def _begin(self) -> None:
        with self._idle:
            self._in_flight += 1

    def _end(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def clear_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    def bytes_served(self, source: str | None = None) -> int:
        return sum(s.nbytes for s in self.served() if source is None or s.source == source)

    def pages(self, source: str) -> set[str]:
        """Projects whose `/simple/<project>/` page was answered from `source` ("local" or "relay")."""
        return {s.path.split("/")[2] for s in self.served()
                if s.source == source and s.path.startswith("/simple/") and s.path.count("/") == 3}

    def _record(self, served: Served) -> None:
        with self._log_lock:
            self._log.append(served)

    def local_page(self, project: str, files: Iterable[LocalFile]) -> bytes:
        lines = [f"<!DOCTYPE html><html><head><title>Links for {html.escape(project)}</title></head><body>",
                 f"<h1>Links for {html.escape(project)}</h1>"]
        for item in files:
            href = f"{self.url}/local/{item.sha256}/{quote(item.filename, safe='')}#sha256={item.sha256}"
            attrs = f' data-requires-python="{html.escape(item.requires_python)}"' if item.requires_python else ""
            lines.append(f'<a href="{html.escape(href)}"{attrs}>{html.escape(item.filename)}</a><br/>')
        lines.append("</body></html>\n")
        return "\n".join(lines).encode()

    def root_page(self) -> bytes:
        """The local projects only: listing PyPI's half a million names helps no resolver."""
        links = "".join(f'<a href="{quote(name)}/">{html.escape(name)}</a><br/>\n'
                        for name in self.store.project_names())
        return f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode()

    def rewrite_relayed(self, text: str, page_url: str) -> str:
        """Each link made absolute against the upstream page; those under upstream's files point here."""
        prefix = self.upstream_files + "/"

        def swap(match: re.Match[str]) -> str:
            url = urljoin(page_url, html.unescape(match.group(1)))
            if url.startswith(prefix):
                url = f"{self.url}/packages/{url[len(prefix):]}"
            return f'href="{html.escape(url)}"'

        return _HREF.sub(swap, text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mirror: PullThrough

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-download (uv cancels range reads, downloads it no longer needs) is normal."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 120

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self.server.mirror._begin()
        try:
            self._serve(head=False)
        finally:
            self.server.mirror._end()

    def do_HEAD(self) -> None:
        self.server.mirror._begin()
        try:
            self._serve(head=True)
        finally:
            self.server.mirror._end()

    def _serve(self, *, head: bool) -> None:
        mirror = self.server.mirror
        path = unquote(urlsplit(self.path).path)
        parts = path.split("/")
        if path == "/simple":
            self._redirect("/simple/")
        elif path == "/simple/":
            self._send_bytes(200, mirror.root_page(), "text/html", head=head, source="mirror")
        elif len(parts) == 4 and parts[1] == "simple" and parts[3] == "" and _PROJECT.match(parts[2]):
            self._project_page(parts[2], head=head)
        elif path.startswith("/simple/") and not path.endswith("/") and path.count("/") == 2:
            self._redirect(path + "/")
        elif len(parts) == 4 and parts[1] == "local":
            self._local_file(parts[2], parts[3], head=head)
        elif path.startswith("/packages/") and ".." not in parts:
            raw = urlsplit(self.path).path  # forwarded as the client spelled it (%2B stays %2B)
            self._relay(f"{mirror.upstream_files}/{raw[len('/packages/'):]}", head=head, page=False)
        else:
            self._send_bytes(404, b"not found\n", "text/plain", head=head, source="mirror")

    def _project_page(self, name: str, *, head: bool) -> None:
        mirror = self.server.mirror
        project = canonical_name(name)
        if project != name:
            self._redirect(f"/simple/{project}/")
            return
        files = mirror.store.files(project)
        if files is None:
            self._relay(f"{mirror.upstream}/{project}/", head=head, page=True)
            return
        body = mirror.local_page(project, files)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if self.headers.get("If-None-Match") == etag:
            self._send_bytes(304, b"", None, head=True, source="local", extra={"ETag": etag})
            return
        self._send_bytes(200, body, "text/html; charset=utf-8", head=head, source="local",
                         extra={"ETag": etag, "Cache-Control": "max-age=600"})

    def _local_file(self, sha256: str, filename: str, *, head: bool) -> None:
        item = self.server.mirror.store.by_sha256(sha256, filename)
        if item is None:
            self._send_bytes(404, b"no such local file\n", "text/plain", head=head, source="local")
            return
        size = item.path.stat().st_size
        span = _byte_range(self.headers.get("Range"), size)
        if span == UNSATISFIABLE:
            self._send_bytes(416, b"", None, head=True, source="local", extra={"Content-Range": f"bytes */{size}"})
            return
        start, end = span if span is not None else (0, size - 1)
        self.send_response(206 if span is not None else 200)
        if span is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self._headers(end - start + 1, "application/octet-stream",
                      {"Accept-Ranges": "bytes", "ETag": f'"{sha256}"', "Cache-Control": "max-age=31536000, immutable"})
        sent = 0
        if not head and end >= start:
            with item.path.open("rb") as stream:
                sent = self.connection.sendfile(stream, start, end - start + 1)
        self.server.mirror._record(Served(self.command, self.path, 206 if span else 200, "local", sent))

    def _relay(self, url: str, *, head: bool, page: bool) -> None:
        """Answer from upstream: a page with its file URLs pointed here, or a file streamed through."""
        mirror = self.server.mirror
        forward = {k: v for k, v in self.headers.items()
                   if k.lower() in ("range", "if-none-match", "if-modified-since")}
        forward["Accept"] = "text/html" if page else "*/*"
        try:
            # A page is always fetched whole: HEAD must announce the rewritten page's length.
            with mirror.client.stream("HEAD" if head and not page else "GET", url, headers=forward) as answer:
                extra = {k: v for k, v in answer.headers.items() if k.lower() in _RELAYED_HEADERS}
                if page and answer.status_code == 200:
                    body = mirror.rewrite_relayed(answer.read().decode("utf-8"), str(answer.url)).encode()
                    self._send_bytes(200, body, extra.pop("content-type", "text/html"), head=head,
                                     source="relay", extra=extra)
                else:
                    self._stream(answer, extra, head=head)
        except httpx.HTTPError as exc:
            message = f"upstream {url} failed: {type(exc).__name__}: {exc}\n".encode()
            self._send_bytes(502, message, "text/plain", head=head, source="relay")

    def _stream(self, answer: httpx.Response, extra: dict[str, str], *, head: bool) -> None:
        length = answer.headers.get("content-length")
        self.send_response(answer.status_code)
        for key, value in extra.items():
            self.send_header(key, value)
        if answer.status_code in (204, 304):
            pass  # no body, by definition
        elif length is not None and "content-encoding" not in answer.headers:
            self.send_header("Content-Length", length)
        else:
            self.send_header("Connection", "close")  # the body ends when the connection does
            self.close_connection = True
        self.end_headers()
        sent = 0
        if not head and answer.status_code not in (204, 304):
            for chunk in answer.iter_bytes(_CHUNK):
                self.wfile.write(chunk)
                sent += len(chunk)
        self.server.mirror._record(Served(self.command, self.path, answer.status_code, "relay", sent))

    def _redirect(self, location: str) -> None:
        self.send_response(301)
        self._headers(0, None, {"Location": location})
        self.server.mirror._record(Served(self.command, self.path, 301, "mirror", 0))

    def _send_bytes(self, status: int, body: bytes, content_type: str | None, *, head: bool, source: str,
                    extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self._headers(len(body), content_type, extra or {})
        if not head and body:
            self.wfile.write(body)
        self.server.mirror._record(Served(self.command, self.path, status, source, 0 if head else len(body)))

    def _headers(self, length: int, content_type: str | None, extra: dict[str, str]) -> None:
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as (first, last) inclusive; None: serve it all; UNSATISFIABLE: answer 416.

    Several ranges at once (and invalid ones) are answered with the whole file, as RFC 9110 allows.
    """
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if match is None or not any(match.groups()):
        return None
    first, last = match.groups()
    if not first:  # the last N bytes
        length = min(int(last), size)
        return (size - length, size - 1) if length else UNSATISFIABLE
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return start, min(int(last), size - 1) if last else size - 1
