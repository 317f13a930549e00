"""`locks/<profile>/`: the committed lock of one GPU profile, and whether it is still current.

Besides uv's two files, a folder records a fingerprint of what it was made from, so that a
no-op `envbuild lock` needs no resolver run and a stale lock can say *which* input changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from envbuild.fsio import recover_dir
from envbuild.safeio import MIB, digest_regular_file

FINGERPRINT_NAME = "envbuild-lock.json"
FINGERPRINT_SCHEMA = 2
_NOTHING: Mapping[str, str] = MappingProxyType({})  # an immutable default, shared safely
DIGEST_SIZE_LIMIT = 64 * MIB  # far above any requirements file, pyproject or uv.lock envbuild reads
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
    # The audit envbuild ran on these exact bytes before committing them: passed (True), and which
    # files had no sha256. Valid only while both files still match the digests above.
    audited: bool = False
    unhashed: tuple[str, ...] = ()
    requires_python: str = ""  # envbuild.toml's lock.requires-python ("": recorded by an older envbuild)

    def with_lock(self, lock_text: str, locked_at: str) -> Fingerprint:
        return self._replace(uv_lock_sha256=sha256_text(lock_text), extra={**self.extra, LOCKED_AT: locked_at})

    def to_json(self) -> str:
        data = self._asdict()
        data["inputs"] = dict(sorted(self.inputs.items()))
        data["raw_inputs"] = dict(sorted(self.raw_inputs.items()))
        data["extra"] = dict(sorted(self.extra.items()))
        data["roots"] = list(self.roots)
        data["warnings"] = list(self.warnings)
        data["unhashed"] = list(self.unhashed)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Fingerprint | None:
        try:
            data: dict[str, Any] = json.loads(text)
            if data.get("schema") != FINGERPRINT_SCHEMA:
                return None
            data["roots"] = tuple(data.get("roots", ()))
            data["warnings"] = tuple(data.get("warnings", ()))
            data["unhashed"] = tuple(data.get("unhashed", ()))
            return cls(**data)
        except (ValueError, TypeError):
            return None


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

    def exists(self) -> bool:
        recover_dir(self.path)
        return self.pyproject.is_file() and self.uv_lock.is_file()

    def read_fingerprint(self) -> Fingerprint | None:
        try:
            return Fingerprint.from_json(self.fingerprint_path.read_text(encoding="utf-8"))
        except OSError:
            return None


def stale_reasons(folder: LockFolder, pyproject_text: str, wanted: Fingerprint) -> list[str]:
    """Why the committed lock does not match what the inputs give now (empty: it is current)."""
    if not folder.exists():
        return [f"no lock yet at {folder.path}"]
    reasons: list[str] = []
    recorded = folder.read_fingerprint()
    on_disk = folder.pyproject.read_bytes()
    if on_disk != pyproject_text.encode("utf-8"):
        edited = bool(recorded and recorded.pyproject_sha256 and recorded.pyproject_sha256 != sha256_text(on_disk))
        if edited:  # a hand edit, whatever the inputs say
            reasons.append("pyproject.toml was changed outside envbuild")
        reasons.extend(_input_changes(recorded, wanted) or ([] if edited else ["the generated pyproject.toml differs"]))
    if recorded is None:
        reasons.append(f"{FINGERPRINT_NAME} is missing or unreadable")
    elif recorded.uv_lock_sha256 != sha256_text(folder.uv_lock.read_bytes()):
        reasons.append("uv.lock was changed outside envbuild")
    if recorded is not None:
        reasons.extend(_source_changes(recorded, wanted))
    return list(dict.fromkeys(reasons))


def _input_changes(old: Fingerprint | None, new: Fingerprint) -> list[str]:
    if old is None:
        return []
    reasons = []
    for path, digest in sorted(new.inputs.items()):
        if path not in old.inputs:
            reasons.append(f"{path} is a new input")
        elif old.inputs[path] != digest:
            reasons.append(f"{path} changed")
    reasons.extend(f"{path} is no longer an input" for path in sorted(set(old.inputs) - set(new.inputs)))
    if old.profile_sha256 != new.profile_sha256:
        reasons.append(f"profile {new.profile} changed")
    if old.index_url != new.index_url:
        reasons.append(f"the torch index changed ({old.index_url} → {new.index_url})")
    if old.default_index != new.default_index:
        reasons.append(f"the default index changed ({old.default_index or 'uv default'} → "
                       f"{new.default_index or 'uv default'})")
    if old.requires_python != new.requires_python and old.requires_python:
        reasons.append(f"lock.requires-python changed ({old.requires_python} → {new.requires_python})")
    if old.torch_source != new.torch_source:
        reasons.append(f"the torch source changed ({old.torch_source} → {new.torch_source})")
    if old.render_version != new.render_version:
        reasons.append("envbuild's pyproject format changed")
    if old.uv_required_version != new.uv_required_version:
        reasons.append("the required uv version changed")
    return reasons + _source_changes(old, new)


def _source_changes(old: Fingerprint, new: Fingerprint) -> list[str]:
    """Checkouts that moved (ComfyUI at another commit), even when no requirement line changed."""
    old_sources, new_sources = _sources_of(old), _sources_of(new)
    reasons = []
    for key in sorted(set(old_sources) | set(new_sources)):
        before, after = old_sources.get(key), new_sources.get(key)
        if before == after:
            continue
        if key.endswith("-commit"):
            what = {"comfyui-commit": "ComfyUI", "comfyui-manager-commit": "ComfyUI-Manager"}.get(key, key)
            reasons.append(f"{what} moved from {(before or 'no commit')[:12]} to {(after or 'no commit')[:12]}")
        else:
            reasons.append(f"{key} changed ({before} → {after})")
    return reasons


def _sources_of(fingerprint: Fingerprint) -> dict[str, str]:
    return {k: v for k, v in fingerprint.extra.items() if k != LOCKED_AT}


def unchanged_since_lock(folder: LockFolder, project_dir: Path, roots: list[str], expected: Fingerprint) -> bool:
    """The no-op fast path: every byte that fed the lock is as it was, so there is nothing to parse.

    `expected` carries what can be known without parsing (profile digest, index URL, versions of
    envbuild's format); a False answer only means "look closer", never "stale".
    """
    recorded = folder.read_fingerprint()
    if recorded is None or not recorded.raw_inputs or list(recorded.roots) != roots:
        return False
    if _settings(recorded) != _settings(expected):
        return False
    for path, digest in recorded.raw_inputs.items():
        if file_digest(_resolve(project_dir, path)) != digest:
            return False
    try:
        return (sha256_text(folder.pyproject.read_bytes()) == recorded.pyproject_sha256
                and sha256_text(folder.uv_lock.read_bytes()) == recorded.uv_lock_sha256)
    except OSError:
        return False


def _settings(fingerprint: Fingerprint) -> tuple[Any, ...]:
    """What besides the input files shapes a lock, as far as it is known without parsing them."""
    return (fingerprint.profile_sha256, fingerprint.index_url, fingerprint.render_version,
            fingerprint.uv_required_version, fingerprint.torch_source, _sources_of(fingerprint),
            fingerprint.default_index, fingerprint.requires_python)


def _resolve(project_dir: Path, display: str) -> Path:
    path = Path(display)
    return path if path.is_absolute() else project_dir / path


def file_digest(path: Path) -> str | None:
    """sha256 of an input file or lock; None when it is not a regular file of sane size.

    `raw_inputs` paths come from a committed, possibly hostile file: a FIFO, /dev/zero or a
    multi-gigabyte model there must read as "changed", not stall or exhaust the no-op check.
    """
    return digest_regular_file(path, DIGEST_SIZE_LIMIT)


def count_locked_packages(uv_lock_text: str) -> int:
    """Packages in a uv.lock, not counting the generated project itself."""
    return max(uv_lock_text.count("\n[[package]]\n") - 1, 0)
