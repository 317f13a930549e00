"""A git checkout as envbuild.toml pins it (`[comfyui]`/`[manager]` git and ref), read from its files.

`envbuild init` writes the pin; `lock --check` offers it for a checkout nobody pinned. The URL is the
clone's `origin` (credentials left out: they would be committed), the ref the tag at HEAD, else the
commit. No git process: read_head, read_origin and read_tags_at read the clone's files.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import NamedTuple

from envbuild.core.errors import ConfigError
from envbuild.core.text import quoted
from envbuild.settings.config import refuse_pip_manager_ref
from envbuild.settings.gitref import git_url_problem
from envbuild.settings.pins import read_head, read_origin, read_tags_at


class Pin(NamedTuple):
    """A checkout as envbuild.toml pins it: [comfyui]/[manager] git and ref."""

    url: str
    ref: str
    commit: str
    said: str  # how it was chosen ("the tag v0.3.64 at HEAD"); a stripped credential is said here too

    @property
    def local(self) -> bool:
        """A path or file:// URL: this machine's, which another machine cannot fetch."""
        return self.url.lower().startswith("file:") or not re.match(r"^([a-z][a-z0-9+.-]*://|[^/:]+:)", self.url)


def checkout_pin(checkout: Path, what: str) -> tuple[Pin | None, str]:
    """(the pin, "") for a git clone with an origin, else (None, why not: a clause). Read from the clone's files: its
    HEAD, its origin URL (credentials removed: they would be committed) and the tags at HEAD."""
    commit = read_head(checkout)
    if commit is None:
        return None, ""  # not a git clone: nothing to pin, nothing to say
    url = read_origin(checkout)
    if not url:
        return None, "no `origin` remote"
    url, stripped = _without_credentials(url)
    problem = git_url_problem(url)
    if problem:
        return None, f"its origin URL {quoted(url)} {problem}"
    tags = read_tags_at(checkout, commit)
    ref = _best_tag(tags) if tags else commit
    said = f"the tag {ref} at HEAD, commit {commit[:12]}" if tags else "HEAD's commit: no tag there"
    if stripped:
        said += "; the credentials in its origin URL left out"
    if what != "ComfyUI":
        try:
            refuse_pip_manager_ref(ref, str(checkout), "ref")
            refuse_pip_manager_ref(url, str(checkout), "git")
        except ConfigError as exc:
            return None, str(exc).splitlines()[0]
    return Pin(url, ref, commit, said), ""


def _without_credentials(url: str) -> tuple[str, bool]:
    """The URL without a user name and password (`https://user:token@host/x` → `https://host/x`)."""
    if "://" not in url:
        return url, False
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, False
    user, _, host = parts.netloc.rpartition("@")
    if parts.scheme.lower() not in ("http", "https") and ":" not in user:
        return url, False  # ssh://git@host/x: the account, no secret
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), True


def _best_tag(tags: tuple[str, ...]) -> str:
    """A release tag when HEAD has several (`v0.3.64` over `latest`): the highest version-looking one."""
    def key(tag: str) -> tuple[int, tuple[int, ...], str]:
        numbers = re.fullmatch(r"v?(\d+(?:\.\d+)*)", tag)
        return (1, tuple(int(n) for n in numbers.group(1).split(".")), tag) if numbers else (0, (), tag)

    return max(tags, key=key)
