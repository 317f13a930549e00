"""Read package indexes the way installers do, and cache what they said.

A project page comes as PEP 691 JSON when the index offers it, else as PEP 503 HTML (the PyTorch
index serves HTML only). A wheel's metadata comes from its PEP 658/714 `.metadata` file where
served, else from HTTP range reads of the METADATA member at the end of the wheel: never the
whole wheel, which for torch is most of a gigabyte. Answers are cached on disk with HTTP's own
freshness rules, so `--offline` can work from the last run.
"""

from __future__ import annotations

import hashlib
import html.parser
import io
import json
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urldefrag, urljoin

import httpx
from packaging.utils import canonicalize_name

from envbuild.errors import EnvbuildError
from envbuild.fsio import atomic_write
from envbuild.runner import redact

CACHE_DIR_ENV = "ENVBUILD_CACHE_DIR"
DEFAULT_TTL = 3600.0
JSON_V1 = "application/vnd.pypi.simple.v1+json"
SIMPLE_ACCEPT = f"{JSON_V1}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
NOT_THERE = (403, 404, 410)  # the PyTorch index (S3) answers 403 for a project it lacks
RETRIED = (429, 500, 502, 503, 504)
_TAIL = 65536  # the end of a wheel: its zip directory, where the .dist-info entries usually sit
_MAX_RANGE_BYTES = 32 * 1024 * 1024  # per wheel: a directory larger than this is not worth reading
T = TypeVar("T")
R = TypeVar("R")


class _Retryable(Exception):
    """A range read hit a 5xx: worth another try."""


class IndexReadError(EnvbuildError):
    """An index answered nothing usable for one URL: the report names the URL and why."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{redact(url)}: {reason}")
        self.url = redact(url)
        self.reason = reason


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


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(CACHE_DIR_ENV):
        return Path(env[CACHE_DIR_ENV]) / "index"
    import platformdirs

    return Path(platformdirs.user_cache_dir("envbuild")) / "index"


class HttpCache:
    """Responses on disk, one body and one JSON header file per URL (written atomically)."""

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
                 backoff: float = 0.5, concurrency: int = 8, transport: httpx.BaseTransport | None = None) -> None:
        self.cache = cache
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
        body = self._retrying(dist.url, lambda: _metadata_by_range(self._http, dist.url))
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
            response = self._retrying(url, lambda: self._http.get(url, headers=headers))
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
            except _Retryable as exc:
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


# -- METADATA by HTTP range reads ---------------------------------------------------------------
def _metadata_by_range(http: httpx.Client, url: str) -> bytes:
    """The standard library's zipfile reads `*.dist-info/METADATA` through `_RangeFile`: the tail
    (end record, usually the whole directory), the directory when it starts before the tail, and
    the member itself: two or three range requests, never the whole wheel."""
    import zipfile

    try:
        with zipfile.ZipFile(_RangeFile(http, url)) as wheel:
            name = next((n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)), None)
            if name is None:
                raise IndexReadError(url, "the wheel has no .dist-info/METADATA")
            return wheel.read(name)
    except zipfile.BadZipFile as exc:
        raise IndexReadError(url, f"not a readable zip file ({exc})") from None
    except (NotImplementedError, zlib.error) as exc:  # a compression zipfile cannot inflate, a damaged member
        raise IndexReadError(url, f"its METADATA cannot be inflated ({exc})") from None


class _RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file: every read the blocks already fetched cannot
    answer becomes one HTTP range request of at least `_TAIL` bytes (the read-ahead), and the
    first request fetches the tail, where a zip keeps its directory."""

    def __init__(self, http: httpx.Client, url: str) -> None:
        super().__init__()
        self._http, self._url, self._pos, self._fetched = http, url, 0, 0
        tail, self._size = _range(http, url, f"bytes=-{_TAIL}")
        self._blocks: list[tuple[int, bytes]] = [(self._size - len(tail), tail)]
        self._fetched = len(tail)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = max(0, min(len(view), self._size - self._pos))
        done = 0
        while done < wanted:
            chunk = self._cached(self._pos + done, wanted - done)
            if not chunk:
                self._fetch(self._pos + done, max(wanted - done, _TAIL))
                continue
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
        self._pos += done
        return done

    def _cached(self, start: int, length: int) -> bytes:
        for first, data in self._blocks:
            if first <= start < first + len(data):
                return data[start - first:start - first + length]
        return b""

    def _fetch(self, start: int, length: int) -> None:
        end = min(start + length, self._size) - 1
        if self._fetched + end - start + 1 > _MAX_RANGE_BYTES:
            budget = f"{_MAX_RANGE_BYTES / 2**20:g} MiB"
            raise IndexReadError(self._url, f"reading its METADATA would download over {budget} of the wheel "
                                            "(its zip directory is too large)")
        data, _ = _range(self._http, self._url, f"bytes={start}-{end}")
        if not data:
            raise IndexReadError(self._url, f"answered the range {start}-{end} with no bytes")
        self._blocks.append((start, data))
        self._fetched += len(data)


def _range(http: httpx.Client, url: str, spec: str) -> tuple[bytes, int]:
    with http.stream("GET", url, headers={"Range": spec}) as response:
        if response.status_code != 206:  # closing early: never download the whole wheel
            if response.status_code in RETRIED:
                raise _Retryable(f"HTTP {response.status_code}")
            raise IndexReadError(url, f"serves no PEP 658 metadata and answered a range request with "
                                      f"HTTP {response.status_code}")
        body = response.read()
        total = int(response.headers.get("content-range", "/0").rsplit("/", 1)[1])
    return body, total
