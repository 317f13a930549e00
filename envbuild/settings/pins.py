"""Custom nodes pinned in envbuild.toml: `[custom-nodes.<name>]` git, commit, ref, disabled.

The same table may also say which extra requirement files of the node to lock, `requirements = [...]`
(files inside the node's folder that its install.py hands to pip: envbuild never runs install.py). A
table with only `requirements` is settings for a node folder that is not pinned (installed by hand
or by the Manager): not a pin.

A lock reproduces the Python packages; the nodes are code too. Each pinned node names its
repository and the full commit it is at (the tag or branch the user gave is kept beside it, as a
note of intent): `envbuild fetch` restores it there, and the lock's fingerprint records it.
Reading stays cheap (no git) because it runs on every no-op `lock` and `sync`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from envbuild.core.errors import ConfigError
from envbuild.core.text import quoted
from envbuild.settings.gitref import CREDENTIALS_HINT, git_url_problem, ref_problem

SECTION = "custom-nodes"
SETTINGS_KEYS = {"requirements"}  # about the node's folder, pinned or not
PIN_KEYS = {"git", "commit", "ref", "disabled", *SETTINGS_KEYS}
REGISTRY_KEYS = {"version", "sha256", "disabled", *SETTINGS_KEYS}
# An extra requirement file: a relative path inside the node's folder, each part a plain name (no `..`,
# nothing hidden, no option-like `-`), posix separators.
_REQUIREMENT_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")
MAX_EXTRA_FILES = 32
_SHA256 = re.compile(r"[0-9a-f]{64}")
FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# A node's name is its folder under custom_nodes: one path component, not hidden, no control characters.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
DISABLED_FOLDER = ".disabled"  # where the Manager keeps disabled nodes, inside custom_nodes
# Folder names ComfyUI would not load as a node of its own: Python's package marker and cache, and any name
# core's pip Manager blocks "by policy" (comfyui_manager.should_be_disabled: 'comfyui-manager' in the name).
_RESERVED = ("__init__", "__pycache__")
_MANAGER_LIKE = "comfyui-manager"


class NodePin(NamedTuple):
    """A git node (url + commit) or a Comfy Registry node (name = registry id, version, archive sha256)."""

    name: str  # its folder name in custom_nodes (a registry node: its registry id)
    url: str  # "" for a registry node
    commit: str  # full sha ("" for a registry node)
    ref: str  # what the user asked for (a tag, a branch, the commit itself)
    disabled: bool = False
    version: str = ""  # a registry node's version
    sha256: str = ""  # a registry node's archive, recorded at its first fetch and enforced after

    @property
    def from_registry(self) -> bool:
        return bool(self.version)

    @property
    def identity(self) -> str:
        """What the lock's fingerprint records: the commit, or the registry version and archive hash."""
        return self.commit if not self.from_registry else f"registry {self.version} {self.sha256[:12]}".strip()


def valid_name(name: str) -> bool:
    return (bool(_NAME.fullmatch(name)) and not name.endswith(".disabled") and len(name) <= 100
            and name not in _RESERVED and _MANAGER_LIKE not in name.lower())


def read_pins(table: Any, path: Path) -> tuple[NodePin, ...]:
    """`[custom-nodes]` as written, checked: unknown keys and wrong types are errors naming the key."""
    from envbuild.core.tomlfile import check_keys, expect

    expect(table, dict, SECTION, path)
    pins = []
    seen: set[str] = set()
    for name, entry in table.items():
        where = f"{SECTION}.{name}"
        if not valid_name(name):
            raise ConfigError(path, f"`{where}`: a node name is its folder name (letters, digits, _ . + -, not "
                                    "starting with a dot, not ending in .disabled)")
        if name.lower() in seen:
            raise ConfigError(path, f"`{where}` is pinned twice (names are compared ignoring case)")
        seen.add(name.lower())
        expect(entry, dict, where, path)
        if entry and not set(entry) - SETTINGS_KEYS:
            continue  # settings for an unpinned node folder (read_node_requirements)
        if "version" in entry:
            pins.append(_registry_pin(name, entry, where, path))
            continue
        check_keys(entry, PIN_KEYS, f"{where}.", path)
        for key in ("git", "commit"):
            if key not in entry:
                raise ConfigError(path, f"`{where}.{key}` is missing",
                                  hint="`envbuild node add URL` writes a complete pin")
        url = expect(entry["git"], str, f"{where}.git", path)
        problem = git_url_problem(url)
        if problem:
            raise ConfigError(path, f"`{where}.git` {problem}",
                              hint=CREDENTIALS_HINT if "credentials" in problem else "a git URL or a local path")
        commit = expect(entry["commit"], str, f"{where}.commit", path)
        if not FULL_SHA.fullmatch(commit):
            raise ConfigError(path, f"`{where}.commit` must be a full commit hash (40 hex digits), not {commit!r}",
                              hint=f"`envbuild node update {name} --ref REF` resolves a tag or branch to its commit")
        ref = expect(entry.get("ref", commit), str, f"{where}.ref", path)
        problem = ref_problem(ref)
        if problem:
            raise ConfigError(path, f"`{where}.ref` {quoted(ref)} {problem}",
                              hint=f"`envbuild node update {name} --ref REF` with a tag, a branch or a commit")
        disabled = expect(entry.get("disabled", False), bool, f"{where}.disabled", path)
        pins.append(NodePin(name, url, commit, ref, disabled))
    return tuple(pins)


def read_node_requirements(table: Any, path: Path) -> dict[str, tuple[str, ...]]:
    """`[custom-nodes.NAME] requirements`: node name (as written) -> the extra requirement files, each a
    relative path inside the node's folder, checked against its grammar here (the file is committed)."""
    from envbuild.core.tomlfile import expect, expect_str_list

    expect(table, dict, SECTION, path)
    found: dict[str, tuple[str, ...]] = {}
    for name, entry in table.items():
        if not isinstance(entry, dict) or "requirements" not in entry:
            continue
        key = f"{SECTION}.{name}.requirements"
        files = expect_str_list(entry["requirements"], key, path)
        if len(files) > MAX_EXTRA_FILES:
            raise ConfigError(path, f"`{key}` lists {len(files)} files; at most {MAX_EXTRA_FILES}")
        for file in files:
            if not _REQUIREMENT_PATH.fullmatch(file) or len(file) > 255:
                raise ConfigError(path, f"`{key}`: {quoted(file)} is not a relative path inside the node's folder",
                                  hint='e.g. requirements = ["requirements-no-cupy.txt"] (parts of letters, '
                                       "digits, _ . + -, separated by /; no `..`, no hidden or absolute path)")
        found[str(name)] = tuple(dict.fromkeys(files))
    return found


def _registry_pin(name: str, entry: dict[str, Any], where: str, path: Path) -> NodePin:
    """`version = "1.2.3"` (and `sha256`, written by the first `fetch`): a node from the Comfy Registry."""
    from envbuild.core.tomlfile import check_keys, expect

    check_keys(entry, REGISTRY_KEYS, f"{where}.", path)
    version = expect(entry["version"], str, f"{where}.version", path)
    sha256 = expect(entry.get("sha256", ""), str, f"{where}.sha256", path)
    if sha256 and not _SHA256.fullmatch(sha256):
        raise ConfigError(path, f"`{where}.sha256` must be 64 hex digits, not {sha256!r}",
                          hint="remove it: the next `envbuild fetch` records the archive's hash")
    if not version or version in ("latest", "nightly"):
        raise ConfigError(path, f"`{where}.version` must be one published version, not {version!r}")
    disabled = expect(entry.get("disabled", False), bool, f"{where}.disabled", path)
    return NodePin(name, "", "", version, disabled, version, sha256)


def pin_folder(custom_nodes: Path, pin: NodePin) -> Path:
    """Where a pinned node lives: custom_nodes/<name>, or custom_nodes/.disabled/<name> (the Manager's place)."""
    return custom_nodes / DISABLED_FOLDER / pin.name if pin.disabled else custom_nodes / pin.name


def _git_dir(checkout: Path) -> Path | None:
    git_dir = checkout / ".git"
    if git_dir.is_file():  # a worktree or submodule: `gitdir: <path>`
        pointer = _small_text(git_dir)
        if pointer is None or not pointer.startswith("gitdir:"):
            return None
        git_dir = (checkout / pointer.removeprefix("gitdir:").strip()).resolve()
    return git_dir if git_dir.is_dir() else None


def _git_folders(git_dir: Path) -> tuple[Path, ...]:
    """The git dir and, for a worktree, its common dir (refs, packed-refs, config and objects live there)."""
    common = _small_text(git_dir / "commondir")
    return (git_dir, *(((git_dir / common).resolve(),) if common else ()))


def read_head(checkout: Path) -> str | None:
    """The commit a checkout is at, read from its files: the one commit reader (no git process, so a
    no-op command needs no git on PATH). None when it is no git checkout or its HEAD cannot be read.
    A symbolic HEAD is followed through loose and packed refs, a worktree's or submodule's `gitdir:`
    pointer and a worktree's common dir; every file is read bounded (a FIFO cannot hang it)."""
    git_dir = _git_dir(checkout)
    if git_dir is None:
        return None
    head = _small_text(git_dir / "HEAD")
    if head is None:
        return None
    if FULL_SHA.fullmatch(head):
        return head
    ref = head.removeprefix("ref: ").strip() if head.startswith("ref: ") else ""
    if not ref.startswith("refs/") or ".." in ref.split("/"):
        return None
    for folder in _git_folders(git_dir):
        loose = _small_text(folder / ref)
        if loose is not None and FULL_SHA.fullmatch(loose):
            return loose
        for line in (_small_text(folder / "packed-refs") or "").splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and FULL_SHA.fullmatch(sha):
                return sha
    return None


_CONFIG_SECTION = re.compile(r'^\s*\[\s*remote\s+"(?P<name>[^"]*)"\s*\]\s*$')
_CONFIG_URL = re.compile(r'^\s*url\s*=\s*(?P<value>"[^"]*"|[^;#]*?)\s*(?:[;#].*)?$', re.IGNORECASE)


def read_origin(checkout: Path) -> str | None:
    """The `origin` remote's URL from the checkout's git config file (no git process): None when it is no
    git checkout or has no origin. Only the plain `url = ...` form is read, as `git clone` writes it."""
    git_dir = _git_dir(checkout)
    if git_dir is None:
        return None
    for folder in reversed(_git_folders(git_dir)):  # a worktree's remotes are in its common dir
        section = None
        for line in (_small_text(folder / "config") or "").splitlines():
            if line.lstrip().startswith("["):
                header = _CONFIG_SECTION.match(line)
                section = header.group("name") if header else None
            elif section == "origin" and (found := _CONFIG_URL.match(line)):
                return found.group("value").strip('"') or None
    return None


def read_tags_at(checkout: Path, commit: str) -> tuple[str, ...]:
    """The tags that name `commit`, read from files: loose tags (a lightweight tag's file holds the commit;
    an annotated one's tag object is read when it is a loose object) and packed-refs (with git's `^peeled`
    lines). An annotated tag whose object sits in a pack is not seen: the caller pins the commit then."""
    git_dir = _git_dir(checkout)
    if git_dir is None or not FULL_SHA.fullmatch(commit):
        return ()
    found: set[str] = set()
    for folder in _git_folders(git_dir):
        tags = folder / "refs" / "tags"
        for path in sorted(tags.rglob("*")) if tags.is_dir() else []:
            sha = _small_text(path) if path.is_file() else None
            if sha is not None and FULL_SHA.fullmatch(sha) and commit in (sha, _peel(folder, sha)):
                found.add(path.relative_to(tags).as_posix())
        last = None
        for line in (_small_text(folder / "packed-refs") or "").splitlines():
            sha, _, name = line.partition(" ")
            if line.startswith("^") and last is not None and line[1:].strip() == commit:
                found.add(last)
            last = name.removeprefix("refs/tags/") if name.startswith("refs/tags/") else None
            if last is not None and sha == commit:
                found.add(last)
    return tuple(sorted(t for t in found if ref_problem(t) is None))


def _peel(folder: Path, sha: str) -> str | None:
    """The object an annotated tag points at, from its loose object file (zlib: `tag <size>\\0object <sha>`)."""
    import zlib

    from envbuild.core.safeio import MIB, read_regular_file

    try:
        raw = zlib.decompressobj().decompress(read_regular_file(folder / "objects" / sha[:2] / sha[2:], MIB), 4096)
    except (OSError, zlib.error):
        return None
    header, _, body = raw.partition(b"\0")
    if not header.startswith(b"tag "):
        return None
    first = body.split(b"\n", 1)[0].decode("ascii", "replace")
    target = first.removeprefix("object ")
    return target if first.startswith("object ") and FULL_SHA.fullmatch(target) else None


def _small_text(path: Path) -> str | None:
    from envbuild.core.safeio import MIB, read_regular_file

    try:
        return read_regular_file(path, 16 * MIB).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def commit_key(name: str) -> str:
    """The fingerprint's `extra` key for a pinned node's commit (freshness says "node X moved ...")."""
    return f"node:{name}-commit"


MISSING = "missing"  # the fingerprint value of a pinned node that is not on disk


def node_commits(pins: tuple[NodePin, ...], custom_nodes: Path | None) -> Mapping[str, str]:
    """Each enabled pinned node's commit as it is on disk ("missing": not there), for the fingerprint."""
    commits = {}
    for pin in pins:
        if pin.disabled:
            continue
        folder = pin_folder(custom_nodes, pin) if custom_nodes is not None else None
        if pin.from_registry:
            commits[commit_key(pin.name)] = pin.identity if folder is not None and folder.is_dir() else MISSING
            continue
        commits[commit_key(pin.name)] = (read_head(folder) if folder is not None else None) or MISSING
    return commits
