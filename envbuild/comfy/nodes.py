"""Where the deployment's custom nodes stand against their pins: `node list`, `lock --check`, `fetch`.

Each node is one of: pinned and at its commit ("ok"), at another commit ("moved"), with local
changes to tracked files ("dirty"), pinned but not on disk ("missing"), pinned and disabled, or on
disk without a pin ("unpinned": installed by hand or by the Manager, recorded nowhere), with the
exact command that pins it. A pinned node at its commit whose git submodules are at other commits
than that commit records is "submodule-moved" ("submodule Y moved from a to b"), or
"submodule-missing" when they are not checked out. `node list` also says what a node's install.py
installs that its requirement files do not hold (envbuild never runs it).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.comfy.layout import node_entries
from envbuild.core.errors import EnvbuildError
from envbuild.settings.config import Config
from envbuild.settings.pins import NodePin, pin_folder, read_head

if TYPE_CHECKING:
    from envbuild.comfy.nodegit import Submodule


class NodeStatus(NamedTuple):
    name: str
    path: Path
    pin: NodePin | None
    commit: str | None  # on disk (None: not there, or not a git checkout)
    states: tuple[str, ...]  # "ok", "moved", "dirty", "missing", "disabled", "unpinned", "not-git",
    # "submodule-moved", "submodule-missing"
    fix: str = ""  # the command that settles it
    submodules: tuple[str, ...] = ()  # "submodule Y moved from a to b", for each one not where the pin has it
    install_script: str = ""  # what its install.py installs that its requirement files do not hold

    def as_json(self, config: Config) -> dict[str, object]:
        return {"name": self.name, "path": config.display(self.path), "states": list(self.states),
                "commit": self.commit, "pinned_commit": self.pin.commit if self.pin else None,
                "ref": self.pin.ref if self.pin else None, "git": self.pin.url if self.pin else None,
                "disabled": bool(self.pin and self.pin.disabled), "fix": self.fix,
                "submodules": list(self.submodules), "install_script": self.install_script or None,
                "registry_version": self.pin.version if self.pin and self.pin.from_registry else None}


def nodes_home(config: Config) -> Path | None:
    """The custom_nodes folder pinned nodes live in (the first one ComfyUI reads)."""
    dirs = config.custom_node_dirs()
    return dirs[0] if dirs else None


def pinned_folder(config: Config, pin: NodePin) -> Path | None:
    home = nodes_home(config)
    return pin_folder(home, pin) if home is not None else None


def node_statuses(config: Config, environ: Mapping[str, str], *, look_for_changes: bool = True,
                  read_install_scripts: bool = False) -> list[NodeStatus]:
    """Every pinned node, then every unpinned node folder found in the custom_nodes folders.
    `look_for_changes`: run `git status` in each checkout; git runs otherwise only in a node with a
    .gitmodules (to read its submodules). `read_install_scripts`: say what each install.py installs."""
    statuses = []
    pinned_names = {pin.name.lower() for pin in config.node_pins}
    for pin in config.node_pins:
        folder = pinned_folder(config, pin)
        if folder is None:
            continue
        if pin.from_registry:
            statuses.append(_registry_status(pin, folder))
            continue
        commit = read_head(folder)
        states: list[str] = []
        fix = ""
        if not folder.exists():
            states.append("missing")
            fix = "envbuild fetch"
        elif commit is None:
            states.append("not-git")
            fix = f"move {config.display(folder)} away, then `envbuild fetch`"
        subs: list[Submodule] = []
        if folder.exists() and commit is not None:
            if commit != pin.commit:
                states.append("moved")
                fix = (f"envbuild fetch --force (back to {pin.commit[:12]}), or envbuild node update {pin.name} "
                       f"--ref {commit} (pin what is there)")
            else:  # the submodules of another commit than the pin's are that commit's business
                subs = [sub for sub in _submodules(folder, environ) if sub.problem]
                if any(sub.actual is not None for sub in subs):
                    states.append("submodule-moved")
                    fix = "envbuild fetch --force (puts the submodules back at the commits the pin records)"
                elif subs:
                    states.append("submodule-missing")
                    fix = "envbuild fetch"
            if look_for_changes and _dirty(folder, environ, ignore={sub.path for sub in subs}):
                states.append("dirty")
        if pin.disabled:
            states.append("disabled")
        statuses.append(NodeStatus(pin.name, folder, pin, commit, tuple(states) or ("ok",), fix,
                                   tuple(sub.problem for sub in subs)))
    statuses.extend(unpinned_nodes(config, pinned_names, environ))
    if read_install_scripts:
        statuses = [status._replace(install_script=install_script_note(config, status.path))
                    if status.path.is_dir() else status for status in statuses]
    return statuses


def install_script_note(config: Config, folder: Path) -> str:
    """What the node's install.py installs that its own requirement files (requirements.txt or
    pyproject.toml, and those `[custom-nodes.NAME] requirements` declares) do not hold ("": nothing,
    or no install.py)."""
    from packaging.utils import canonicalize_name

    from envbuild.comfy.inputs import INSTALL_SCRIPT, InputFile, node_files, read_input
    from envbuild.comfy.install_scripts import describe, read_install_script, uncovered

    script = folder / "install.py"
    if not script.is_file():
        return ""
    try:
        files = node_files(folder, config)
    except EnvbuildError:  # a declared file that is missing: `lock` says so; here, only the script counts
        files = [InputFile(script, f"node {folder.name}", lenient=True, kind=INSTALL_SCRIPT, owner=folder)]
    read: set[str] = set()
    held: set[str] = set()
    for item in files:
        if item.kind == INSTALL_SCRIPT:
            continue
        read.add(item.path.relative_to(folder).as_posix())
        try:
            held.update(canonicalize_name(r.requirement.name) for r in read_input(item, config).requirements)
        except EnvbuildError:
            continue
    missing = uncovered(read_install_script(script, folder), read_files=read, held=held, node=folder)
    return describe(folder.name, missing, not_held="its requirement files do not hold") if missing else ""


def _registry_status(pin: NodePin, folder: Path) -> NodeStatus:
    from envbuild.comfy.registry import installed_version

    if not folder.exists():
        return NodeStatus(pin.name, folder, pin, None, ("missing",), "envbuild fetch")
    have = installed_version(folder)
    states = ("ok",) if have == pin.version else ("moved",)
    fix = "" if have == pin.version else f"envbuild fetch --force (back to registry version {pin.version})"
    return NodeStatus(pin.name, folder, pin, f"registry {have or '?'}", (*states, *(("disabled",) if pin.disabled
                                                                                  else ())), fix)


def unpinned_nodes(config: Config, pinned_names: set[str], environ: Mapping[str, str]) -> list[NodeStatus]:
    """Node folders on disk that no pin names (the Manager itself is pinned by [manager], not here)."""
    found = []
    manager = config.manager.resolve() if config.manager is not None else None
    for folder in config.custom_node_dirs():
        for entry in node_entries(folder):
            node, name = entry.path, entry.name
            if (not entry.is_folder_node or entry.is_manager_clone or name.lower() in pinned_names
                    or (manager is not None and node.resolve() == manager)):
                continue
            commit = read_head(node)
            if commit is None:
                found.append(NodeStatus(name, node, None, None, ("unpinned", "not-git"),
                                        "not a git checkout: make it a repository, or remove it"))
                continue
            url = _origin(node, environ)
            fix = (f"envbuild node add {shlex.quote(url)} --ref {commit} --name {shlex.quote(name)}" if url
                   else "it has no origin remote: add one (git remote add origin URL), then `envbuild node list`")
            found.append(NodeStatus(name, node, None, commit, ("unpinned",), fix))
    return found


def deployment_notes(config: Config, environ: Mapping[str, str]) -> list[str]:
    """What `lock --check` says about the nodes beside the locks: pins not on disk, moved checkouts,
    nodes nobody pinned (only once the deployment pins nodes at all: before, every node is unpinned); and,
    always, a ComfyUI or legacy Manager git checkout envbuild.toml does not pin (another machine cannot
    fetch it, though its lock is current)."""
    notes = unpinned_checkouts(config)
    if not config.node_pins:
        return notes
    for status in node_statuses(config, environ, look_for_changes=False):
        where = config.display(status.path)
        if "missing" in status.states:
            notes.append(f"pinned node {status.name} is missing ({where}): run `{status.fix}`")
        elif "moved" in status.states and status.pin is not None and status.commit:
            notes.append(f"node {status.name} is at {status.commit[:12]}, pinned at "
                         f"{status.pin.identity[:12]}: {status.fix}")
        elif status.submodules:
            notes.extend(f"node {status.name}: {problem}: {status.fix}" for problem in status.submodules)
        elif "unpinned" in status.states:
            notes.append(f"node {status.name} ({where}) is not pinned: {status.fix}")
    return notes


def unpinned_checkouts(config: Config) -> list[str]:
    """ComfyUI, and the legacy Manager clone it runs, when each is a git checkout without [comfyui]/[manager]
    git and ref: what to write, read from the clone's files (no git process)."""
    from envbuild.comfy.layout import CLONE_ROUTE, manager_route
    from envbuild.core.errors import EnvbuildError
    from envbuild.settings.checkouts import checkout_pin

    found: list[tuple[str, str, Path, bool]] = []
    if config.comfyui is not None and config.comfyui_git is None:
        found.append(("ComfyUI", "comfyui", config.comfyui, False))
    if config.manager_git is None:
        try:
            route = manager_route(config)
        except EnvbuildError:
            route = None
        if route is not None and route.kind == CLONE_ROUTE and route.path is not None:
            found.append(("the ComfyUI-Manager clone", "manager", route.path, True))
    notes = []
    for what, section, folder, with_path in found:
        commit = read_head(folder)
        if commit is None:
            continue
        pin, why_not = checkout_pin(folder, what)
        where = config.display(folder)
        if pin is None:
            notes.append(f"{what} ({where}) is a git checkout at {commit[:12]} that envbuild.toml does not pin: "
                         f"another machine cannot fetch it ({why_not}); add git and ref to [{section}] by hand")
            continue
        keys = (f'path = {json.dumps(where)}, ' if with_path else "") + \
            f"git = {json.dumps(pin.url)}, ref = {json.dumps(pin.ref)}"
        notes.append(f"{what} ({where}) is a git checkout at {commit[:12]} that envbuild.toml does not pin: "
                     f"another machine cannot fetch it; add to [{section}]: {keys}")
    return notes


def _dirty(folder: Path, environ: Mapping[str, str], ignore: set[str] | frozenset[str] = frozenset()) -> bool:
    """Changed tracked files; a submodule said as moved (`ignore`) is not a local change too."""
    from envbuild.comfy.nodegit import git_for, local_changes

    return any(path not in ignore for path in local_changes(git_for(environ), folder))


def _submodules(folder: Path, environ: Mapping[str, str]) -> list[Submodule]:
    from envbuild.comfy.git import GitError
    from envbuild.comfy.nodegit import git_for, submodules

    try:
        return submodules(git_for(environ), folder)
    except GitError:  # no git on PATH: the submodules cannot be read, which is not the node's fault
        return []


def _origin(folder: Path, environ: Mapping[str, str]) -> str:
    from envbuild.comfy.nodegit import git_for, origin_url

    return origin_url(git_for(environ), folder)
