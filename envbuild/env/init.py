"""`envbuild init`: a commented envbuild.toml for the ComfyUI checkout found here.

A newcomer has a ComfyUI folder and no idea which keys exist: init finds the checkout, its
custom-node folder, the Manager and the nodes, asks GPU detection for the profile, and writes a
file that says what each setting does. It never overwrites an existing envbuild.toml.

What it writes must rebuild on another machine: the checkout (and a legacy Manager clone) pinned by
its `origin` URL and the tag at HEAD (else the commit), read from the clone's files; a
`requires-python` the profile's torch has wheels for; and a .gitignore for what envbuild makes in
the folder (the venv, its generations, fetched checkouts, staging, exports), appended to, never
rewritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from envbuild.comfy.layout import (
    CLONE_ROUTE,
    DISABLED,
    DISABLED_SUFFIX,
    MANAGER_DIR_NAMES,
    NO_ROUTE,
    PIP_ROUTE,
    ManagerRoute,
    blocked_by_core,
    manager_route,
    node_entries,
)
from envbuild.core.errors import UsageError
from envbuild.core.fsio import atomic_write
from envbuild.core.text import quoted
from envbuild.settings.checkouts import Pin, checkout_pin
from envbuild.settings.config import CONFIG_NAME, DEFAULT_REQUIRES_PYTHON
from envbuild.settings.pins import valid_name
from envbuild.torch.catalogue import ProfileCatalogue
from envbuild.torch.gpu.explain import recommendation_reason
from envbuild.torch.profile import TorchProfile


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
    notes: tuple[str, ...] = ()  # the pins, requires-python and .gitignore, said
    warnings: tuple[str, ...] = ()  # what another machine cannot rebuild from this file


class InitOptions(NamedTuple):
    """The flags of `envbuild init`: what the new file says beyond what init finds."""

    profile: str | None = None  # a name, or None / "auto": detection's choice
    torch_source: str | None = None  # "pypi": the profile's -pypi variant, and [lock] torch-source = "pypi"
    mirror: str | None = None  # [mirrors] pytorch
    pypi_mirror: str | None = None  # [mirrors] pypi


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
                    comfyui: Path | None = None, base_directory: Path | None = None,
                    options: InitOptions | None = None) -> Found:
    """Write envbuild.toml beside the checkout (never inside it: locks/ must not land in ComfyUI's tree)."""
    options = options or InitOptions()
    mirrors = _mirrors(options)
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
    nodes = tuple(entry.name for entry in node_entries(node_dir) if entry.is_folder_node or entry.kind == DISABLED)
    route, said, warnings = _manager(root, checkout, base)
    manager = route.path if route.kind == CLONE_ROUTE else None
    chosen, why = _profile(catalogue, env, options)
    python, python_why = _requires_python(chosen)
    comfy_pin, comfy_why = checkout_pin(checkout, "ComfyUI")
    manager_pin, manager_why = checkout_pin(manager, "the ComfyUI-Manager clone") if manager else (None, "")
    text = render_config(root, checkout, base, manager, nodes, chosen.name, why, comfy_pin, route=route,
                         route_line=said, manager_pin=manager_pin, unpinned=(comfy_why, manager_why),
                         requires_python=(python, python_why),
                         torch_source=options.torch_source if chosen.torch_source == "pypi" else None,
                         mirrors=mirrors)
    atomic_write(target, text)
    notes, cautions = [], []
    for what, pin, why_not in (("ComfyUI", comfy_pin, comfy_why), ("ComfyUI-Manager", manager_pin, manager_why)):
        if pin is not None:
            notes.append(f"{what} pinned: git {pin.url}, ref {pin.ref} ({pin.said})")
            if pin.local:
                cautions.append(f"{what}'s origin {pin.url} is a path on this machine: another machine cannot fetch "
                                f"it; set its `git` in {CONFIG_NAME} to the URL it was cloned from")
        elif why_not:
            cautions.append(f"{what} not pinned ({why_not}): another machine cannot fetch it; add `git` and `ref` "
                            f"to {CONFIG_NAME} by hand")
    notes.append(f"requires-python {python}" + (f" ({python_why})" if python_why else ""))
    notes.append(write_gitignore(root, _ignored(root, checkout, manager, comfy_pin, manager_pin, chosen.name)))
    return Found(target, checkout, base, manager, nodes, chosen.name, why, said, tuple(warnings), tuple(notes),
                 tuple(cautions))


def _profile(catalogue: ProfileCatalogue, env: Mapping[str, str], options: InitOptions) -> tuple[TorchProfile, str]:
    if options.profile and options.profile.lower() != "auto":
        chosen, why = catalogue.get(options.profile), "chosen with --profile"
    else:
        name, why = _recommended(catalogue, env, options.torch_source)
        chosen = catalogue.get(name)
    return catalogue.with_source(chosen, options.torch_source), why


def _requires_python(profile: TorchProfile) -> tuple[str, str]:
    """The default, unless the profile's torch has no wheel for its oldest Python (torch 2.15: no cp310)."""
    if profile.requires_python is None:
        return DEFAULT_REQUIRES_PYTHON, ""
    from envbuild.torch.profile_file import python_gap

    gap = python_gap(profile, DEFAULT_REQUIRES_PYTHON)
    if gap is None:
        return DEFAULT_REQUIRES_PYTHON, ""
    return profile.requires_python, (f"{profile.name}'s torch has no wheel for Python {gap} "
                                     f"(its profile says requires-python {profile.requires_python})")


def _mirrors(options: InitOptions) -> dict[str, str]:
    """--mirror/--pypi-mirror, checked as envbuild.toml's [mirrors] would be: http(s), no credentials."""
    import re

    found = {}
    for key, url, flag in (("pytorch", options.mirror, "--mirror"), ("pypi", options.pypi_mirror, "--pypi-mirror")):
        if url is None:
            continue
        if not re.match(r"^https?://[^\s@/]+(/\S*)?$", url):
            raise UsageError(f"{flag} {quoted(url)} is not an http(s) URL without credentials",
                             hint="give the mirror's base URL; credentials go to uv (a .netrc, UV_INDEX_* variables)")
        found[key] = url.rstrip("/")
    return found


def _ignored(root: Path, checkout: Path, manager: Path | None, comfy_pin: Pin | None, manager_pin: Pin | None,
             profile: str) -> list[str]:
    """What envbuild makes inside the deployment folder, as .gitignore patterns anchored at it."""
    from envbuild.env.export import default_filename
    from envbuild.env.generations import GENERATIONS_DIR
    from envbuild.env.node_ops import STAGING

    def inside(path: Path) -> str | None:
        try:
            return path.resolve().relative_to(root).as_posix()
        except ValueError:
            return None

    lines = []
    venv_home = inside(checkout.parent)  # the venv is `.venv` beside the checkout (Deployment.venv)
    if venv_home is not None:
        prefix = "" if venv_home == "." else f"{venv_home}/"
        lines += [f"/{prefix}.venv", f"/{prefix}{GENERATIONS_DIR}/"]
    lines.append(f"/{STAGING}/")
    for pin, folder in ((comfy_pin, checkout), (manager_pin, manager)):
        where = inside(folder) if pin is not None and folder is not None else None
        if where not in (None, "."):
            lines.append(f"/{where}/")  # `envbuild fetch` clones it from the pin
    lines += [f"/{default_filename(profile, 'pylock')}", f"/{default_filename(profile, 'requirements')}"]
    return lines


def write_gitignore(root: Path, wanted: list[str]) -> str:
    """Add the missing patterns to root/.gitignore under a comment (an existing file is appended to,
    never rewritten); what was done, said."""
    ignore = root / ".gitignore"
    try:
        present = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else None
    except (OSError, UnicodeDecodeError) as exc:
        return f".gitignore left alone (unreadable: {exc}); it should ignore: {' '.join(wanted)}"
    have = {line.strip() for line in present or ()}
    missing = [line for line in wanted if line not in have and line.rstrip("/") not in have]
    if not missing:
        return ".gitignore already ignores what envbuild makes here"
    block = ["# envbuild: the venv, its generations, fetched checkouts, staging and exports (envbuild init)",
             *missing]
    if present is None:
        atomic_write(ignore, "\n".join(block) + "\n")
        return f"wrote .gitignore ({len(missing)} patterns)"
    text = ignore.read_text(encoding="utf-8")
    atomic_write(ignore, text + ("" if text.endswith("\n") or not text else "\n") + "\n" + "\n".join(block) + "\n")
    return f"added {len(missing)} patterns to the existing .gitignore: {' '.join(missing)}"


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


def _recommended(catalogue: ProfileCatalogue, env: Mapping[str, str],
                 torch_source: str | None = None) -> tuple[str, str]:
    from envbuild.torch.fitting import candidates, choose

    recommendation = choose(candidates(catalogue, torch_source), environ=env).recommendation
    if recommendation.profile is None:
        return "cpu", (f"detection found no profile that fits ({recommendation_reason(recommendation)}); "
                       "cpu until you choose")
    return recommendation.profile, recommendation_reason(recommendation)


def _pin_lines(pin: Pin | None, why_not: str, fetched_to: str) -> list[str]:
    if pin is not None:
        return [f"git = {_toml(pin.url)}   # another machine: `envbuild fetch` clones it{fetched_to}",
                f"ref = {_toml(pin.ref)}   # {pin.said}"]
    return [f"# not pinned ({why_not}): add git and ref by hand"] if why_not else []


def _manager_lines(manager: Path | None, route: ManagerRoute | None, route_line: str,
                   rel: Callable[[Path], str], pin: Pin | None = None, why_not: str = "") -> list[str]:
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
        if pin is not None:
            lines.append(f"path = {_toml(rel(manager))}")
        lines += _pin_lines(pin, why_not, " there")
    else:
        lines.append("# no ComfyUI-Manager: ComfyUI v0.4.0 and later bring it (manager_requirements.txt); "
                     "or, the legacy one pinned:")
        lines += ['# git = "https://github.com/Comfy-Org/ComfyUI-Manager"', '# ref = "3.41"']
    lines.append("# enabled = false                  # leave the Manager out of the lock")
    return lines


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_config(root: Path, checkout: Path, base: Path | None, manager: Path | None, nodes: tuple[str, ...],
                  profile: str, why: str, comfy_pin: Pin | None, *, route: ManagerRoute | None = None,
                  route_line: str = "", manager_pin: Pin | None = None, unpinned: tuple[str, str] = ("", ""),
                  requires_python: tuple[str, str] = (DEFAULT_REQUIRES_PYTHON, ""), torch_source: str | None = None,
                  mirrors: Mapping[str, str] | None = None) -> str:
    def rel(path: Path) -> str:
        return Path(os.path.relpath(path, root)).as_posix()

    lines = [
        "# envbuild.toml: the ComfyUI deployment envbuild locks (`envbuild lock`), installs (`envbuild sync`) and",
        "# starts (`envbuild run`). Paths are relative to this file. Written by `envbuild init`; edit freely.",
        "",
        "[comfyui]",
        f"path = {_toml(rel(checkout))}                 # the checkout: requirements.txt and main.py",
    ]
    lines += _pin_lines(comfy_pin, unpinned[0], " to path")
    if base is not None:
        lines.append(f"base-directory = {_toml(rel(base))}   # ComfyUI's --base-directory (models, custom_nodes, user)")
    else:
        lines.append('# base-directory = "data"          # ComfyUI\'s --base-directory, if you keep models and nodes '
                     "outside the checkout")
    lines += ['# listen = "127.0.0.1"              # `envbuild run`: ComfyUI\'s --listen', "# port = 8188", ""]
    lines += _manager_lines(manager, route, route_line, rel, manager_pin, unpinned[1])
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
              f"requires-python = {_toml(requires_python[0])}"
              + (f"   # {requires_python[1]}" if requires_python[1] else ""),
              (f"torch-source = {_toml(torch_source)}              # CUDA torch from PyPI (--torch-source)"
               if torch_source else
               "# torch-source = \"pypi\"            # where download.pytorch.org is blocked: CUDA torch from PyPI"),
              '# extra-requirements = ["requirements-extra.txt"]',
              ""]
    if mirrors:
        lines += ["[mirrors]                           # the lock is made through these (--mirror, --pypi-mirror)",
                  *(f"{key} = {_toml(url)}" for key, url in mirrors.items()), ""]
    else:
        lines += ["# [mirrors]                         # behind a firewall: see the README, \"Behind a firewall\"",
                  '# pytorch = "https://mirror.sjtu.edu.cn/pytorch-wheels"',
                  "# pypi = \"https://pypi.tuna.tsinghua.edu.cn/simple\"", ""]
    return "\n".join(lines)
