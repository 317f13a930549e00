"""Read package indexes the way installers do, and cache what they said.

A project page comes as PEP 691 JSON when the index offers it, else as PEP 503 HTML (the PyTorch
index serves HTML only). A wheel's metadata comes from its PEP 658/714 `.metadata` file where
served, else from HTTP range reads of the METADATA member (envbuild.core.http.remotewheel): never the
whole wheel, which for torch is most of a gigabyte. Answers are cached on disk with HTTP's own
freshness rules, so `--offline` can work from the last run.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urldefrag, urljoin

import httpx
from packaging.utils import canonicalize_name

from envbuild.core.fsio import atomic_write
from envbuild.core.http.client import HttpFailure, bounded_body
from envbuild.core.http.errors import RETRIED, IndexReadError, Retryable
from envbuild.core.runner import redact

DEFAULT_TTL = 3600.0
JSON_V1 = "application/vnd.pypi.simple.v1+json"
SIMPLE_ACCEPT = f"{JSON_V1}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
NOT_THERE = (403, 404, 410)  # the PyTorch index (S3) answers 403 for a project it lacks
BODY_LIMIT = 256 * 1024 * 1024  # PyTorch's torch page is a few MiB; a page or metadata file is never this
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class DistFile:
    filename: str
    url: str  # absolute, without the #sha256= fragment
    requires_python: str | None
    metadata_url: str | None  # the PEP 658/714 sidecar, when the index serves one
    metadata_sha256: str | None
    yanked: bool


@dataclass(frozen=True)
class Page:
    url: str
    found: bool  # False: the index does not have this project (404/403), which is an answer too
    files: tuple[DistFile, ...]
    age: float | None  # seconds since the index said it, when it came from the cache


@dataclass(frozen=True)
class Cached:
    status: int
    body: bytes
    content_type: str
    stored_at: float
    lifetime: float | None  # seconds it stays fresh; None: forever (metadata of a published file)
    etag: str | None
    last_modified: str | None

    def fresh(self, now: float) -> bool:
        return self.lifetime is None or now - self.stored_at < self.lifetime


class HttpCache:
    """Responses on disk, one body and one JSON header file per URL (written atomically).

    Hand-written on purpose. hishel 2.0.0 (the httpx caching library, RFC 9111 mode, tried against
    httpx 0.29 and the loopback origin of tests/test_catalogue.py) does max-age and ETag/Last-
    Modified revalidation, but not what the README promises beyond that: an answer without
    Cache-Control is revalidated every time instead of kept for the default hour (its `ttl` is
    eviction, not freshness); with the index down it raises ConnectError rather than answer from a
    stale copy, and it has no cache-only (`--offline`) mode (it ignores `only-if-cached`); the
    PyTorch index's 403 "no such project" is not stored at all. Keeping those would mean reading
    its SQLite storage by its internal keys and rewriting response headers: more code than this.
    """

    def __init__(self, root: Path, ttl: float = DEFAULT_TTL) -> None:
        self.root = root
        self.ttl = ttl

    def _paths(self, key: str) -> tuple[Path, Path]:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return self.root / f"{digest}.json", self.root / f"{digest}.body"

    def load(self, key: str) -> Cached | None:
        head, body = self._paths(key)
        try:
            meta = json.loads(head.read_text(encoding="utf-8"))
            return Cached(int(meta["status"]), body.read_bytes(), str(meta["content_type"]),
                          float(meta["stored_at"]), meta["lifetime"], meta.get("etag"), meta.get("last_modified"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def store(self, key: str, status: int, body: bytes, headers: Mapping[str, str], *, forever: bool = False) -> Cached:
        lifetime = None if forever else self.lifetime(headers)
        entry = Cached(status, body, headers.get("content-type", ""), time.time(), lifetime,
                       headers.get("etag"), headers.get("last-modified"))
        head, body_path = self._paths(key)
        atomic_write(body_path, body)
        atomic_write(head, json.dumps({"url": redact(key), "status": status, "content_type": entry.content_type,
                                       "stored_at": entry.stored_at, "lifetime": lifetime,
                                       "etag": entry.etag, "last_modified": entry.last_modified}))
        return entry

    def lifetime(self, headers: Mapping[str, str]) -> float:
        """`Cache-Control: max-age` wins over the default TTL; no-cache/no-store mean "ask again"
        (no-store answers are still kept, for `--offline` only)."""
        control = headers.get("cache-control", "").lower()
        if "no-cache" in control or "no-store" in control:
            return 0.0
        found = re.search(r"max-age=(\d+)", control)
        return float(found.group(1)) if found else self.ttl


class IndexClient:
    """Bounded, retrying, cached reads of simple-API pages and wheel metadata."""

    def __init__(self, cache: HttpCache, *, offline: bool = False, timeout: float = 30.0, tries: int = 3,
                 backoff: float = 0.5, concurrency: int = 8, transport: httpx.BaseTransport | None = None,
                 deadline: float = 120.0) -> None:
        self.cache = cache
        self.deadline = deadline  # one page or file in all, however slowly the server sends
        self.offline = offline
        self.tries = max(1, tries)
        self.backoff = backoff
        self.concurrency = concurrency
        self.timeout = timeout
        self._http = httpx.Client(timeout=timeout, follow_redirects=True, transport=transport,
                                  limits=httpx.Limits(max_connections=concurrency))
        self._lock = threading.Lock()
        self.warnings: list[IndexReadError] = []  # failures answered from a stale cached copy

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> IndexClient:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, func: Callable[[T], R], items: Iterable[T]) -> list[R | IndexReadError]:
        """Run `func` over `items`, at most `concurrency` at a time; a read error is a value."""
        def guarded(item: T) -> R | IndexReadError:
            try:
                return func(item)
            except IndexReadError as exc:
                return exc
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(guarded, list(items)))

    def project_page(self, index_url: str, project: str) -> Page:
        url = f"{index_url.rstrip('/')}/{canonicalize_name(project)}/"
        entry, age = self._get(url, SIMPLE_ACCEPT)
        if entry.status in NOT_THERE:
            return Page(url, False, (), age)
        try:
            files = parse_page(entry.body, entry.content_type, url)
        except (ValueError, TypeError, KeyError) as exc:
            raise IndexReadError(url, f"not a simple-API page ({exc!r})") from None
        return Page(url, True, files, age)

    def metadata(self, dist: DistFile) -> bytes:
        """The wheel's METADATA: the PEP 658 file, else one to three range reads of the wheel."""
        if dist.metadata_url:
            entry, _ = self._get(dist.metadata_url, "*/*", forever=True)
            if entry.status == 200:
                if dist.metadata_sha256 and hashlib.sha256(entry.body).hexdigest() != dist.metadata_sha256:
                    raise IndexReadError(dist.metadata_url, "metadata does not match the sha256 the index lists")
                return entry.body
        key = f"{dist.url}#METADATA"
        cached = self.cache.load(key)
        if cached is not None:
            return cached.body
        if self.offline:
            raise IndexReadError(dist.url, "its metadata is not in the cache (offline)")
        from envbuild.core.http.remotewheel import metadata_by_range  # the slow path: zipfile only when a wheel is read

        body = self._retrying(dist.url, lambda: metadata_by_range(self._http, dist.url))
        self.cache.store(key, 200, body, {}, forever=True)
        return body

    # -- HTTP with cache and retries -----------------------------------------------------------
    def _get(self, url: str, accept: str, *, forever: bool = False) -> tuple[Cached, float | None]:
        key = f"{url} {accept}"
        cached = self.cache.load(key)
        now = time.time()
        if self.offline:
            if cached is None:
                raise IndexReadError(url, "not in the cache (offline)")
            return cached, now - cached.stored_at
        if cached is not None and cached.fresh(now):
            return cached, now - cached.stored_at
        headers = {"Accept": accept}
        if cached is not None and cached.etag:
            headers["If-None-Match"] = cached.etag
        if cached is not None and cached.last_modified:
            headers["If-Modified-Since"] = cached.last_modified
        try:
            response = self._retrying(url, lambda: self._bounded_get(url, headers))
        except IndexReadError as exc:
            if cached is None:
                raise
            with self._lock:
                self.warnings.append(IndexReadError(
                    url, f"{exc.reason}; used the cached copy from {describe_age(now - cached.stored_at)}"))
            return cached, now - cached.stored_at
        if response.status_code == 304 and cached is not None:
            return self.cache.store(key, cached.status, cached.body,
                                    {**_cached_headers(cached), **response.headers}, forever=forever), None
        if response.status_code == 200 or response.status_code in NOT_THERE:
            return self.cache.store(key, response.status_code, response.content, response.headers,
                                    forever=forever and response.status_code == 200), None
        reason = "authentication required" if response.status_code == 401 else f"HTTP {response.status_code}"
        raise IndexReadError(url, reason)

    def _bounded_get(self, url: str, headers: Mapping[str, str]) -> httpx.Response:
        """A GET read to the end within `deadline` seconds and `BODY_LIMIT` bytes: a per-read timeout alone
        let a server sending a byte every few seconds hold `profiles update` for minutes."""
        started = time.monotonic()
        with self._http.stream("GET", url, headers=headers) as response:
            try:
                body = bounded_body(response, url, limit=BODY_LIMIT, deadline=self.deadline, started=started)
            except HttpFailure as exc:
                raise IndexReadError(url, exc.reason) from None
            kept = {k: v for k, v in response.headers.items()  # the body is decoded already
                    if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")}
            return httpx.Response(response.status_code, headers=kept, content=body,
                                  request=response.request)

    def _retrying(self, url: str, call: Callable[[], T]) -> T:
        """5xx answers and connection failures are retried with backoff; the last one is the reason."""
        reason = ""
        for attempt in range(self.tries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                result = call()
            except httpx.InvalidURL as exc:
                raise IndexReadError(url, f"not a valid URL: {exc}") from None
            except httpx.TimeoutException:
                reason = f"timed out after {self.timeout:g} s"
                continue
            except httpx.TransportError as exc:
                reason = f"connection failed: {exc or type(exc).__name__}"
                continue
            except Retryable as exc:
                reason = str(exc)
                continue
            status = getattr(result, "status_code", 200)
            if status in RETRIED:
                reason = f"HTTP {status}"
                continue
            return result
        raise IndexReadError(url, f"{reason} ({self.tries} tries)")


def _cached_headers(entry: Cached) -> dict[str, str]:
    headers = {"content-type": entry.content_type}
    if entry.etag:
        headers["etag"] = entry.etag
    if entry.last_modified:
        headers["last-modified"] = entry.last_modified
    return headers


def describe_age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


# -- simple-API pages ---------------------------------------------------------------------------
def parse_page(body: bytes, content_type: str, page_url: str) -> tuple[DistFile, ...]:
    if "json" in content_type.lower():
        return _parse_json(json.loads(body), page_url)
    parser = _Links()
    parser.feed(body.decode("utf-8", errors="replace"))
    return tuple(_html_file(attrs, page_url) for attrs in parser.links if attrs.get("href"))


def _parse_json(data: Any, page_url: str) -> tuple[DistFile, ...]:
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise TypeError("JSON without a `files` list")
    result = []
    for item in data["files"]:
        url, _ = urldefrag(urljoin(page_url, item["url"]))
        meta = item.get("core-metadata", item.get("dist-info-metadata", False))
        sha = meta.get("sha256") if isinstance(meta, dict) else None
        result.append(DistFile(item["filename"], url, item.get("requires-python"),
                               f"{url}.metadata" if meta else None, sha, bool(item.get("yanked", False))))
    return tuple(result)


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append({k: v if v is not None else "" for k, v in attrs})


def _html_file(attrs: Mapping[str, str], page_url: str) -> DistFile:
    url, _ = urldefrag(urljoin(page_url, attrs["href"]))
    filename = url.rsplit("/", 1)[-1]
    meta = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
    sha = meta.split("=", 1)[1] if meta and meta.startswith("sha256=") else None
    served = meta is not None and meta.lower() != "false"
    return DistFile(unquote(filename), url, attrs.get("data-requires-python") or None,
                    f"{url}.metadata" if served else None, sha, "data-yanked" in attrs)
