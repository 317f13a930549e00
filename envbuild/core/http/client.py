"""Plain HTTP reads for everything that is not a package index (the Comfy Registry, reachability probes):
every read bounded in bytes and in total time, not only per socket read.

A per-read timeout alone lets a server that sends one byte every few seconds hold a command forever, so
each read here has an overall deadline checked between chunks (at most one per-read timeout late).
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from envbuild.core.runner import redact


class HttpFailure(Exception):
    """A read that gave nothing usable; `reason` says why in words, `status` the HTTP status if any.
    Callers turn it into their own `EnvbuildError` with the fix that fits them."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{redact(url)}: {reason}")
        self.url = redact(url)
        self.reason = reason
        self.status = status


def bounded_body(response: httpx.Response, url: str, *, limit: int, deadline: float, started: float) -> bytes:
    """A streamed response's body, read as it arrives; `HttpFailure` past `limit` bytes or `deadline`
    seconds after `started` (monotonic, checked between chunks). The one such loop: the index client's
    reads go through it too."""
    end = started + deadline
    chunks, size = [], 0
    for chunk in response.iter_bytes():  # as received: a chunk size would wait for that many bytes
        size += len(chunk)
        if size > limit:
            raise HttpFailure(url, f"sent more than the {limit:,} bytes allowed")
        if time.monotonic() > end:
            raise HttpFailure(url, f"did not finish within {deadline:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def read_bytes(url: str, *, limit: int, timeout: float, deadline: float,
               client: httpx.Client | None = None) -> tuple[bytes, str]:
    """The body of a GET (redirects followed) and the URL it came from, refused past `limit` bytes or
    `deadline` seconds in all."""
    started = time.monotonic()
    own = client is None
    session = client or httpx.Client(timeout=timeout, follow_redirects=True)
    try:
        with session.stream("GET", url) as response:
            if response.status_code != 200:
                raise HttpFailure(url, f"answered HTTP {response.status_code}", response.status_code)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise HttpFailure(url, f"is {int(declared):,} bytes, more than the {limit:,} allowed")
            return bounded_body(response, url, limit=limit, deadline=deadline, started=started), str(response.url)
    except httpx.HTTPError as exc:
        raise HttpFailure(url, f"{type(exc).__name__}: {exc}") from None
    finally:
        if own:
            session.close()


def read_json(url: str, *, limit: int, timeout: float, deadline: float,
              client: httpx.Client | None = None) -> Any:
    """A GET's body parsed as JSON, bounded like `read_bytes`."""
    body, _ = read_bytes(url, limit=limit, timeout=timeout, deadline=deadline, client=client)
    try:
        return json.loads(body)
    except ValueError:
        raise HttpFailure(url, "did not answer JSON") from None


def probe(url: str, *, timeout: float) -> tuple[int, float]:
    """One GET with no retries: the status and the seconds it took (raises `HttpFailure` when unreachable)."""
    started = time.perf_counter()
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise HttpFailure(url, f"unreachable: {type(exc).__name__}: {exc}") from None
    return response.status_code, time.perf_counter() - started
