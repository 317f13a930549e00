"""Rendering of Simple Repository API answers (PEP 503 HTML, PEP 691/700 JSON, PEP 658/714).

Kept apart from the server so the wire format can be read (and checked against
the PEPs) in one place.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, quote

__all__ = ["HTML_V1", "JSON_V1", "HashMode", "IndexFile", "Response", "wants_json"]

HashMode = Literal["good", "none", "wrong"]

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
API_VERSION = "1.1"
_JSON_TYPES = {JSON_V1, "application/vnd.pypi.simple.latest+json"}
_HTML_TYPES = {HTML_V1, "application/vnd.pypi.simple.latest+html", "text/html", "text/*", "*/*"}
_NO_CACHE = {
    "Cache-Control": "no-cache"
}  # tests mutate indexes; pages must not go stale in uv's cache


@dataclass(frozen=True)
class IndexFile:
    """A published distribution file and everything its listings need."""

    filename: str
    project: str  # PEP 503 normalized
    version: str
    data: bytes
    sha256: str
    requires_python: str | None
    metadata: bytes | None  # None: published without PEP 658 metadata
    hash: HashMode = "good"
    upload_time: str | None = None  # PEP 700 `upload-time` (ISO 8601, UTC); None: not listed

    @property
    def metadata_sha256(self) -> str | None:
        return hashlib.sha256(self.metadata).hexdigest() if self.metadata is not None else None

    @property
    def listed_sha256(self) -> str | None:
        """The digest advertised in listings (deliberately wrong for hash="wrong")."""
        if self.hash == "none":
            return None
        if self.hash == "wrong":
            return hashlib.sha256(b"not-the-file:" + self.data).hexdigest()
        return self.sha256

    @property
    def relative_url(self) -> str:
        """Link from a project page (`/<prefix>/<project>/`) to the file, `+` escaped as `%2B`."""
        return f"../files/{quote(self.filename, safe='')}"


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def text(status: int, message: str) -> Response:
    return Response(status, message.encode(), {"Content-Type": "text/plain; charset=utf-8"})


def redirect(location: str) -> Response:
    return Response(301, headers={"Location": location})


def wants_json(accept: str, query: str) -> bool:
    """PEP 691 negotiation: JSON when its q-value is at least HTML's, or `?format=<json type>`."""
    fmt = parse_qs(query).get("format")
    if fmt:
        return fmt[0] in _JSON_TYPES
    best_json = best_html = 0.0
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media in _JSON_TYPES:
            best_json = max(best_json, q)
        elif media in _HTML_TYPES:
            best_html = max(best_html, q)
    return best_json > 0 and best_json >= best_html


def _json(payload: dict[str, Any]) -> Response:
    body = json.dumps(payload, indent=1, sort_keys=True).encode()
    return Response(200, body, {"Content-Type": JSON_V1, **_NO_CACHE})


def _html(title: str, links: list[str]) -> Response:
    page = (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        f'<meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"<title>{html.escape(title)}</title>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(links) + "\n</body>\n</html>\n"
    )
    return Response(200, page.encode(), {"Content-Type": "text/html; charset=utf-8", **_NO_CACHE})


def root_page(projects: list[str], as_json: bool) -> Response:
    """`/<prefix>/`: every project with at least one file."""
    if as_json:
        return _json(
            {"meta": {"api-version": API_VERSION}, "projects": [{"name": p} for p in projects]}
        )
    return _html(
        "Simple index", [f'<a href="{quote(p)}/">{html.escape(p)}</a><br/>' for p in projects]
    )


def flat_page(files: list[IndexFile]) -> Response:
    """A find-links page: every file of the index, linked from `/<prefix>/`."""
    links = []
    for entry in files:
        href = f"files/{quote(entry.filename, safe='')}"
        if entry.listed_sha256:
            href += f"#sha256={entry.listed_sha256}"
        links.append(f'<a href="{html.escape(href)}">{html.escape(entry.filename)}</a><br/>')
    return _html("Flat index", links)


def project_page(files: list[IndexFile], as_json: bool) -> Response:
    """`/<prefix>/<project>/` in the negotiated format; `files` all belong to one project."""
    project = files[0].project
    if as_json:
        versions = list(dict.fromkeys(e.version for e in files))
        return _json(
            {
                "meta": {"api-version": API_VERSION},
                "name": project,
                "versions": versions,
                "files": [_json_file(e) for e in files],
            }
        )
    return _html(f"Links for {project}", [_html_link(e) for e in files])


def _html_link(entry: IndexFile) -> str:
    href = entry.relative_url
    if entry.listed_sha256:
        href += f"#sha256={entry.listed_sha256}"
    attrs = [f'href="{html.escape(href)}"']
    if entry.requires_python:
        attrs.append(f'data-requires-python="{html.escape(entry.requires_python)}"')
    if entry.metadata_sha256:
        # PEP 658 spelling plus the PEP 714 rename; clients read either.
        attrs.append(f'data-dist-info-metadata="sha256={entry.metadata_sha256}"')
        attrs.append(f'data-core-metadata="sha256={entry.metadata_sha256}"')
    if entry.upload_time:  # as download.pytorch.org lists it since 2026 (pytorch/test-infra#8139)
        attrs.append(f'data-upload-time="{html.escape(entry.upload_time)}"')
    return f"<a {' '.join(attrs)}>{html.escape(entry.filename)}</a><br/>"


def _json_file(entry: IndexFile) -> dict[str, Any]:
    listed = entry.listed_sha256
    meta: dict[str, str] | bool = (
        {"sha256": entry.metadata_sha256} if entry.metadata_sha256 else False
    )
    listing: dict[str, Any] = {
        "filename": entry.filename,
        "url": entry.relative_url,
        "hashes": {"sha256": listed} if listed else {},
        "requires-python": entry.requires_python,
        # PEP 714's name only: the pip that Python 3.10's ensurepip bundles (23.0.1) crashes on the legacy
        # `dist-info-metadata` key as PEP 691 writes it ("unhashable type: 'dict'"), and the guard tests
        # run that pip. uv and envbuild read `core-metadata` first.
        "core-metadata": meta,
        "size": len(entry.data),
        "yanked": False,
    }
    if entry.upload_time:  # PEP 700: what uv's exclude-newer compares with
        listing["upload-time"] = entry.upload_time
    return listing


def file_response(entry: IndexFile | None, *, metadata: bool) -> Response:
    """The wheel itself, or its `.metadata` sidecar when `metadata` is true."""
    if entry is None:
        return text(404, "no such file\n")
    if metadata:
        if entry.metadata is None:
            return text(404, "no metadata for this file\n")
        return Response(200, entry.metadata, {"Content-Type": "text/plain; charset=utf-8"})
    return Response(200, entry.data, {"Content-Type": "application/octet-stream"})
