"""The deployment's settings: `envbuild.toml` in the project folder, overridden by flags.

Paths in the file are relative to the file's folder, so a committed deployment works from any
checkout location. Unknown keys and wrong types are errors naming the key: a typo must not
silently lock the wrong thing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from envbuild.errors import ConfigError
from envbuild.tomlfile import check_keys, expect, expect_str_list, load_toml

CONFIG_NAME = "envbuild.toml"
DEFAULT_REQUIRES_PYTHON = ">=3.10"
_SECTIONS = {"comfyui", "manager", "nodes", "lock"}
_KEYS: Mapping[str, set[str]] = {
    "comfyui": {"path", "base-directory"},
    "manager": {"path", "enabled"},
    "nodes": {"dirs", "exclude"},
    "lock": {"dir", "requires-python", "profiles", "extra-requirements", "profiles-dir"},
}


@dataclass(frozen=True)
class Config:
    project_dir: Path
    source: Path | None  # the envbuild.toml read, if any
    comfyui: Path | None = None
    base_directory: Path | None = None
    manager: Path | None = None
    manager_enabled: bool = True
    node_dirs: tuple[Path, ...] = ()  # empty: the defaults under base-directory and the checkout
    exclude_nodes: tuple[str, ...] = ()
    lock_dir: Path = Path("locks")
    requires_python: str = DEFAULT_REQUIRES_PYTHON
    profiles: tuple[str, ...] = ()
    extra_requirements: tuple[Path, ...] = ()
    profiles_dirs: tuple[Path, ...] = field(default=())

    def display(self, path: Path) -> str:
        """A path as it should appear in generated files: relative to the project, posix."""
        try:
            return path.resolve().relative_to(self.project_dir.resolve()).as_posix()
        except ValueError:
            return path.resolve().as_posix()

    def custom_node_dirs(self) -> tuple[Path, ...]:
        if self.node_dirs:
            return self.node_dirs
        dirs: list[Path] = []
        if self.base_directory is not None:
            dirs.append(self.base_directory / "custom_nodes")
        if self.comfyui is not None:
            dirs.append(self.comfyui / "custom_nodes")
        return tuple(dict.fromkeys(dirs))

    def with_overrides(self, **changes: Any) -> Config:
        """Flags win over the file; None means "not given"."""
        given = {k: v for k, v in changes.items() if v not in (None, ())}
        return dataclasses.replace(self, **given)


def load_config(project_dir: Path) -> Config:
    """Read `envbuild.toml` if present; with no file every setting keeps its default."""
    project_dir = project_dir.resolve()
    path = project_dir / CONFIG_NAME
    if not path.exists():
        return Config(
            project_dir=project_dir, source=None, lock_dir=project_dir / "locks",
            profiles_dirs=_default_profiles_dirs(project_dir),
        )
    data = load_toml(path)
    check_keys(data, _SECTIONS, "", path)
    for section in data:
        expect(data[section], dict, section, path)
        check_keys(data[section], _KEYS[section], f"{section}.", path)
    comfy, manager = data.get("comfyui", {}), data.get("manager", {})
    nodes, lock = data.get("nodes", {}), data.get("lock", {})

    def rel(value: Any, key: str) -> Path:
        return (project_dir / expect(value, str, key, path)).resolve()

    requires_python = expect(lock.get("requires-python", DEFAULT_REQUIRES_PYTHON), str, "lock.requires-python", path)
    try:
        SpecifierSet(requires_python)
    except InvalidSpecifier:
        raise ConfigError(path, f"`lock.requires-python` is not a version specifier: {requires_python!r}") from None
    profiles_dir = lock.get("profiles-dir")
    return Config(
        project_dir=project_dir,
        source=path,
        comfyui=rel(comfy["path"], "comfyui.path") if "path" in comfy else None,
        base_directory=rel(comfy["base-directory"], "comfyui.base-directory") if "base-directory" in comfy else None,
        manager=rel(manager["path"], "manager.path") if "path" in manager else None,
        manager_enabled=expect(manager.get("enabled", True), bool, "manager.enabled", path),
        node_dirs=tuple(rel(d, "nodes.dirs") for d in expect_str_list(nodes.get("dirs", []), "nodes.dirs", path)),
        exclude_nodes=tuple(expect_str_list(nodes.get("exclude", []), "nodes.exclude", path)),
        lock_dir=rel(lock.get("dir", "locks"), "lock.dir"),
        requires_python=requires_python,
        profiles=tuple(expect_str_list(lock.get("profiles", []), "lock.profiles", path)),
        extra_requirements=tuple(
            rel(p, "lock.extra-requirements")
            for p in expect_str_list(lock.get("extra-requirements", []), "lock.extra-requirements", path)
        ),
        profiles_dirs=(
            (rel(profiles_dir, "lock.profiles-dir"),) if profiles_dir else _default_profiles_dirs(project_dir)
        ),
    )


def _default_profiles_dirs(project_dir: Path) -> tuple[Path, ...]:
    """A deployment's own `profiles/` folder adds to (or replaces) the built-in profiles."""
    local = project_dir / "profiles"
    return (local,) if local.is_dir() else ()
