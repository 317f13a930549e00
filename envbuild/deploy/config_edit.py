"""Writing a command-line choice into envbuild.toml, as `uv add` writes pyproject.toml.

A flag that changes what a lock holds (`lock --exclude-node X`) must not produce a lock that the
next `sync`, `run` or a teammate's clone then calls stale: after a successful `lock`, such choices
are written into envbuild.toml (tomlkit: every comment and key kept) and said.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from envbuild.core.fsio import atomic_write
from envbuild.deploy.deployment import Deployment
from envbuild.settings.config import CONFIG_NAME

_NEW_FILE_HEADER = """\
# envbuild.toml: the deployment envbuild locks, syncs and runs (see `envbuild init` for a commented one).
# Written by `envbuild lock` from its command-line choices; paths are relative to this file.
"""


def persist_lock_choices(deployment: Deployment, flags: Mapping[str, Any], *, start_dir: Path) -> list[str]:
    """Write the lock-shaping flags given to `lock` into envbuild.toml; one line per change made."""
    path = deployment.config.source or (start_dir.resolve() / CONFIG_NAME)
    root = path.parent
    changes: list[tuple[str, str, Any]] = []  # (table, key, value)

    def rel(value: Path) -> str:
        return Path(os.path.relpath((Path.cwd() / value).resolve(), root)).as_posix()

    for flag, table, key in (("comfyui", "comfyui", "path"), ("base_directory", "comfyui", "base-directory"),
                             ("lock_dir", "lock", "dir")):
        if flags.get(flag) is not None:
            changes.append((table, key, rel(flags[flag])))
    if flags.get("torch_source"):
        changes.append(("lock", "torch-source", flags["torch_source"]))
    for name in flags.get("exclude_nodes") or ():
        changes.append(("nodes", "exclude", [name]))
    for extra in flags.get("extra_requirements") or ():
        changes.append(("lock", "extra-requirements", [rel(extra)]))
    mirrors = deployment.config.mirror_flags
    if mirrors.get("mode") == "lock":
        for key in ("pytorch", "pypi", "pytorch-layout"):
            if mirrors.get(key):
                changes.append(("mirrors", key, mirrors[key]))
    if not changes:
        return []
    return _apply(path, changes)


def _apply(path: Path, changes: list[tuple[str, str, Any]]) -> list[str]:
    import tomlkit

    existed = path.is_file()
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if existed else tomlkit.parse(_NEW_FILE_HEADER)
    said: list[str] = []
    for table_name, key, value in changes:
        if table_name not in document:
            document[table_name] = tomlkit.table()
        table = document[table_name]
        current = table.get(key)
        if isinstance(value, list):
            have = [str(item) for item in (current or [])]
            fresh = [item for item in value if item not in have]
            if not fresh:
                continue
            if current is None:
                table[key] = tomlkit.array()
            for item in fresh:
                table[key].append(item)
            said.append(f"{table_name}.{key} += {', '.join(repr(v) for v in fresh)}")
        elif current != value:
            table[key] = value
            said.append(f"{table_name}.{key} = {value!r}")
    if not said:
        return []
    atomic_write(path, tomlkit.dumps(document))
    verb = "updated" if existed else "created"
    return [f"{path.name} {verb}: {change} (so sync, run and the next lock use the same deployment)"
            for change in said]


def persist_refs(deployment: Deployment, refs: Mapping[str, str]) -> list[str]:
    """`update` moved checkouts to new refs and everything passed: pin them in envbuild.toml.
    `refs`: section ("comfyui", "manager") -> ref."""
    path = deployment.config.source or (deployment.config.project_dir / CONFIG_NAME)
    return _apply(path, [(section, "ref", ref) for section, ref in refs.items()])
