"""uv.lock as values: the one module that reads the lock file uv writes.

The audit, the torch guard, `diff`, `export`, locks/README.md, `doctor` and the mirror rewrite all
need the same few facts (which packages, from which index, which files with which hashes), so they
take a `LockFile` from here instead of each reading the TOML or searching the text its own way: a
change in uv's format, or a hand edit that breaks the file, is met in one place with one error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from envbuild.core.errors import ConfigError, LockIntegrityError, StaleLockError

# The no-op `lock` and `sync` import this module only for the two searches at the end, so it stays cheap
# to import: NamedTuples, not dataclasses (whose import pulls in inspect and ast), and packaging.utils and
# the TOML parser imported only where a lock is parsed.

# The keys of a package's `source` table, one per kind of place uv installs from.
SOURCE_KINDS = ("registry", "git", "url", "path", "directory", "editable", "virtual")
_RESTORE = "restore the committed uv.lock or re-run `envbuild lock`"


class LockedFile(NamedTuple):
    """A wheel or sdist the lock records: where uv fetches it and the hash uv checks it against."""

    kind: str  # "wheel" or "sdist"
    url: str | None
    path: str | None
    filename: str | None
    hash: str | None  # "sha256:<hex>" as uv writes it; None when the index served no hash
    size: int | None

    @property
    def location(self) -> str | None:
        return self.url or self.path or self.filename


class Dependency(NamedTuple):
    """An edge of the lock's graph: `name` (with `version`/`source` when several are locked), under `marker`."""

    name: str
    version: str | None = None
    source: Mapping[str, str] | None = None
    marker: str | None = None
    extras: tuple[str, ...] = ()
    group: str | None = None  # None: a runtime dependency; else "extra:<name>" or "dev:<name>"


class LockedPackage(NamedTuple):
    """One `[[package]]` of a uv.lock, its name canonicalized."""

    name: str
    version: str
    source: Mapping[str, str]
    sdist: LockedFile | None = None
    wheels: tuple[LockedFile, ...] = ()
    resolution_markers: tuple[str, ...] = ()  # set when uv forked: the environments this version is for
    dependencies: tuple[Dependency, ...] = ()

    @property
    def is_root(self) -> bool:
        """The generated project itself (nothing is installed from it)."""
        return self.source.get("virtual") == "."

    @property
    def source_kind(self) -> str:
        """registry, git, url, path, directory, editable or virtual ("unknown" for a hand-written source)."""
        return next((kind for kind in SOURCE_KINDS if kind in self.source), "unknown")

    @property
    def registry(self) -> str | None:
        url = self.source.get("registry")
        return url.rstrip("/") if url is not None else None

    @property
    def files(self) -> tuple[LockedFile, ...]:
        return ((self.sdist,) if self.sdist is not None else ()) + self.wheels

    @property
    def urls(self) -> tuple[str, ...]:
        """Every URL uv may download this package from (a URL source, its files)."""
        source = (self.source["url"],) if "url" in self.source else ()
        return source + tuple(f.url for f in self.files if f.url is not None)

    def source_label(self) -> str:
        """Where it comes from: an index URL, or `<kind>:<where>` for git, URL and path sources."""
        if self.registry is not None:
            return self.registry
        kind, value = next(iter(sorted(self.source.items())), ("unknown", ""))
        return f"{kind}:{value}"


class LockFile(NamedTuple):
    path: Path
    packages: tuple[LockedPackage, ...]
    supported_markers: tuple[str, ...] = ()
    required_markers: tuple[str, ...] = ()
    resolution_markers: tuple[str, ...] = ()
    requires_python: str | None = None
    version: int | None = None  # uv's lock format version
    revision: int | None = None

    def named(self, name: str) -> tuple[LockedPackage, ...]:
        """Every locked version of a package (several when uv forked by platform), in file order."""
        from packaging.utils import canonicalize_name

        wanted = canonicalize_name(name)
        return tuple(p for p in self.packages if p.name == wanted)

    def registries(self) -> set[str]:
        """The indexes packages come from, exactly as the lock spells them."""
        return {p.source["registry"] for p in self.packages if "registry" in p.source}


def read_uv_lock(path: Path) -> LockFile:
    """Parse a uv.lock; a missing or corrupt one is an integrity problem, not a crash."""
    from envbuild.core.safeio import MIB, read_regular_file

    try:
        text = read_regular_file(path, 64 * MIB).decode("utf-8")  # a FIFO or /dev/zero is refused, not read
    except OSError as exc:
        raise StaleLockError(f"cannot read {path}: {exc.strerror or exc}",
                             hint="run `envbuild lock` for this profile and commit the folder") from None
    except UnicodeDecodeError:
        raise LockIntegrityError(f"{path}: is not a UTF-8 text file", hint=_RESTORE) from None
    return parse_uv_lock(text, path)


# The last few locks parsed, by their exact text: a lock just made is read again by the steps after uv
# (ComfyUI's compiled-package note, then locks/README.md after the other profiles' locks), ~0.1 s a parse
# of a 260-package lock. Only the same text, character for character, is answered from here (a value,
# never mutated), so no other bytes can be answered with it.
_parsed: dict[str, LockFile] = {}
_KEPT = 4


def parse_uv_lock(text: str, path: Path | str) -> LockFile:
    """Pure: the lock in `text`; `path` only names it in errors. Wrong shapes raise LockIntegrityError."""
    where = Path(path)
    known = _parsed.get(text)
    if known is not None:
        return known._replace(path=where)
    parsed = _parse_uv_lock(text, where)
    _parsed[text] = parsed
    while len(_parsed) > _KEPT:  # the oldest first (dicts keep insertion order)
        try:
            _parsed.pop(next(iter(_parsed)), None)
        except (RuntimeError, StopIteration):  # `lock --all` parses in threads: another one changed it
            break
    return parsed


def _parse_uv_lock(text: str, where: Path) -> LockFile:
    from envbuild.core.tomlfile import parse_toml

    try:
        data = parse_toml(text, where)
    except ConfigError as exc:
        raise LockIntegrityError(str(exc), hint=_RESTORE) from None
    reader = _Reader(where)
    entries = reader.array(data, "package", "the lock")
    return LockFile(
        path=where,
        packages=tuple(reader.package(entry) for entry in entries),
        supported_markers=reader.strings(data, "supported-markers", "the lock"),
        required_markers=reader.strings(data, "required-markers", "the lock"),
        resolution_markers=reader.strings(data, "resolution-markers", "the lock"),
        requires_python=reader.optional_str(data, "requires-python", "the lock"),
        version=reader.optional_int(data, "version", "the lock"),
        revision=reader.optional_int(data, "revision", "the lock"),
    )


class _Reader:
    """Turns the parsed TOML into values; every wrong shape names the file, the package and the key."""

    def __init__(self, path: Path) -> None:
        from packaging.utils import canonicalize_name

        self.path, self.canonical = path, canonicalize_name

    def fail(self, what: str, message: str) -> LockIntegrityError:
        return LockIntegrityError(f"{self.path}: {what}: {message}", hint=_RESTORE)

    def package(self, entry: Any) -> LockedPackage:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise LockIntegrityError(f"{self.path}: a [[package]] entry has no name", hint=_RESTORE)
        name = str(self.canonical(entry["name"]))
        version = str(entry.get("version", ""))
        what = f"package {name} {version}".rstrip()
        sdist = entry.get("sdist")
        return LockedPackage(
            name=name, version=version, source=self.source(entry.get("source", {}), what),
            sdist=None if sdist is None else self.file("sdist", sdist, what),
            wheels=tuple(self.file("wheel", w, what) for w in self.array(entry, "wheels", what)),
            resolution_markers=self.strings(entry, "resolution-markers", what),
            dependencies=self.dependencies(entry, what),
        )

    def source(self, value: Any, what: str) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail(what, f"`source` is {value!r}, not a table")
        return {str(k): str(v) for k, v in value.items()}

    def file(self, kind: str, value: Any, what: str) -> LockedFile:
        if not isinstance(value, dict):
            raise self.fail(what, f"a {kind} entry is {value!r}, not a table")
        size = value.get("size")
        return LockedFile(kind, _opt_str(value.get("url")), _opt_str(value.get("path")),
                          _opt_str(value.get("filename")), _opt_str(value.get("hash")),
                          size if isinstance(size, int) else None)

    def dependencies(self, entry: Mapping[str, Any], what: str) -> tuple[Dependency, ...]:
        edges = [self.edge(e, None, what) for e in self.array(entry, "dependencies", what)]
        for table, prefix in (("optional-dependencies", "extra"), ("dev-dependencies", "dev")):
            groups = entry.get(table, {})
            if not isinstance(groups, dict):
                raise self.fail(what, f"`{table}` is not a table")
            for group in groups:
                edges += [self.edge(e, f"{prefix}:{group}", what) for e in self.array(groups, group, what)]
        return tuple(edges)

    def edge(self, value: Any, group: str | None, what: str) -> Dependency:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise self.fail(what, f"a dependency is {value!r}, not a table with a name")
        source = value.get("source")
        return Dependency(str(self.canonical(value["name"])), _opt_str(value.get("version")),
                          None if source is None else self.source(source, what), _opt_str(value.get("marker")),
                          self.strings(value, "extra", what), group)

    def array(self, table: Mapping[str, Any], key: str, what: str) -> list[Any]:
        value = table.get(key, [])
        if not isinstance(value, list):
            raise self.fail(what, f"`{key}` is not an array")
        return value

    def strings(self, table: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
        return tuple(str(item) for item in self.array(table, key, what))

    def optional_str(self, table: Mapping[str, Any], key: str, what: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(what, f"`{key}` is {value!r}, not a string")
        return value

    def optional_int(self, table: Mapping[str, Any], key: str, what: str) -> int | None:
        value = table.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise self.fail(what, f"`{key}` is {value!r}, not a number")
        return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


# -- two searches for the no-op commands ------------------------------------------------------------
# `lock` with its inputs unchanged and `sync` of a current venv read one fact each from the lock (how many
# packages; which torch, for the fit check), and a parse costs them more than their target allows.
# Measured 2026-12-03 on 2 shared cores, Python 3.11: parse_uv_lock of locks/cu130-pypi/uv.lock (2,200
# lines) takes 65-75 ms in-process against 0.1-0.3 ms for these searches; on a `scripts/bench.py --keep`
# site (179 packages), installs run alternately 25 times, the parse in their place raised the median CPU
# time of the no-op lock from 0.092 s to 0.148 s and of the no-op sync from 0.164 s to 0.228 s. The no-op
# lock's target is uv + 100 ms and it had 14 ms to spare (0.120 s against uv's 0.034 s in the bench), so
# the parse misses it. Both rely on uv writing `[[package]]`, `name`, `version` on consecutive lines;
# tests/test_uvlock.py holds them to parse_uv_lock's answer on every committed lock.

_PACKAGE = "\n[[package]]\n"


def count_locked_packages(text: str) -> int:
    """Packages in a uv.lock, not counting the generated project itself."""
    return max(text.count(_PACKAGE) - 1, 0)


def first_locked_version(text: str, name: str) -> str | None:
    """The version of the first `[[package]]` named `name` (as uv writes it: normalized), or None."""
    header = f'{_PACKAGE}name = "{name}"\nversion = "'
    at = text.find(header)  # a plain search: a regex over a large uv.lock costs ten times more
    if at < 0:
        return None
    start = at + len(header)
    end = text.find('"', start)
    return text[start:end] or None if end > start else None
