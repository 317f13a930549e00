"""The layout of a ComfyUI deployment: which custom_nodes folders exist, where the Manager is and which
route it takes (the pip package ComfyUI pins, or the legacy clone), read from files alone. Every command
that needs "where is the Manager" or "which folders hold nodes" asks here."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from envbuild.core.errors import ConfigError, RequirementFileError
from envbuild.settings.config import Config

MANAGER_DIR_NAMES = ("comfyui-manager",)  # matched case-insensitively
MANAGER_REQUIREMENTS = "manager_requirements.txt"  # in the ComfyUI checkout (v0.4.0+, core PR #7555)
MANAGER_SOURCE = "ComfyUI-Manager"
PIP_ROUTE, CLONE_ROUTE, NO_ROUTE = "pip", "clone", "none"
MANAGER_PACKAGE = "comfyui-manager"  # the pip Manager's canonical name (imported as comfyui_manager)
DISABLED_SUFFIX = ".disabled"


@dataclass(frozen=True)
class ManagerRoute:
    """Where this deployment's ComfyUI-Manager comes from; `envbuild run` passes --enable-manager for PIP_ROUTE.

    - PIP_ROUTE: the pip package `comfyui_manager` that ComfyUI (v0.4.0 and later) pins in its own
      manager_requirements.txt; core imports it only with `main.py --enable-manager`.
    - CLONE_ROUTE: the legacy Manager cloned into custom_nodes, loaded like any custom node.
    - NO_ROUTE: neither (`[manager] enabled = false`, or nothing found).
    """

    kind: str
    path: Path | None = None  # PIP_ROUTE: manager_requirements.txt; CLONE_ROUTE: the Manager's folder
    blocked: tuple[Path, ...] = ()  # PIP_ROUTE: clones in custom_nodes that core skips ("Blocked by policy")
    why: str = ""  # NO_ROUTE: why there is none

    @property
    def enable_flag(self) -> bool:
        """`--enable-manager` belongs on ComfyUI's command line (never for the legacy clone)."""
        return self.kind == PIP_ROUTE


def manager_route(config: Config) -> ManagerRoute:
    """One rule for lock, run, check, image, init, status and doctor: the pip route wins when ComfyUI's
    checkout has manager_requirements.txt (and `[manager] pip` is not false); then the legacy clone."""
    if not config.manager_enabled:
        return ManagerRoute(NO_ROUTE, why="[manager] enabled = false")
    wanted = config.comfyui / MANAGER_REQUIREMENTS if config.comfyui is not None else None
    if wanted is not None and uses_pip_manager(config):
        if not wanted.exists():  # a link to nothing is not "no pip Manager": the lock would miss it
            raise RequirementFileError(config.display(wanted), None, "is a symbolic link to nothing, so ComfyUI's "
                                       "Manager requirements cannot be read",
                                       hint="restore it (`git checkout -- manager_requirements.txt` in the "
                                            "checkout), or set [manager] pip = false")
        return ManagerRoute(PIP_ROUTE, wanted, tuple(_blocked_clones(config)))
    manager = find_manager(config)
    if manager is not None:
        return ManagerRoute(CLONE_ROUTE, manager)
    if not config.manager_pip and wanted is not None and wanted.exists():
        return ManagerRoute(NO_ROUTE, why="[manager] pip = false, and no ComfyUI-Manager clone in custom_nodes")
    return ManagerRoute(NO_ROUTE, why="no manager_requirements.txt in the ComfyUI checkout and no ComfyUI-Manager "
                                      "clone in custom_nodes")


def uses_pip_manager(config: Config) -> bool:
    """The pip route, decided from the files alone (never raises): what `manager_route` returns first."""
    if not (config.manager_enabled and config.manager_pip and config.comfyui is not None):
        return False
    wanted = config.comfyui / MANAGER_REQUIREMENTS
    return wanted.exists() or wanted.is_symlink()


def blocked_by_core(name: str) -> bool:
    """Core's rule with --enable-manager (comfyui_manager.should_be_disabled, Manager 4.3 __init__.py): any
    custom_nodes entry whose lower-cased name contains `comfyui-manager` is skipped, prestartup and import."""
    return "comfyui-manager" in name.lower()


def _blocked_clones(config: Config) -> list[Path]:
    found = [child for folder in _existing_node_dirs(config) for child in sorted(folder.iterdir())
             if child.is_dir() and blocked_by_core(child.name) and not child.name.endswith(DISABLED_SUFFIX)]
    if config.manager is not None and config.manager.is_dir() and config.manager not in found:
        found.append(config.manager)
    return found


def _existing_node_dirs(config: Config) -> list[Path]:
    """The custom_nodes folders that exist; one that is a file (or a broken link) is an error, not "no nodes"."""
    found = []
    for folder in config.custom_node_dirs():
        if folder.is_dir():
            found.append(folder)
        elif folder.exists() or folder.is_symlink():
            what = "a file" if folder.exists() else "a symbolic link to nothing (broken or looping)"
            raise ConfigError(config.source, f"custom nodes folder {config.display(folder)} is {what}, "
                              "not a folder: its nodes, the Manager and the pip it needs would be left out",
                              hint="make it a folder of custom nodes (or remove it), or set [nodes] dirs")
    return found


def find_manager(config: Config) -> Path | None:
    if not config.manager_enabled:
        return None
    if config.manager is not None:
        if not (config.manager / "requirements.txt").is_file():
            raise ConfigError(config.source, f"ComfyUI-Manager at {config.manager} has no requirements.txt",
                              hint="check [manager] path, or set [manager] enabled = false")
        return _loadable_clone(config, config.manager)
    for folder in _existing_node_dirs(config):
        for child in sorted(folder.iterdir()):
            if child.name.lower() in MANAGER_DIR_NAMES and (child / "requirements.txt").is_file():
                return _loadable_clone(config, child)
    return None


def _loadable_clone(config: Config, clone: Path) -> Path:
    """A checkout of Manager v4 (a ref no name check caught, a commit say) is the pip package's source: it has
    no top-level __init__.py, so ComfyUI cannot load it as a custom node. Refused before uv, not after a sync."""
    if not (clone / "__init__.py").exists() and (clone / "comfyui_manager" / "__init__.py").is_file():
        raise ConfigError(config.source or config.display(clone),
                          f"{config.display(clone)} is ComfyUI-Manager v4's source (the pip package "
                          "`comfyui_manager`, no top-level __init__.py): ComfyUI cannot load it from custom_nodes",
                          hint="the v4 Manager comes from ComfyUI's own manager_requirements.txt (ComfyUI v0.4.0 and "
                               "later): drop [manager] git/ref/path and remove the folder, or check out a 3.x ref")
    return clone


# What an entry of a custom_nodes folder is, as ComfyUI's own loader (nodes.py `init_external_custom_nodes`)
# sees it: hidden and `__pycache__`-like names are not nodes, `.disabled` ones are the Manager's disabled
# nodes, a folder or a `.py` file is a node. The one rule every command asks (inputs, image, node list, init).
NODE, DISABLED, HIDDEN, BROKEN_LINK, NOT_A_NODE = "node", "disabled", "hidden", "broken-link", "not-a-node"


class NodeEntry(NamedTuple):
    path: Path
    kind: str  # NODE | DISABLED | HIDDEN | BROKEN_LINK | NOT_A_NODE

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_folder_node(self) -> bool:
        return self.kind == NODE and self.path.is_dir()

    @property
    def is_manager_clone(self) -> bool:
        """Named as a ComfyUI-Manager clone is (the folder name decides, as ComfyUI's and the Manager's do)."""
        return self.name.lower() in MANAGER_DIR_NAMES


def classify(entry: Path) -> str:
    name = entry.name
    if name.startswith((".", "__")):
        return HIDDEN
    if entry.is_symlink() and not entry.exists():
        return BROKEN_LINK
    if name.endswith(DISABLED_SUFFIX):
        return DISABLED
    if entry.is_dir() or (entry.is_file() and name.endswith(".py")):
        return NODE
    return NOT_A_NODE


def node_entries(folder: Path) -> Iterator[NodeEntry]:
    """Every entry of one custom_nodes folder, sorted by name, with what it is (nothing when it is no folder)."""
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        yield NodeEntry(entry, classify(entry))

