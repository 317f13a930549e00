"""Large file downloads into a content-addressed store: streamed, hashed while streaming, resumed, verified.

A model file is gigabytes over connections that drop. The bytes stream into `partial/<key>.part` beside the
store (the same file system, so landing is one rename), sha256 computed as they arrive; a dropped
connection is resumed with an HTTP Range request from where the partial ends (a server that ignores Range
and answers 200 restarts cleanly from byte 0). Only when the whole file hashes to the expected sha256 does
it become `sha256/<hex>` in the store: nothing unverified is ever placed. A mismatch deletes the partial
(those bytes are wrong, resuming them is pointless) and names both hashes; a full disk or Ctrl-C leaves
the partial for the next run to resume.

Memory stays flat (one chunk in flight); a stall is caught by the per-read timeout and by a low-speed
limit (curl's --speed-limit/--speed-time: a server that drips a byte every few seconds never trips a
per-read timeout). Credential headers are the caller's; httpx drops `Authorization` on a redirect to
another origin (a CDN's signed URL), and the URL a redirect led to is never returned or printed.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

import httpx

from envbuild.core.runner import redact

CHUNK = 1024 * 1024
RETRIED = {408, 425, 429, 500, 502, 503, 504}
Progress = Callable[[int, "int | None"], None]  # (bytes so far, total if known)


class DownloadFailure(Exception):
    """A download that did not produce the expected file; `reason` in words, `status` the HTTP status if any,
    `mismatch` when the server sent other bytes than the pin's (a hint is chosen by these, never by words
    in `reason`: a hash in it can read "401")."""

    def __init__(self, url: str, reason: str, status: int | None = None, *, mismatch: bool = False) -> None:
        super().__init__(f"{redact(url)}: {reason}")
        self.url = redact(url)
        self.reason = reason
        self.status = status
        self.mismatch = mismatch


class HashMismatch(DownloadFailure):
    """The server's bytes are not the pinned ones: both hashes are named, nothing is placed."""

    def __init__(self, url: str, expected: str, actual: str, size: int) -> None:
        super().__init__(url, f"sent {size:,} bytes with sha256 {actual}, but the pin says {expected}", mismatch=True)
        self.expected = expected
        self.actual = actual


class Fetched(NamedTuple):
    sha256: str
    size: int
    path: Path  # the store's file: sha256/<hex>
    downloaded: int  # bytes this call read from the network (0: already in the store)
    resumed_from: int  # bytes of a partial kept from an earlier attempt or run
    filename: str | None  # the server's Content-Disposition file name, if it sent one


class Limits(NamedTuple):
    tries: int = 5  # attempts in a row that make no progress before giving up
    timeout: float = 30.0  # per connect / per read
    speed_limit: int = 1024  # bytes per `speed_time` seconds below which an attempt is abandoned
    speed_time: float = 60.0
    backoff: float = 0.5


DEFAULT_LIMITS = Limits()


def store_file(store: Path, sha256: str) -> Path:
    return store / "sha256" / sha256


def download(url: str, store: Path, *, sha256: str | None = None, size: int | None = None,
             headers: Mapping[str, str] | None = None, progress: Progress | None = None,
             limits: Limits = DEFAULT_LIMITS, transport: httpx.BaseTransport | None = None) -> Fetched:
    """`url` into `store/sha256/<hex>`, verified against `sha256` (and `size`) when given; a file already in
    the store is not downloaded again. Without `sha256` the hash is computed and returned (`model add`)."""
    if sha256 is not None and store_file(store, sha256).is_file():
        found = store_file(store, sha256)
        return Fetched(sha256, found.stat().st_size, found, 0, 0, None)
    partial_dir = store / "partial"
    partial_dir.mkdir(parents=True, exist_ok=True)
    key = sha256 or hashlib.sha256(url.encode()).hexdigest()
    part = partial_dir / f"{key}.part"
    from envbuild.core.fsio import exclusive_lock

    # A second envbuild fetching the same file waits for the first, then finds it in the store.
    with exclusive_lock(partial_dir / f"{key}.lock", timeout=24 * 3600.0):
        if sha256 is not None and store_file(store, sha256).is_file():
            found = store_file(store, sha256)
            return Fetched(sha256, found.stat().st_size, found, 0, 0, None)
        _larger_reads()
        _no_queries_in_httpx_logs()
        with httpx.Client(timeout=limits.timeout, follow_redirects=True, transport=transport,
                          headers={"Accept-Encoding": "identity"}) as client:
            return _download(client, url, store, part, sha256, size, dict(headers or {}), progress, limits)


def _download(client: httpx.Client, url: str, store: Path, part: Path, sha256: str | None, size: int | None,
              headers: dict[str, str], progress: Progress | None, limits: Limits) -> Fetched:
    state = _State(part, size)
    if sha256 is None and state.have and state.validator is None:
        state.restart()  # nothing pins these bytes and nothing says the file is the same one: start over
    resumed_from, filename = state.have, None
    failures, reason = 0, ""
    while size is None or state.have != size:
        if failures >= limits.tries:
            kept = f"; the {state.have:,} bytes that arrived are kept and the next run resumes them" \
                if state.have else ""
            raise DownloadFailure(url, f"{reason} ({failures} failed tries in a row{kept})")
        if failures:
            time.sleep(min(limits.backoff * 2 ** (failures - 1), 5.0))
        before, done, stalled = state.have, False, False
        request_headers = dict(headers)
        if state.have and sha256 is None and state.validator is None:
            state.restart()  # a resume only where the pin, or the server's validator, proves it is one file
        if state.have:
            request_headers["Range"] = f"bytes={state.have}-"
            if state.validator:  # the file changed on the server: it answers 200, the whole new file
                request_headers["If-Range"] = state.validator
        try:
            with client.stream("GET", url, headers=request_headers) as response:
                status = response.status_code
                if status in RETRIED:
                    reason = f"HTTP {status}"
                elif status == 416 and state.have:  # the partial is not a prefix of what is served now
                    state.restart()
                    reason = "HTTP 416 for the kept partial"
                elif status not in (200, 206):
                    raise DownloadFailure(url, _status_reason(status), status)
                elif status == 206 and not _range_starts_at(response, state.have):
                    state.restart()
                    reason = "a range answer that did not start where asked"
                else:
                    if status == 200 and state.have:  # the server ignores Range: the whole file, from byte 0
                        state.restart()
                    if not state.have:
                        state.remember(_validator(response))
                    filename = filename or _disposition_name(response.headers.get("content-disposition", ""))
                    total = _total(response, state.have, size)
                    if size is not None and total is not None and total != size:
                        raise DownloadFailure(url, f"serves a file of {total:,} bytes, but the pin says {size:,}: "
                                                   "not the pinned file", mismatch=True)
                    _stream(response, state, total, progress, limits, url)
                    done = total is None or state.have >= total
                    reason = "" if done else f"the connection closed at {state.have:,} of {total:,} bytes"
        except httpx.InvalidURL:  # its text may hold a redirect's (signed) URL: not repeated
            raise DownloadFailure(url, "not a valid URL (or it redirected to one that is not)") from None
        except httpx.TooManyRedirects:
            raise DownloadFailure(url, "redirected too many times") from None
        except httpx.TimeoutException:
            reason = f"timed out after {limits.timeout:g} s without a byte"
        except _Stalled as exc:  # a drip makes progress on every try: it counts against the tries all the same
            reason, stalled = str(exc), True
        except (httpx.TransportError, httpx.DecodingError) as exc:
            reason = f"the connection failed ({type(exc).__name__})"
        except httpx.HTTPError as exc:  # anything else httpx raises: said by its kind, never its text
            raise DownloadFailure(url, f"the request failed ({type(exc).__name__})") from None
        if done and (size is None or state.have >= size):
            break
        failures = 0 if state.have > before and not stalled else failures + 1
    digest = state.hasher.hexdigest()
    state.remember(None)
    if sha256 is not None and digest != sha256:
        part.unlink(missing_ok=True)
        raise HashMismatch(url, sha256, digest, state.have)
    if size is not None and state.have != size:
        part.unlink(missing_ok=True)
        raise DownloadFailure(url, f"sent {state.have:,} bytes (sha256 {digest}), but the pin says {size:,}",
                              mismatch=True)
    target = store_file(store, digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(part, os.O_RDONLY)
    try:
        os.fsync(fd)  # on disk before it is named by its hash: a crash never leaves a wrong file under that name
    finally:
        os.close(fd)
    os.chmod(part, 0o444)  # the store's files are shared by hard links: never written in place
    os.replace(part, target)
    return Fetched(digest, state.have, target, state.downloaded, resumed_from, filename)


READ_SIZE = 1024 * 1024
_QUERY = re.compile(r"\?[^\s\"']*")


def _no_queries_in_httpx_logs() -> None:
    """httpx logs every request's URL at INFO (`envbuild -v`), a redirect's signed CDN URL included: its
    query (the signature, an expiry, a token) is cut from those lines."""
    import logging

    class NoQueries(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg, record.args = _QUERY.sub("?…", record.getMessage()), ()
            return True

    log = logging.getLogger("httpx")
    if not any(type(f).__name__ == "NoQueries" for f in log.filters):
        log.addFilter(NoQueries())


def _larger_reads() -> None:
    """httpcore reads a response body 64 KiB per socket read (`HTTP11Connection.READ_NUM_BYTES`, a class
    attribute meant as a setting); for a file of gigabytes the HTTP parsing per read then costs about a
    fifth of the throughput (scripts/bench_models.py, 128 MiB on loopback, medians of 9 interleaved runs:
    234 MiB/s at 64 KiB, 295 MiB/s at 1 MiB, curl 319-333). Larger reads change nothing else: recv returns
    what has arrived, at most this much. Left alone when httpcore names it otherwise."""
    try:
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:  # httpcore moved it: the default stays
        return
    if getattr(HTTP11Connection, "READ_NUM_BYTES", None) == 64 * 1024:
        HTTP11Connection.READ_NUM_BYTES = READ_SIZE


class _State:
    """The partial on disk and the hash of exactly its bytes, kept in step."""

    def __init__(self, part: Path, size: int | None) -> None:
        self.part, self.hasher, self.have, self.downloaded = part, hashlib.sha256(), 0, 0
        self.validator_file = part.with_suffix(".validator")
        self.validator: str | None = None
        if self.validator_file.is_file():
            self.validator = self.validator_file.read_text(encoding="utf-8").strip()[:512] or None
        if part.exists():
            have = part.stat().st_size
            if size is not None and have > size:
                self.restart()
                return
            with open(part, "rb") as handle:  # the hash of a kept partial: read once from local disk
                while block := handle.read(CHUNK):
                    self.hasher.update(block)
            self.have = have

    def restart(self) -> None:
        self.part.unlink(missing_ok=True)
        self.hasher, self.have = hashlib.sha256(), 0

    def remember(self, validator: str | None) -> None:
        """The server's strong ETag or Last-Modified of the file the partial holds, kept beside it (an
        If-Range on resume); None forgets it."""
        self.validator = validator
        if validator:
            self.validator_file.write_text(validator, encoding="utf-8")
        else:
            self.validator_file.unlink(missing_ok=True)


class _Stalled(Exception):
    pass


def _validator(response: httpx.Response) -> str | None:
    """A strong ETag (a weak one cannot be an If-Range), else Last-Modified; control characters refused."""
    etag = response.headers.get("etag", "").strip()
    value = etag if etag and not etag.startswith("W/") else response.headers.get("last-modified", "").strip()
    if not value or len(value) > 512 or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return None
    return str(value)


def _range_starts_at(response: httpx.Response, have: int) -> bool:
    found = re.match(r"bytes\s+(\d+)-", response.headers.get("content-range", ""))
    return found is not None and int(found.group(1)) == have


def _total(response: httpx.Response, have: int, size: int | None) -> int | None:
    """The file's full length as the answer states it (Content-Range's total, else offset + length)."""
    found = re.search(r"/(\d+)\s*$", response.headers.get("content-range", ""))
    if found:
        return int(found.group(1))
    length = response.headers.get("content-length", "")
    return have + int(length) if length.isdigit() else size


def _stream(response: httpx.Response, state: _State, total: int | None, progress: Progress | None,
            limits: Limits, url: str) -> None:
    """Append the body to the partial, hashing as it goes (the hash always covers exactly the bytes written)."""
    window_start, window_bytes = time.monotonic(), 0
    with open(state.part, "ab") as out:
        try:
            for chunk in response.iter_raw():  # as the socket delivers (a chunk size would buffer)
                if total is not None and state.have + len(chunk) > total:
                    chunk = chunk[:total - state.have]
                out.write(chunk)
                state.hasher.update(chunk)
                state.have += len(chunk)
                state.downloaded += len(chunk)
                window_bytes += len(chunk)
                if progress is not None:
                    progress(state.have, total)
                if total is not None and state.have >= total:
                    break
                now = time.monotonic()
                if now - window_start >= limits.speed_time:
                    if window_bytes < limits.speed_limit:
                        raise _Stalled(f"fewer than {limits.speed_limit:,} bytes in {limits.speed_time:g} s")
                    window_start, window_bytes = now, 0
        finally:
            out.flush()


def _status_reason(status: int) -> str:
    return {401: "answered HTTP 401 (authentication required)",
            403: "answered HTTP 403 (forbidden: a gated or private file needs a token)",
            404: "answered HTTP 404 (not found: the file moved or the URL is wrong)"}.get(
        status, f"answered HTTP {status}")


def _disposition_name(header: str) -> str | None:
    """The file name a Content-Disposition header gives (RFC 6266: filename* first), else None."""
    star = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", header, re.I)
    if star:
        return unquote(star.group(1).strip().strip('"'))
    plain = re.search(r'filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;]+)', header, re.I)
    if plain:
        return (plain.group(1) or plain.group(2) or "").strip() or None
    return None
