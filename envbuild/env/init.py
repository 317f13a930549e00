"""`envbuild init`: a commented envbuild.toml for the ComfyUI checkout found here.

A newcomer has a ComfyUI folder and no idea which keys exist: init finds the checkout, its
custom-node folder, the Manager and the nodes, asks GPU detection for the profile, and writes a
file that says what each setting does. It never overwrites an existing envbuild.toml.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from envbuild.comfy.layout import (
    CLONE_ROUTE,
    DISABLED_SUFFIX,
    MANAGER_DIR_NAMES,
    NO_ROUTE,
    PIP_ROUTE,
    ManagerRoute,
    blocked_by_core,
    manager_route,
)
from envbuild.core.errors import UsageError
from envbuild.core.fsio import atomic_write
from envbuild.core.text import quoted
from envbuild.settings.config import CONFIG_NAME
from envbuild.settings.pins import valid_name
from envbuild.torch.catalogue import ProfileCatalogue
from envbuild.torch.gpu.explain import recommendation_reason


class Found(NamedTuple):
    """What init found, and why it chose the profile."""

    path: Path  # the envbuild.toml written
    comfyui: Path
    base_directory: Path | None
    manager: Path | None  # the legacy clone, when that is the Manager this deployment runs
    nodes: tuple[str, ...]
    profile: str
    why: str
    manager_route: str = ""  # which Manager, and from where (comfy.manager.describe_route)
    manager_warnings: tuple[str, ...] = ()


def looks_like_comfyui(folder: Path) -> bool:
    return (folder / "main.py").is_file() and (folder / "requirements.txt").is_file() and (
        (folder / "comfy").is_dir() or (folder / "nodes.py").is_file())


def find_checkout(start: Path) -> Path:
    """`start` itself, else a folder below it that is a ComfyUI checkout (ComfyUI/ first)."""
    if looks_like_comfyui(start):
        return start
    children = sorted((p for p in start.iterdir() if p.is_dir()), key=lambda p: (p.name.lower() != "comfyui", p.name))
    for child in children:
        if looks_like_comfyui(child):
            return child
    raise UsageError(f"no ComfyUI checkout in {start} or a folder directly below it (a folder with main.py, "
                     "requirements.txt and comfy/)",
                     hint="pass --comfyui PATH, or clone it first: git clone https://github.com/Comfy-Org/ComfyUI")


def init_deployment(start: Path, env: Mapping[str, str], catalogue: ProfileCatalogue, *,
                    comfyui: Path | None = None, base_directory: Path | None = None) -> Found:
    """Write envbuild.toml beside the checkout (never inside it: locks/ must not land in ComfyUI's tree)."""
    checkout = (comfyui or find_checkout(start)).resolve()
    if not looks_like_comfyui(checkout):
        raise UsageError(f"{checkout} is not a ComfyUI checkout (no main.py and requirements.txt)")
    root = start.resolve() if start.resolve() != checkout else checkout.parent
    target = root / CONFIG_NAME
    if target.exists():
        raise UsageError(f"{target} exists already; envbuild init never overwrites it",
                         hint="edit it, or remove it and run `envbuild init` again")
    base = base_directory.resolve() if base_directory else _data_folder(root, checkout)
    node_dir = (base or checkout) / "custom_nodes"
    nodes = tuple(sorted(p.name for p in node_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))
                         )) if node_dir.is_dir() else ()
    route, said, warnings = _manager(root, checkout, base)
    manager = route.path if route.kind == CLONE_ROUTE else None
    profile, why = _recommended(catalogue, env)
    text = render_config(root, checkout, base, manager, nodes, profile, why, _git_origin(checkout, env),
                         route=route, route_line=said)
    atomic_write(target, text)
    return Found(target, checkout, base, manager, nodes, profile, why, said, tuple(warnings))


def _manager(root: Path, checkout: Path, base: Path | None) -> tuple[ManagerRoute, str, list[str]]:
    """The Manager route the new envbuild.toml gives (its defaults), in the words `manager status` uses."""
    from envbuild.comfy.manager import describe_route, route_warnings
    from envbuild.core.errors import EnvbuildError
    from envbuild.settings.config import Config

    probe = Config(project_dir=root, source=None, comfyui=checkout, base_directory=base)
    try:
        route = manager_route(probe)
        return route, describe_route(probe, route), route_warnings(probe, route)
    except EnvbuildError as exc:  # init writes the file all the same; `envbuild lock` will name the problem
        return ManagerRoute(NO_ROUTE, why=str(exc).splitlines()[0]), f"unreadable: {exc}".splitlines()[0], []


def _data_folder(root: Path, checkout: Path) -> Path | None:
    """The seed layout keeps models and nodes outside the checkout: `<root>/data/custom_nodes`."""
    for candidate in (root / "data", checkout.parent / "data"):
        if (candidate / "custom_nodes").is_dir():
            return candidate
    return None


def _recommended(catalogue: ProfileCatalogue, env: Mapping[str, str]) -> tuple[str, str]:
    from envbuild.torch.fitting import candidates, choose

    recommendation = choose(candidates(catalogue), environ=env).recommendation
    if recommendation.profile is None:
        return "cpu", (f"detection found no profile that fits ({recommendation_reason(recommendation)}); "
                       "cpu until you choose")
    return recommendation.profile, recommendation_reason(recommendation)


def _git_origin(checkout: Path, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(origin URL, HEAD commit) when the checkout is a git clone: offered as a pin, commented out."""
    if not (checkout / ".git").exists():
        return None
    from envbuild.core import runner
    from envbuild.core.errors import CommandFailed

    try:
        url = runner.run(["git", "-C", str(checkout), "remote", "get-url", "origin"], env=env).stdout.strip()
        head = runner.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], env=env).stdout.strip()
    except (CommandFailed, OSError):
        return None
    return (url, head) if url and head else None


def _manager_lines(manager: Path | None, route: ManagerRoute | None, route_line: str,
                   rel: Callable[[Path], str]) -> list[str]:
    lines = ["[manager]"]
    if route is not None and route.kind == PIP_ROUTE:
        lines += [f"# found: {route_line}:",
                  "# the Manager as a pip package, locked with ComfyUI; `envbuild manager setup` writes its config.ini",
                  "# pip = false                      # use a legacy ComfyUI-Manager clone in custom_nodes instead"]
        lines += [f"# {quoted(rel(clone))}: a Manager clone ComfyUI blocks with --enable-manager (not locked; "
                  "remove it)" for clone in route.blocked]
        lines += ["# Manager 4 installs nodes on a server (listen other than 127.0.0.1: a container, a LAN) only with:",
                  '# network_mode = "personal_cloud"   # public | private | offline | personal_cloud',
                  '# security_level = "normal"         # strong | normal | normal- | weak',
                  "# allow_git_url_install = false     # installs from a git URL (and personal_cloud or loopback)",
                  "# allow_pip_install = false         # installs of a pip package by name",
                  "# allow_flagged_nodepack_install = false  # Manager 4.3+: flagged registry versions"]
    elif manager is not None:
        lines.append(f"# found: {quoted(rel(manager))} (its requirements and pip are locked; `envbuild manager setup` "
                     "switches it to uv)")
    else:
        lines.append("# no ComfyUI-Manager: ComfyUI v0.4.0 and later bring it (manager_requirements.txt); "
                     "or, the legacy one pinned:")
        lines += ['# git = "https://github.com/Comfy-Org/ComfyUI-Manager"', '# ref = "3.41"']
    lines.append("# enabled = false                  # leave the Manager out of the lock")
    return lines


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_config(root: Path, checkout: Path, base: Path | None, manager: Path | None, nodes: tuple[str, ...],
                  profile: str, why: str, origin: tuple[str, str] | None, *, route: ManagerRoute | None = None,
                  route_line: str = "") -> str:
    def rel(path: Path) -> str:
        return Path(os.path.relpath(path, root)).as_posix()

    lines = [
        "# envbuild.toml: the ComfyUI deployment envbuild locks (`envbuild lock`), installs (`envbuild sync`) and",
        "# starts (`envbuild run`). Paths are relative to this file. Written by `envbuild init`; edit freely.",
        "",
        "[comfyui]",
        f"path = {_toml(rel(checkout))}                 # the checkout: requirements.txt and main.py",
    ]
    if origin is not None:
        lines += [f"# git = {_toml(origin[0])}      # pin it: `envbuild fetch` clones/moves it to ref",
                  f"# ref = {_toml(origin[1])}"]
    if base is not None:
        lines.append(f"base-directory = {_toml(rel(base))}   # ComfyUI's --base-directory (models, custom_nodes, user)")
    else:
        lines.append('# base-directory = "data"          # ComfyUI\'s --base-directory, if you keep models and nodes '
                     "outside the checkout")
    lines += ['# listen = "127.0.0.1"              # `envbuild run`: ComfyUI\'s --listen', "# port = 8188", ""]
    lines += _manager_lines(manager, route, route_line, rel)
    lines += ["", "[nodes]"]
    pip = route is not None and route.kind == PIP_ROUTE
    listed = [n for n in nodes if n.lower() not in MANAGER_DIR_NAMES and not (pip and blocked_by_core(n))]
    if listed:
        lines.append("# custom nodes found (each node's requirements.txt is locked; a folder ending in "
                     f"{DISABLED_SUFFIX} is skipped):")
        # A folder name is the user's file system's, not envbuild's: one with a newline would end the comment
        # and write TOML; shown escaped, and said when it cannot be a node's name.
        lines += [f"#   {name}" if valid_name(name) else f"#   {quoted(name)} (not a usable node folder name)"
                  for name in listed]
    lines += ["exclude = []                       # node folder names to leave out of the lock", "", "[lock]",
              f"# {why}",
              f"profiles = [{_toml(profile)}]              # `envbuild profiles` lists them; the first is the default",
              'requires-python = ">=3.10"',
              "# torch-source = \"pypi\"            # where download.pytorch.org is blocked: CUDA torch from PyPI",
              '# extra-requirements = ["requirements-extra.txt"]',
              "",
              "# [mirrors]                         # behind a firewall: see the README, \"Behind a firewall\"",
              '# pytorch = "https://mirror.sjtu.edu.cn/pytorch-wheels"',
              "# pypi = \"https://pypi.tuna.tsinghua.edu.cn/simple\"", ""]
    return "\n".join(lines)
