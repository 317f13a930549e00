"""One line of a requirements file as a PEP 508 requirement, and how such a line is quoted in a message.

URL and path lines get their name from `#egg=` or the wheel's file name; a URL must be one uv can
fetch and must carry no credentials (the lock is committed). Every pattern here sees a node's text,
so each runs in linear time, and a quoted line is cut before anything else looks at it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement

from envbuild.core.runner import redact

CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # C1 too: \x9b starts a terminal escape
_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
SCHEME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|file:)")
_PATH_START = re.compile(r"^(?:\.\.?(?:[/\\]|$)|[/\\~]|[A-Za-z]:[/\\])")
_URLSCHEMES = ("http", "https", "file")
_ARCHIVE = re.compile(r"\.(?:whl|zip|tar\.gz|tgz|tar\.bz2|tar\.xz|tar)$", re.IGNORECASE)
_VERSION = r"[A-Za-z0-9.*+!_-]+"
_OPERATOR = r"~=|==|!=|<=|>=|<|>"
_RUN_TOGETHER = re.compile(
    rf"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*((?:(?:{_OPERATOR})\s*{_VERSION}\s*){{2,}})$"
)


class LineProblem(Exception):
    """A bad line: raised as an error in strict mode, turned into a Diagnostic in lenient."""

    def __init__(self, message: str, hint: str | None = None, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.message, self.hint, self.fatal = message, hint, fatal  # fatal: an error even when lenient


def quote(text: str, limit: int = 200) -> str:
    """Quote a line for a message, hiding credentials and cutting very long lines.

    Cut first, so a huge line costs nothing; a URL's user:password cut in the middle (no `@` left
    to find) is masked as a whole."""
    shown = redact(text[:limit])
    if len(text) > limit:
        start = shown.rfind("://") + 3
        if start > 2 and not re.search(r"[/@\s]", shown[start:]):
            shown = shown[:start] + "***"
        shown += "..."
    return "`" + CONTROL.sub(lambda char: f"\\x{ord(char.group()):02x}", shown) + "`"


def to_requirement(text: str, base: Path) -> Requirement:
    """Parse one requirement; URL and path lines get their name from #egg= or the wheel."""
    if CONTROL.search(text):
        raise LineProblem("it contains control characters")
    location, marker = (re.split(r";(?=\s)", text, maxsplit=1) + [""])[:2]
    location = location.strip()
    if SCHEME.match(text) or _PATH_START.match(text) or (
        _ARCHIVE.search(location) and not re.search(r"[@\s]", location)
    ):
        is_url = SCHEME.match(location) is not None
        url = location if is_url else _path_to_url(location, base)
        name = _egg_name(location) or _wheel_name(location)
        if name is None:
            raise LineProblem("a URL or path needs a package name: envbuild cannot tell which "
                               "package it installs without building it",
                               hint="write " + quote(f"NAME @ {url}"))
        text = f"{name} @ {url}" + (f" ; {marker.strip()}" if marker.strip() else "")
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise LineProblem(f"not a valid requirement ({str(exc).splitlines()[0]})",
                           hint=_suggest(text)) from None
    if requirement.url:
        _check_url(requirement.url)
    return requirement


def _check_url(url: str) -> None:
    """PEP 508 accepts any `scheme:...`; uv fetches only these, so anything else is caught at its line."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    vcs, plus, transport = scheme.partition("+")
    if scheme in _URLSCHEMES or (plus and vcs == "git" and transport in _URLSCHEMES + ("ssh",)):
        if not parts.netloc and (transport or scheme) != "file":
            raise LineProblem(f"the URL {quote(url)} names no host")
        # ssh's `git@host` names an account, not a secret; any other user or password would be committed
        if parts.password is not None or (parts.username is not None and transport != "ssh"):
            raise LineProblem(f"the URL {quote(url)} carries credentials, and envbuild never writes "
                               "credentials into the lock", fatal=True,
                               hint="remove them from the URL: uv reads credentials for a host from ~/.netrc "
                                    "(or a keyring, with UV_KEYRING_PROVIDER=subprocess)")
        return
    raise LineProblem(f"the URL scheme `{scheme}:` cannot be fetched",
                       hint="uv fetches http://, https:// and file:// archives and git+https://, git+ssh:// "
                            "repositories")


def _path_to_url(location: str, base: Path) -> str:
    """A local path, relative to the file naming it, as the file:// URL uv needs."""
    path, hash_sign, fragment = location.partition("#")
    absolute = Path(os.path.abspath(base / os.path.expanduser(path)))
    return absolute.as_uri() + (f"#{fragment}" if hash_sign else "")


def _egg_name(location: str) -> str | None:
    for part in location.partition("#")[2].split("&"):
        key, _, value = part.partition("=")
        if key == "egg" and _NAME.match(value):
            return value
    return None


def _wheel_name(location: str) -> str | None:
    """PEP 427: `name-version(-build)?-python-abi-platform.whl` names its project (like pip)."""
    path = urlsplit(location).path if "://" in location else location.partition("#")[0]
    filename = re.split(r"[/\\]", unquote(path))[-1]
    if not filename.lower().endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    return parts[0] if len(parts) in (5, 6) and _NAME.match(parts[0]) else None


def _suggest(text: str) -> str | None:
    """An honest guess for one common slip: specifiers run together, as in `a<2>=1`."""
    run = _RUN_TOGETHER.match(text)
    if run is None or "," in run.group(3):
        return None
    specs = re.findall(rf"({_OPERATOR})\s*({_VERSION})", run.group(3))
    specs.sort(key=lambda spec: not spec[0].startswith(">"))  # lower bound first
    guess = run.group(1) + (run.group(2) or "") + ",".join(op + v for op, v in specs)
    try:
        Requirement(guess)
    except InvalidRequirement:
        return None
    return f"did you mean `{guess}`?"
