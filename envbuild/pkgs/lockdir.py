"""`locks/<profile>/`: the committed lock of one GPU profile, and whether it is still current.

Besides uv's two files, a folder records a fingerprint of what it was made from, so that a
no-op `envbuild lock` needs no resolver run and a stale lock can say *which* input changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from envbuild.core.fsio import recover_dir
from envbuild.core.safeio import MIB, digest_regular_file, read_regular_file

FINGERPRINT_NAME = "envbuild-lock.json"
FINGERPRINT_SCHEMA = 2
_NOTHING: Mapping[str, str] = MappingProxyType({})  # an immutable default, shared safely
DIGEST_SIZE_LIMIT = 64 * MIB  # far above any requirements file, pyproject or uv.lock envbuild reads
FINGERPRINT_SIZE_LIMIT = 16 * MIB  # a 300-package lock's fingerprint is ~10 KiB
UPDATE_LOCK = ".update.lock"  # held while checkouts move (`update`, `fetch`)
UPDATE_JOURNAL = ".update-journal.json"  # a running `update`'s journal (lock folder scratch, git-ignored)
CONSTRAINTS_NAME = "constraints.txt"  # the torch guard (envbuild.uv.guard), committed beside uv.lock
LOCKED_AT = "locked-at"  # in `extra`: when uv last wrote this lock (a date, for people, not for freshness)


def sha256_text(text: str | bytes) -> str:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(raw).hexdigest()


class Fingerprint(NamedTuple):
    profile: str
    render_version: int
    uv_required_version: str
    torch_source: str
    index_url: str | None
    profile_sha256: str
    pyproject_sha256: str
    inputs: Mapping[str, str]  # display path -> digest of what the file asks for (comments do not count)
    uv_lock_sha256: str = ""
    schema: int = FINGERPRINT_SCHEMA
    extra: Mapping[str, str] = _NOTHING  # e.g. resolved ComfyUI commit, lock date
    raw_inputs: Mapping[str, str] = _NOTHING  # display path -> sha256 of the bytes read
    roots: tuple[str, ...] = ()  # the input files found (not includes), in order
    warnings: tuple[str, ...] = ()  # what the inputs asked for that is not in the lock (shown on every run)
    default_index: str | None = None  # a PyPI mirror the lock was made through (None: uv's default)
    requires_python: str = ""  # envbuild.toml's lock.requires-python ("": recorded by an older envbuild)
    settled: Mapping[str, str] = _NOTHING  # variant groups envbuild settled after a lock: module -> member kept
    bounds: Mapping[str, str] = _NOTHING  # constraints envbuild added after a lock (envbuild.torch.torch_bound)
    companions: tuple[str, ...] = ()  # companions a dependency brought, asked directly after a lock (companions.py)
    exclude_newer: str = ""  # [lock] exclude-newer, canonical ("7 days", a time; "": off or an older envbuild)
    cutoff: str = ""  # the cooldown's moment this lock holds to (RFC 3339 UTC), moved only by --upgrade/update

    def with_lock(self, lock_text: str, locked_at: str) -> Fingerprint:
        return self._replace(uv_lock_sha256=sha256_text(lock_text), extra={**self.extra, LOCKED_AT: locked_at})

    def to_json(self) -> str:
        data = self._asdict()
        data["inputs"] = dict(sorted(self.inputs.items()))
        data["raw_inputs"] = dict(sorted(self.raw_inputs.items()))
        data["extra"] = dict(sorted(self.extra.items()))
        data["roots"] = list(self.roots)
        data["warnings"] = list(self.warnings)
        for name in ("settled", "bounds", "companions", "exclude_newer", "cutoff"):  # written only when used:
            if not data[name]:  # other locks keep their bytes
                del data[name]
            elif name == "companions":
                data[name] = sorted(data[name])
            elif name in ("settled", "bounds"):
                data[name] = dict(sorted(data[name].items()))
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Fingerprint | None:
        """The recorded fingerprint, or None when it is not one this envbuild wrote (garbage, another
        schema, a field of the wrong type). Keys it does not know are ignored: they come from an older or
        newer envbuild, and nothing here trusts the file anyway (it only says what changed and which
        files to hash; trust comes from the per-user cache, see `trust`)."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("schema") != FINGERPRINT_SCHEMA:
            return None
        values: dict[str, Any] = {}
        for name, kind in _FIELD_TYPES.items():
            if name not in data:
                if name in _REQUIRED:
                    return None
                continue
            value = data[name]
            if not _has_type(value, kind):
                return None
            values[name] = tuple(value) if kind == "strings" else value
        if not _values_in_grammar(values):
            return None
        return cls(**values)


_REQUIRED = ("profile", "render_version", "uv_required_version", "torch_source", "index_url", "profile_sha256",
             "pyproject_sha256", "inputs")
_FIELD_TYPES: dict[str, Any] = {
    "profile": str, "render_version": int, "uv_required_version": str, "torch_source": str,
    "index_url": (str, type(None)), "profile_sha256": str, "pyproject_sha256": str, "inputs": "mapping",
    "uv_lock_sha256": str, "schema": int, "extra": "mapping", "raw_inputs": "mapping", "roots": "strings",
    "warnings": "strings", "default_index": (str, type(None)), "requires_python": str, "settled": "mapping",
    "bounds": "mapping", "companions": "strings", "exclude_newer": str, "cutoff": str,
}


_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REGISTRY_IDENTITY = re.compile(r"registry [A-Za-z0-9_.+-]{1,64}( [0-9a-f]{12})?")
_URL = re.compile(r"https?://[^\s\"'`\\<>{}|^]{1,2000}")
_MISSING = "missing"


def _values_in_grammar(values: Mapping[str, Any]) -> bool:
    """The recorded values later commands hand to git or write into generated files (an image's
    Containerfile) must be what envbuild itself writes: a full commit, a registry identity, a plain URL.
    A newline in a commit or a forged index is not a fingerprint of envbuild's."""
    for key, value in values.get("extra", {}).items():
        if key.endswith("-commit") and not (_FULL_SHA.fullmatch(value) or value == _MISSING
                                             or _REGISTRY_IDENTITY.fullmatch(value)):
            return False
    return all(url is None or _URL.fullmatch(url) for url in (values.get("default_index"), values.get("index_url")))


def _has_type(value: Any, kind: Any) -> bool:
    if kind == "mapping":
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    if kind == "strings":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


class LockFolder(NamedTuple):
    root: Path
    profile: str

    @property
    def path(self) -> Path:
        return self.root / self.profile

    @property
    def pyproject(self) -> Path:
        return self.path / "pyproject.toml"

    @property
    def uv_lock(self) -> Path:
        return self.path / "uv.lock"

    @property
    def fingerprint_path(self) -> Path:
        return self.path / FINGERPRINT_NAME

    @property
    def constraints(self) -> Path:
        return self.path / CONSTRAINTS_NAME

    def exists(self) -> bool:
        recover_dir(self.path)
        # Present as names, whatever they are: a symlink or FIFO in their place is "edited" (trust says
        # so, `special_entries`), not "missing" (which would send the user to re-lock over it).
        return os.path.lexists(self.pyproject) and os.path.lexists(self.uv_lock)

    def read_fingerprint(self) -> Fingerprint | None:
        try:
            return Fingerprint.from_json(read_regular_file(self.fingerprint_path, FINGERPRINT_SIZE_LIMIT)
                                         .decode("utf-8"))
        except (OSError, UnicodeDecodeError):
            return None

    def special_entries(self) -> list[str]:
        """What in the lock folder is neither a plain file nor a folder: a symlink (to ~/.netrc, say, which
        an image would copy), a FIFO or a device (/dev/zero, which a reader would never finish). Checked
        with lstat before anything in the folder is read; the folder itself must not be a link either."""
        found = []
        for path in (self.root, self.path):
            if path.is_symlink():
                found.append(f"{path.name} is a symbolic link")
        if found or not self.path.is_dir():
            return found
        for folder, dirs, files in os.walk(self.path):
            for name in (*dirs, *files):
                entry = Path(folder) / name
                mode = entry.lstat().st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    found.append(f"{entry.relative_to(self.root).as_posix()} is {_kind(mode)}")
        return sorted(found)


def _kind(mode: int) -> str:
    return "a symbolic link" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
        "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else \
        "not a plain file"


def file_digest(path: Path) -> str | None:
    """sha256 of an input file or lock; None when it is not a regular file of sane size.

    `raw_inputs` paths come from a committed, possibly hostile file: a FIFO, /dev/zero or a
    multi-gigabyte model there must read as "changed", not stall or exhaust the no-op check.
    """
    return digest_regular_file(path, DIGEST_SIZE_LIMIT)

