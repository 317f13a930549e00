"""The deployment's settings: `envbuild.toml` in the project folder, overridden by flags.

Paths in the file are relative to the file's folder, so a committed deployment works from any
checkout location. Unknown keys and wrong types are errors naming the key: a typo must not
silently lock the wrong thing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from envbuild.core.errors import ConfigError
from envbuild.core.text import quoted
from envbuild.core.tomlfile import check_keys, expect, expect_str_list, load_toml
from envbuild.settings.cooldown import DEFAULT_COOLDOWN, Cooldown, parse_cooldown
from envbuild.settings.gitref import CREDENTIALS_HINT, git_url_problem, ref_problem

if TYPE_CHECKING:
    from envbuild.settings.models import ModelSettings
    from envbuild.settings.pins import NodePin

CONFIG_NAME = "envbuild.toml"
DEFAULT_REQUIRES_PYTHON = ">=3.10"
NO_SETTINGS: Mapping[str, Any] = MappingProxyType({})  # an immutable default, shared safely
DEFAULT_REGISTRY = "https://api.comfy.org"  # the Comfy Registry ([nodes] registry overrides it)
_SECTIONS = {"comfyui", "manager", "nodes", "lock", "mirrors", "custom-nodes", "generations", "models"}
_KEYS: Mapping[str, set[str]] = {
    "comfyui": {"path", "base-directory", "listen", "port", "git", "ref"},
    "manager": {"path", "enabled", "pip", "git", "ref", "network_mode", "security_level", "allow_git_url_install",
                "allow_pip_install", "allow_flagged_nodepack_install"},
    "nodes": {"dirs", "exclude", "registry"},
    "lock": {"dir", "requires-python", "profiles", "extra-requirements", "profiles-dir", "torch-source",
             "variant-groups", "exclude", "exclude-newer", "allow-build"},
    "mirrors": {"pytorch", "pytorch-layout", "pypi", "pypi-files", "mode", "timeout"},  # see mirrors.py
    "generations": {"keep"},  # see generations.py
}
_TABLE_OF_TABLES = {"custom-nodes", "models"}  # one table per node (pins.read_pins) / model (models.read_models)

# ComfyUI-Manager v4's own settings, spelled as its config.ini spells them (CM-4.3 glob/manager_core.py
# read_config; research/comfy.md section 2): `envbuild manager setup` writes those the deployment sets.
MANAGER_CHOICES: Mapping[str, tuple[str, ...]] = {
    "network_mode": ("public", "private", "offline", "personal_cloud"),  # enum NetworkMode
    # data_models.SecurityLevel: `normal-`, not common/enums.py's unused "normal-minus"
    "security_level": ("strong", "normal", "normal-", "weak"),
}
MANAGER_FLAGS = ("allow_git_url_install", "allow_pip_install", "allow_flagged_nodepack_install")


class GitSource(NamedTuple):
    """Where `envbuild fetch` gets a checkout from: a repository and the ref it is pinned to."""

    url: str
    ref: str


class Config(NamedTuple):
    project_dir: Path
    source: Path | None  # the envbuild.toml read, if any
    comfyui: Path | None = None
    base_directory: Path | None = None
    manager: Path | None = None
    manager_enabled: bool = True
    manager_pip: bool = True  # [manager] pip = false: ComfyUI's manager_requirements.txt is not used
    manager_ini: Mapping[str, str] = NO_SETTINGS  # [manager] network_mode, ...: key -> config.ini value
    node_dirs: tuple[Path, ...] = ()  # empty: the defaults under base-directory and the checkout
    exclude_nodes: tuple[str, ...] = ()
    lock_dir: Path = Path("locks")
    requires_python: str = DEFAULT_REQUIRES_PYTHON
    torch_source: str | None = None  # "pypi": --cuda/--profile pick the profile's -pypi variant
    profiles: tuple[str, ...] = ()
    extra_requirements: tuple[Path, ...] = ()
    profiles_dirs: tuple[Path, ...] = ()
    mirrors: Mapping[str, Any] = NO_SETTINGS  # [mirrors] as written; mirrors.resolve_mirrors
    mirror_flags: Mapping[str, Any] = NO_SETTINGS  # --mirror/--pypi-mirror/... of this command
    listen: str | None = None  # ComfyUI's --listen for `envbuild run`
    port: int | None = None  # ComfyUI's --port for `envbuild run`
    comfyui_git: GitSource | None = None  # clone/update [comfyui] path from here (`envbuild fetch`)
    manager_git: GitSource | None = None
    node_pins: tuple[NodePin, ...] = ()  # [custom-nodes.<name>]: nodes at a commit (`envbuild fetch`, `node`)
    node_registry: str = DEFAULT_REGISTRY  # [nodes] registry: the Comfy Registry's API base
    keep_generations: int = 3  # venv generations kept beside the venv path (current and previous always)
    variant_groups: Mapping[str, tuple[str, ...]] = NO_SETTINGS  # module -> members, the first kept (variants.py)
    exclude_packages: tuple[str, ...] = ()  # [lock] exclude: optional torch-family members left out (family.py)
    exclude_newer: Cooldown | None = DEFAULT_COOLDOWN  # [lock] exclude-newer (None: off; settings/cooldown.py)
    exclude_newer_set: bool = False  # written in envbuild.toml (else the default, which a PyPI mirror turns off)
    allow_build: tuple[str, ...] = ()  # [lock] allow-build: packages whose build backend may run (sdists, git)
    # [custom-nodes.NAME] requirements: node name -> extra requirement files inside its folder (pinned or not)
    node_requirements: Mapping[str, tuple[str, ...]] = NO_SETTINGS
    models: ModelSettings | None = None  # [models]: model files pinned by sha256 (settings/models.py)

    def display(self, path: Path) -> str:
        """A path as it should appear in generated files: relative to the project, posix, with `..`
        when it lies outside (`../ComfyUI/requirements.txt` for `[comfyui] path = "../ComfyUI"`), as
        envbuild.toml itself names it: committed files then hold no path of this machine, and the same
        repository beside the same layout elsewhere reads the same. Symlinks are not followed: a linked
        node folder or checkout would otherwise put the link's target into committed files."""
        return relative_display(path, self.project_dir)

    def custom_node_dirs(self) -> tuple[Path, ...]:
        if self.node_dirs:
            return self.node_dirs
        dirs: list[Path] = []
        if self.base_directory is not None:
            dirs.append(self.base_directory / "custom_nodes")
        if self.comfyui is not None:
            dirs.append(self.comfyui / "custom_nodes")
        return tuple(dict.fromkeys(dirs))

    def declared_requirements(self, node: str) -> tuple[str, ...]:
        """The extra requirement files `[custom-nodes.<node>] requirements` lists (names compare ignoring case)."""
        for name, files in self.node_requirements.items():
            if name.lower() == node.lower():
                return files
        return ()

    def validate(self) -> Config:
        """What needs `packaging` to check, checked where it is used (a lock), not on every load: a
        no-op `lock`/`sync` finds `requires-python` equal to the one recorded with the lock and stops."""
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            SpecifierSet(self.requires_python)
        except InvalidSpecifier:
            raise ConfigError(self.source or CONFIG_NAME,
                              f"`lock.requires-python` is not a version specifier: {self.requires_python!r}") from None
        return self

    def with_overrides(self, **changes: Any) -> Config:
        """Flags win over the file; None means "not given"."""
        given = {k: v for k, v in changes.items() if v not in (None, ())}
        return self._replace(**given)


def relative_display(path: Path, root: Path) -> str:
    """`path` relative to `root`, posix, `..` where it lies outside; absolute only where no relative
    path exists (another Windows drive)."""
    absolute = os.path.abspath(path)
    try:
        return Path(os.path.relpath(absolute, os.path.abspath(root))).as_posix()
    except ValueError:
        return Path(absolute).as_posix()


def find_config(start: Path) -> Path | None:
    """The nearest `envbuild.toml` in `start` or a folder above it, as uv finds a pyproject.toml:
    any subfolder of a deployment (its ComfyUI checkout, a node) works as the place to run from."""
    folder = start.resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / CONFIG_NAME
        if path.is_file():
            return path
    return None


def load_config(start_dir: Path) -> Config:
    """Read the `envbuild.toml` found from `start_dir` up; with none, every setting keeps its default
    and the project is `start_dir` itself."""
    path = find_config(start_dir)
    if path is None:
        project_dir = start_dir.resolve()
        return Config(
            project_dir=project_dir, source=None, lock_dir=project_dir / "locks",
            profiles_dirs=_default_profiles_dirs(project_dir),
        )
    return _read_config(path)


def _read_config(path: Path) -> Config:
    project_dir = path.parent
    data = load_toml(path)
    check_keys(data, _SECTIONS, "", path)
    for section in data:
        expect(data[section], dict, section, path)
        if section not in _TABLE_OF_TABLES:
            check_keys(data[section], _KEYS[section], f"{section}.", path)
    comfy, manager = data.get("comfyui", {}), data.get("manager", {})
    nodes, lock = data.get("nodes", {}), data.get("lock", {})

    def rel(value: Any, key: str) -> Path:
        """As configured, made absolute: not resolved, so a symlinked folder keeps its name (`display`)."""
        return Path(os.path.abspath(project_dir / str(expect(value, str, key, path))))

    requires_python = expect(lock.get("requires-python", DEFAULT_REQUIRES_PYTHON), str, "lock.requires-python", path)
    profiles_dir = lock.get("profiles-dir")
    comfyui_git = _git_source(comfy, "comfyui", path)
    manager_git = _git_source(manager, "manager", path)
    if manager_git is not None:
        for key in ("ref", "git"):
            refuse_pip_manager_ref(manager_git.url if key == "git" else manager_git.ref,
                                   _at(path, "manager", key), key)
    comfyui_path = rel(comfy["path"], "comfyui.path") if "path" in comfy else None
    if comfyui_path is None and comfyui_git is not None:
        comfyui_path = project_dir / "ComfyUI"  # where `envbuild fetch` clones it
    base_directory = rel(comfy["base-directory"], "comfyui.base-directory") if "base-directory" in comfy else None
    return Config(
        project_dir=project_dir,
        source=path,
        comfyui=comfyui_path,
        base_directory=base_directory,
        manager=(rel(manager["path"], "manager.path") if "path" in manager
                 else _manager_clone_path(manager_git, base_directory or comfyui_path, path)),
        manager_enabled=expect(manager.get("enabled", True), bool, "manager.enabled", path),
        manager_pip=expect(manager.get("pip", True), bool, "manager.pip", path),
        manager_ini=_manager_ini(manager, path),
        node_dirs=tuple(rel(d, "nodes.dirs") for d in expect_str_list(nodes.get("dirs", []), "nodes.dirs", path)),
        exclude_nodes=tuple(expect_str_list(nodes.get("exclude", []), "nodes.exclude", path)),
        lock_dir=rel(lock.get("dir", "locks"), "lock.dir"),
        requires_python=requires_python,
        torch_source=_torch_source(lock.get("torch-source"), path),
        profiles=tuple(expect_str_list(lock.get("profiles", []), "lock.profiles", path)),
        extra_requirements=tuple(
            rel(p, "lock.extra-requirements")
            for p in expect_str_list(lock.get("extra-requirements", []), "lock.extra-requirements", path)
        ),
        profiles_dirs=(
            (_profiles_dir(rel(profiles_dir, "lock.profiles-dir"), path),) if profiles_dir
            else _default_profiles_dirs(project_dir)
        ),
        mirrors=_mirrors_table(data.get("mirrors", {}), path),
        listen=expect(comfy["listen"], str, "comfyui.listen", path) if "listen" in comfy else None,
        port=_port(comfy.get("port"), path),
        comfyui_git=comfyui_git,
        manager_git=manager_git,
        node_pins=_node_pins(data.get("custom-nodes"), path),
        node_requirements=_node_requirements(data.get("custom-nodes"), path),
        node_registry=_registry(nodes.get("registry", DEFAULT_REGISTRY), path),
        keep_generations=_keep_generations(data.get("generations", {}), path),
        variant_groups=_variant_groups(lock.get("variant-groups", {}), path),
        exclude_packages=_exclude(lock.get("exclude", []), path),
        exclude_newer=parse_cooldown(lock["exclude-newer"], path) if "exclude-newer" in lock else DEFAULT_COOLDOWN,
        exclude_newer_set="exclude-newer" in lock,
        allow_build=_allow_build(lock.get("allow-build", []), path),
        models=_models(data.get("models"), path),
    )


def _allow_build(value: Any, path: Path) -> tuple[str, ...]:
    """`[lock] allow-build`: the packages whose source build (their own code: setup.py, a build backend) may
    run while locking and syncing; every other package must come as a wheel."""
    import re

    from envbuild.torch.profile import canonical_name

    names = expect_str_list(value, "lock.allow-build", path)
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,100}[A-Za-z0-9])?", name):
            raise ConfigError(path, f"`lock.allow-build`: {quoted(name)} is not a package name",
                              hint='name distributions as on PyPI, e.g. allow-build = ["insightface"]')
    return tuple(sorted({canonical_name(n) for n in names}))


def _models(table: Any, path: Path) -> ModelSettings | None:
    """Read only when the file pins models: a deployment without them does not import their module."""
    if table is None:
        return None
    from envbuild.settings.models import read_models

    return read_models(table, path)


def _exclude(value: Any, path: Path) -> tuple[str, ...]:
    """`[lock] exclude`: torch-family members a deployment does without (only those that may be left out)."""
    from envbuild.torch.family import EXCLUDABLE
    from envbuild.torch.profile import canonical_name

    names = tuple(canonical_name(n) for n in expect_str_list(value, "lock.exclude", path))
    for name in names:
        if name not in EXCLUDABLE:
            raise ConfigError(path, f"`lock.exclude`: {name!r} cannot be left out of a lock",
                              hint=f"`exclude` names only {', '.join(sorted(EXCLUDABLE))} (torch-family members "
                                   "ComfyUI runs without); a node's own package is left out with [nodes] exclude")
    return names


def _keep_generations(table: Mapping[str, Any], path: Path) -> int:
    keep = expect(table.get("keep", 3), int, "generations.keep", path)
    if keep < 1:
        raise ConfigError(path, f"`generations.keep` must be at least 1, not {keep}",
                          hint="the current generation and the previous one are always kept besides")
    return int(keep)


def _torch_source(value: Any, path: Path) -> str | None:
    if value is None:
        return None
    source = expect(value, str, "lock.torch-source", path)
    if source not in ("pytorch-index", "pypi"):
        raise ConfigError(path, f"`lock.torch-source = \"{source}\"` is not one of: pytorch-index, pypi")
    return str(source)


def _variant_groups(value: Any, path: Path) -> Mapping[str, tuple[str, ...]]:
    """`[lock] variant-groups`: module name -> the distributions that install it, the one to keep first."""
    table = expect(value, dict, "lock.variant-groups", path)
    groups: dict[str, tuple[str, ...]] = {}
    for module, members in sorted(table.items()):
        key = f"lock.variant-groups.{module}"
        names = expect_str_list(members, key, path)
        bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", n)]
        if bad:
            raise ConfigError(path, f"`{key}`: {bad[0]!r} is not a distribution name")
        if len({n.lower().replace("_", "-").replace(".", "-") for n in names}) < 2:
            raise ConfigError(path, f"`{key}` needs at least two distributions (the one to keep first)",
                              hint='e.g. cv2 = ["opencv-python", "opencv-python-headless"]')
        groups[str(module)] = tuple(names)
    return MappingProxyType(groups)


def _mirrors_table(table: Mapping[str, Any], path: Path) -> dict[str, Any]:
    from envbuild.settings.mirrors import validate_team_table

    return validate_team_table(table, path)


def _node_pins(table: Any, path: Path) -> tuple[NodePin, ...]:
    """Read only when the file pins nodes: a deployment without pins does not import their module."""
    if table is None:
        return ()
    from envbuild.settings.pins import read_pins

    return read_pins(table, path)


def _node_requirements(table: Any, path: Path) -> Mapping[str, tuple[str, ...]]:
    if table is None:
        return NO_SETTINGS
    from envbuild.settings.pins import read_node_requirements

    return MappingProxyType(read_node_requirements(table, path))


def _registry(value: Any, path: Path) -> str:
    url = expect(value, str, "nodes.registry", path)
    if not url.startswith(("https://", "http://")):
        raise ConfigError(path, f"`nodes.registry` must be an http(s) URL, not {url!r}",
                          hint=f"the Comfy Registry is {DEFAULT_REGISTRY}")
    return str(url).rstrip("/")


def _port(value: Any, path: Path) -> int | None:
    if value is None:
        return None
    port = expect(value, int, "comfyui.port", path)
    if not 0 < port < 65536:
        raise ConfigError(path, f"`comfyui.port` must be between 1 and 65535, not {port}")
    return int(port)


def _git_source(table: Mapping[str, Any], section: str, path: Path) -> GitSource | None:
    """`git` and `ref` come together: envbuild pins a checkout, it never follows a moving default branch."""
    url = expect(table["git"], str, f"{section}.git", path) if "git" in table else None
    ref = expect(table["ref"], str, f"{section}.ref", path) if "ref" in table else None
    if url is None and ref is None:
        return None
    if not url or not ref:
        missing = f"{section}.ref" if url else f"{section}.git"
        raise ConfigError(path, f"`{section}.git` and `{section}.ref` go together: `{missing}` is missing",
                          hint="ref is a tag, a branch or a commit the checkout is pinned to")
    problem = ref_problem(ref)
    if problem:
        raise ConfigError(path, f"`{section}.ref` {quoted(ref)} {problem}",
                          hint="ref is a tag, a branch or a commit the checkout is pinned to")
    problem = git_url_problem(url)
    if problem:
        raise ConfigError(path, f"`{section}.git` {problem}",
                          hint=CREDENTIALS_HINT if "credentials" in problem else "a git URL or a local path")
    return GitSource(url, ref)


def _manager_ini(table: Mapping[str, Any], path: Path) -> Mapping[str, str]:
    """`[manager]` security settings as config.ini values, each checked here (envbuild.toml:line on a bad one)."""
    values: dict[str, str] = {}
    for key, choices in MANAGER_CHOICES.items():
        if key in table:
            value = table[key]
            if not isinstance(value, str) or value not in choices:
                where = _at(path, "manager", key)
                hint = " (spelled `normal-`, as the Manager reads it)" if value == "normal-minus" else ""
                raise ConfigError(where, f"`manager.{key} = {value!r}` is not one of: {', '.join(choices)}{hint}",
                                  hint=f'e.g. {key} = "{choices[-1] if key == "network_mode" else "normal"}"')
            values[key] = value
    for key in MANAGER_FLAGS:
        if key in table:
            if not isinstance(table[key], bool):
                where = _at(path, "manager", key)
                raise ConfigError(where, f"`manager.{key}` must be true or false, not {table[key]!r}")
            values[key] = "True" if table[key] else "False"  # the Manager reads `value.lower() == 'true'`
    return MappingProxyType(values)


# A v4 release of ComfyUI-Manager is the pip package `comfyui_manager` (ComfyUI's manager_requirements.txt),
# not a custom node: its tags (4.0.3 ... 4.2.2, 4.1b1) and branches (manager-v4, draft-v4) have no
# top-level __init__.py, so ComfyUI cannot load a clone of them from custom_nodes.
_V4_TAG = re.compile(r"v?(?P<major>\d{1,2})(\.[0-9A-Za-z]+)*", re.IGNORECASE)
_V4_BRANCH = re.compile(r"(^|[-_/])v4([-_./]|$)", re.IGNORECASE)
_PIP_SOURCE = re.compile(r"(pypi\.org|pythonhosted\.org)|\.whl$|\.tar\.gz$", re.IGNORECASE)


def refuse_pip_manager_ref(value: str, where: str, key: str = "ref") -> None:
    """`[manager] ref`/`git` (or `update --manager-ref`) naming what the pip route owns: refused before any
    git or uv work (a clone of it would be fetched, locked and synced, then fail to load)."""
    if key == "git":
        owned = bool(_PIP_SOURCE.search(value.strip()))
    else:
        tag = _V4_TAG.fullmatch(value.strip())
        owned = bool(tag and int(tag.group("major")) >= 4) or bool(_V4_BRANCH.search(value))
    if owned:
        raise ConfigError(where, f"`manager.{key} = {value!r}` names ComfyUI-Manager v4, which is the pip package "
                                 "`comfyui_manager`, not a custom node envbuild can clone into custom_nodes",
                          hint="the v4 Manager comes from ComfyUI's own manager_requirements.txt (ComfyUI v0.4.0 and "
                               "later): drop [manager] git and ref, move [comfyui] to such a ComfyUI, and `envbuild "
                               "run` passes --enable-manager; for the legacy Manager keep a 3.x ref (e.g. \"3.41\")")


_TABLE_HEADER = re.compile(r"\s*\[\s*(?P<name>[A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")


def _at(path: Path, section: str, key: str) -> str:
    """`envbuild.toml:LINE` for a message (the file alone when the key is written some other way)."""
    line = _line_of(path, section, key)
    return f"{path}:{line}" if line else str(path)


def _line_of(path: Path, section: str, key: str) -> int | None:
    """The line of `key` in `[section]` (or `section.key` at the top), for a message; None: not found."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    current = ""
    own = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
    dotted = re.compile(rf"\s*{re.escape(section)}\s*\.\s*{re.escape(key)}\s*=")
    for number, line in enumerate(lines, start=1):
        header = _TABLE_HEADER.match(line)
        if header:
            current = header.group("name")
        elif (current == section and own.match(line)) or (current == "" and dotted.match(line)):
            return number
    return None


def _manager_clone_path(source: GitSource | None, base: Path | None, path: Path) -> Path | None:
    """A Manager fetched by git lands where ComfyUI looks for it: `<custom_nodes>/comfyui-manager`."""
    if source is None:
        return None
    if base is None:
        raise ConfigError(path, "`manager.git` needs `manager.path` (or `comfyui.path`/`comfyui.base-directory`)",
                          hint="the Manager is cloned into <custom_nodes>/comfyui-manager")
    return base / "custom_nodes" / "comfyui-manager"


def _profiles_dir(folder: Path, path: Path) -> Path:
    """A profiles-dir that is not there would silently leave only the built-in profiles: refuse it."""
    if not folder.is_dir():
        raise ConfigError(path, f"`lock.profiles-dir` {folder} is not a folder",
                          hint="create it (with your profile .toml files), or remove the key to use the built-in "
                               "profiles")
    return folder


def _default_profiles_dirs(project_dir: Path) -> tuple[Path, ...]:
    """A deployment's own `profiles/` folder adds to (or replaces) the built-in profiles."""
    local = project_dir / "profiles"
    return (local,) if local.is_dir() else ()
