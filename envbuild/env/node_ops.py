"""`node add`, `node update`, `node remove`: a node changes only after the deployment locked with it.

The new checkout is cloned into a dot-named staging folder inside the deployment; a view of every
custom_nodes folder (links to its nodes, the changed node swapped in or left out) and a copy of the
affected lock folders make a staged deployment, which is planned and locked with the real `uv lock`.
Only when every profile locked does the node land in custom_nodes, its pin in envbuild.toml, and
the real locks get re-made from the real folders. A conflict leaves custom_nodes, envbuild.toml and
locks/ byte for byte as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.comfy.nodes import nodes_home, pinned_folder
from envbuild.core.errors import ConfigError, EnvbuildError, UsageError
from envbuild.deploy.deployment import Deployment
from envbuild.lock.pipeline import LockResult, lock_profile
from envbuild.settings.gitref import CREDENTIALS_HINT, git_url_problem
from envbuild.settings.pins import NodePin, valid_name
from envbuild.torch.profile import TorchProfile

if TYPE_CHECKING:
    from envbuild.comfy.nodegit import Resolved as Resolved  # noqa: PLC0414 (a name for annotations only)

STAGING = ".envbuild-staging"


class NodeChange(NamedTuple):
    name: str
    pin: NodePin | None  # None: removed
    previous: NodePin | None
    locks: tuple[LockResult, ...]
    config_lines: tuple[str, ...]


def name_from_url(url: str) -> str:
    tail = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail.removesuffix(".git")


class NodeSource(NamedTuple):
    """One node to add: a git URL (or local path), the ref to pin (None: the default branch), its folder name."""

    url: str
    ref: str | None = None
    name: str | None = None


def add_nodes(deployment: Deployment, sources: list[NodeSource], *, targets: list[TorchProfile],
              on_lock: Callable[[LockResult], None] | None = None) -> list[NodeChange]:
    """Clone each, lock once per profile with all of them staged, then land them together: `node add URL...`.
    One conflict in any of them changes nothing."""
    config = deployment.config
    _require_config(deployment)
    home = _home(deployment)
    named: list[tuple[NodeSource, str]] = []
    for source in sources:
        if is_registry_id(source.url):
            if source.ref or any(ch in source.url for ch in "/\\"):
                raise UsageError(f"{source.url}: a registry node takes its version as ID@VERSION, not --ref")
            node_id = source.url.partition("@")[0]
            if source.name not in (None, node_id):
                raise UsageError(f"{source.url}: a registry node's folder is its id ({node_id}), not --name")
            if any(pin.name.lower() == node_id.lower() for pin in config.node_pins):
                raise UsageError(f"node {node_id} is pinned already",
                                 hint=f"set [custom-nodes.{node_id}] version, then `envbuild fetch --force`")
            if (home / node_id).exists() or (home / node_id).is_symlink():
                raise UsageError(f"{deployment.display(home / node_id)} exists already",
                                 hint="move it away (or remove it) first: envbuild installs the registry's archive")
            named.append((source, node_id))
            continue
        problem = git_url_problem(source.url)
        if problem:  # the URL is written into envbuild.toml and committed
            raise UsageError(f"the node's URL {problem}",
                             hint=CREDENTIALS_HINT if "credentials" in problem else "pass a git URL or a local path")
        name = source.name or name_from_url(source.url)
        if not valid_name(name):
            raise UsageError(f"`{name}` cannot be a node's folder name",
                             hint="pass --name NAME (letters, digits, _ . + -)")
        if any(pin.name.lower() == name.lower() for pin in config.node_pins):
            raise UsageError(f"node {name} is pinned already", hint=f"`envbuild node update {name} --ref REF` moves it")
        if any(other.lower() == name.lower() for _, other in named):
            raise UsageError(f"node {name} is named twice", hint="pass each node once (--name picks another folder)")
        named.append((source, name))
    with _staging(deployment) as stage:
        items = []
        for source, name in named:
            if is_registry_id(source.url):
                items.append(_registry_item(deployment, stage, source.url, name))
                continue
            existing = home / name
            if existing.exists() or existing.is_symlink():
                resolved = _adopt(deployment, existing, source.url, source.ref)
                items.append(_Item(name, NodePin(name, source.url, resolved.commit, resolved.ref), None, existing,
                                   land=False))
            else:
                staged, resolved = _clone(deployment, stage, source.url, source.ref, name)
                items.append(_Item(name, NodePin(name, source.url, resolved.commit, resolved.ref), None, staged))
        return _change(deployment, stage, items, targets, on_lock)


def is_registry_id(text: str) -> bool:
    """`comfyui-impact-pack` or `comfyui-impact-pack@8.8.1`: a Comfy Registry id, not a URL or a path."""
    node_id, _, version = text.partition("@")
    return bool(valid_name(node_id) and ":" not in text and "/" not in text and "\\" not in text
                and (not version or version.replace(".", "").replace("-", "").replace("+", "").isalnum()))


def _registry_item(deployment: Deployment, stage: Path, text: str, name: str) -> _Item:
    """A registry node fetched into the stage at ID@VERSION (default: the registry's latest), its archive's
    sha256 pinned as `node import` and the first `fetch` pin it."""
    from envbuild.comfy.registry import RegistryError, fetch_registry_node, latest_version

    node_id, _, version = text.partition("@")
    base = deployment.config.node_registry
    version = version or latest_version(node_id, base=base)
    pin = NodePin(node_id, "", "", version, False, version)
    staged = stage / "node" / node_id
    fetched = fetch_registry_node(pin, staged, base=base)
    if fetched.action != "installed":
        raise RegistryError(f"registry node {node_id} {version}: {fetched.problem or fetched.action}")
    return _Item(name, pin._replace(sha256=fetched.sha256), None, staged)


def add_node(deployment: Deployment, url: str, *, ref: str | None, name: str | None,
             targets: list[TorchProfile], on_lock: Callable[[LockResult], None] | None = None) -> NodeChange:
    """Clone, lock with it staged, then land it: `node add` of one node."""
    return add_nodes(deployment, [NodeSource(url, ref, name)], targets=targets, on_lock=on_lock)[0]


def update_node(deployment: Deployment, name: str, *, ref: str | None, targets: list[TorchProfile],
                on_lock: Callable[[LockResult], None] | None = None, force: bool = False) -> NodeChange:
    previous = _pinned(deployment, name)
    if not force:
        _refuse_local_work(deployment, previous, "replaces its folder")
    if previous.from_registry:
        raise UsageError(f"node {previous.name} comes from the Comfy Registry (version {previous.version}): "
                         "`node update` moves git pins",
                         hint=f"set [custom-nodes.{previous.name}] version (and remove sha256), then `envbuild "
                              "fetch --force` and `envbuild lock`")
    with _staging(deployment) as stage:
        staged, resolved = _clone(deployment, stage, previous.url, ref or previous.ref, previous.name)
        pin = previous._replace(commit=resolved.commit, ref=resolved.ref)
        return _change(deployment, stage, [_Item(previous.name, pin, previous, staged)], targets, on_lock)[0]


def remove_node(deployment: Deployment, name: str, *, force: bool, targets: list[TorchProfile],
                on_lock: Callable[[LockResult], None] | None = None) -> NodeChange:
    previous = _pinned(deployment, name)
    if not force:
        _refuse_local_work(deployment, previous, "deletes its folder")
    with _staging(deployment) as stage:
        return _change(deployment, stage, [_Item(previous.name, None, previous, None)], targets, on_lock)[0]


def set_node_enabled(deployment: Deployment, name: str, *, enabled: bool, targets: list[TorchProfile],
                     on_lock: Callable[[LockResult], None] | None = None) -> NodeChange:
    """`node disable`: lock without the node, then move it to custom_nodes/.disabled (where the Manager keeps
    disabled nodes: ComfyUI does not load it) and record `disabled = true`; `node enable` the way back."""
    previous = _pinned(deployment, name)
    if previous.disabled != enabled:
        raise UsageError(f"node {previous.name} is {'enabled' if enabled else 'disabled'} already")
    pin = previous._replace(disabled=not enabled)
    with _staging(deployment) as stage:
        folder = pinned_folder(deployment.config, previous)
        staged = folder if enabled and folder is not None and folder.is_dir() else None
        return _change(deployment, stage, [_Item(previous.name, pin, previous, staged, land=False)], targets,
                       on_lock)[0]


def _refuse_local_work(deployment: Deployment, pin: NodePin, what: str) -> None:
    """Edited or new files in a node's git checkout are the user's: `node update` and `node remove` never
    delete them without --force (files git ignores, caches and the like, are not asked about)."""
    folder = pinned_folder(deployment.config, pin)
    if folder is None or not (folder / ".git").exists():
        return
    from envbuild.comfy.nodegit import git_for, local_changes

    changed = local_changes(git_for(deployment.env), folder, untracked=True)
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise UsageError(f"node {pin.name} ({deployment.display(folder)}) has local changes or new files "
                         f"({shown}), and this {what}: envbuild does not delete them",
                         hint="commit or save them elsewhere, or pass --force")


# -- the staged lock and the landing ------------------------------------------------------------------

class _Item(NamedTuple):
    """One node of a change: its pin after (None: removed), before (None: added), its new checkout (None:
    removed or unchanged), and whether that checkout still has to move into custom_nodes."""

    name: str
    pin: NodePin | None
    previous: NodePin | None
    staged: Path | None
    land: bool = True


def _change(deployment: Deployment, stage: Path, items: list[_Item], targets: list[TorchProfile],
            on_lock: Callable[[LockResult], None] | None) -> list[NodeChange]:
    """Lock a staged deployment with every item's change, then land them all (or nothing on a conflict)."""
    config = deployment.config
    names = {item.name.lower() for item in items}
    pins = (*(p for p in config.node_pins if p.name.lower() not in names), *(i.pin for i in items if i.pin))
    views = _views(deployment, stage, {i.name: i.staged if i.pin is not None and not i.pin.disabled else None
                                       for i in items})
    staged_config = config._replace(node_dirs=views, lock_dir=stage / "locks", node_pins=pins)
    staged = dataclasses.replace(deployment, config=staged_config)
    for profile in targets:  # seeded from the committed locks, so versions move only where the nodes ask
        committed = deployment.folder(profile).path
        if committed.is_dir():
            shutil.copytree(committed, stage / "locks" / profile.name, symlinks=True)
    try:
        for profile in targets:
            lock_profile(staged, profile, stream=False)  # a conflict raises here: nothing has changed yet
    except EnvbuildError as exc:
        raise _as_landed(exc, deployment, stage, items) from None
    return _land(deployment, stage, items, pins, targets, on_lock)


def _land(deployment: Deployment, stage: Path, items: list[_Item], pins: tuple[NodePin, ...],
          targets: list[TorchProfile], on_lock: Callable[[LockResult], None] | None) -> list[NodeChange]:
    from envbuild.settings.pins_edit import write_pin

    config = deployment.config
    source = config.source
    assert source is not None  # _require_config
    toml_before = source.read_bytes()
    home = _home(deployment)
    moves: list[tuple[Path, Path]] = []  # (from, to), undone in reverse on failure
    try:
        lines: dict[str, list[str]] = {}
        for index, item in enumerate(items):
            old_folder = pinned_folder(config, item.previous) if item.previous is not None else None
            moving = item.staged if item.land else None
            if old_folder is not None and old_folder.exists() and (moving is not None or item.pin is None):
                aside = stage / f"replaced-{index}"
                moves.append((old_folder, aside))
                os.replace(old_folder, aside)
            if moving is not None and item.pin is not None:
                target = pinned_folder(config, item.pin) or home / item.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(moving), str(target))
                moves.append((moving, target))
            elif item.pin is not None and old_folder is not None and old_folder.exists():
                target = pinned_folder(config, item.pin) or home / item.name
                if target != old_folder:  # enabled or disabled: the folder moves, its files stay as they are
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(old_folder, target)
                    moves.append((old_folder, target))
            lines[item.name] = write_pin(source, item.name, item.pin)
        landed = dataclasses.replace(deployment, config=config._replace(node_pins=pins))
        results = []
        for profile in targets:
            # Seeded with the staged lock made moments ago for the same requirements: uv confirms it,
            # resolving nothing anew (one resolution per profile per node operation, not two).
            result = lock_profile(landed, profile, stream=False, seed_lock=stage / "locks" / profile.name / "uv.lock")
            results.append(result)
            if on_lock is not None:
                on_lock(result)
    except BaseException:
        from envbuild.core.fsio import atomic_write

        # The folders first: moving back needs no free space, rewriting envbuild.toml may not get any (a
        # full disk is often why the pin's write failed), and a node must never stay behind unpinned.
        for origin, target in reversed(moves):
            if target.exists():
                shutil.move(str(target), str(origin))
        if source.read_bytes() != toml_before:
            atomic_write(source, toml_before)
        raise
    return [NodeChange(item.name, item.pin, item.previous, tuple(results), tuple(lines[item.name])) for item in items]


def _as_landed(exc: EnvbuildError, deployment: Deployment, stage: Path, items: list[_Item]) -> EnvbuildError:
    """The staged lock's error, said of the deployment: the node's files named where they would land,
    and what was (not) done instead of `--exclude-node`."""
    home = deployment.display(_home(deployment))
    prefix = deployment.display(stage)
    message = exc.message
    for index in range(len(deployment.config.custom_node_dirs())):
        message = message.replace(f"{prefix}/view{index}", home if index == 0 else
                                  deployment.display(deployment.config.custom_node_dirs()[index]))
    exc.message = message.replace(prefix, "(staged)")
    exc.args = (exc.message,)
    what = ", ".join(f"node {i.name} at {i.pin.commit[:12]} ({i.pin.ref})" if i.pin is not None
                     else f"removing node {i.name}" for i in items)
    parts = [f"{what} would not lock, so nothing changed (custom_nodes, envbuild.toml and locks/ are as they were)"]
    named = [i.name for i in items if i.pin is not None and _about_the_node(exc, i.name)]
    if named:
        parts.append(f"try another --ref for {', '.join(named)}" if len(items) > 1 else "try another --ref")
    if exc.hint and "--exclude-node" not in exc.hint:  # --exclude-node: advice for a node already there
        parts.append(exc.hint)
    exc.hint = "; ".join(parts)
    return exc


def _about_the_node(exc: EnvbuildError, name: str) -> bool:
    """A conflict or an unresolvable requirement that names this node (another ref may fix it): not a
    network or uv failure, and not a problem of the deployment the node is added to."""
    from envbuild.core.errors import ConflictError, RequirementFileError, ResolveError

    return isinstance(exc, (ConflictError, RequirementFileError, ResolveError)) and name.lower() in str(exc).lower()


def _views(deployment: Deployment, stage: Path, changed: dict[str, Path | None]) -> tuple[Path, ...]:
    """Each custom_nodes folder as links to its entries, the changed nodes left out, and each one's staged
    checkout (None: none, it is removed or disabled) in the first."""
    lowered = {name.lower() for name in changed}
    views = []
    for index, folder in enumerate(deployment.config.custom_node_dirs()):
        view = stage / f"view{index}"
        view.mkdir(parents=True)
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name.lower() not in lowered:
                    (view / entry.name).symlink_to(entry.absolute(), target_is_directory=entry.is_dir())
        if index == 0:
            for name, staged_node in changed.items():
                if staged_node is not None:
                    (view / name).symlink_to(staged_node.absolute(), target_is_directory=True)
        views.append(view)
    return tuple(views)


@contextlib.contextmanager
def _staging(deployment: Deployment) -> Iterator[Path]:
    """A dot-named scratch folder inside the deployment (same file system: the node lands by a rename),
    removed whatever happens."""
    root = deployment.config.project_dir / STAGING
    root.mkdir(exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")
    path = Path(tempfile.mkdtemp(prefix="node-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        try:
            ignore.unlink()
            root.rmdir()  # only when no other envbuild is staging here
        except OSError:
            pass


def _clone(deployment: Deployment, stage: Path, url: str, ref: str | None, name: str) -> tuple[Path, Resolved]:
    from envbuild.comfy.git import resolve_url
    from envbuild.comfy.nodegit import clone_at, git_for

    folder = stage / "node" / name
    return folder, clone_at(git_for(deployment.env), folder, resolve_url(url, deployment.config.project_dir), ref,
                            name)


def _adopt(deployment: Deployment, folder: Path, url: str, ref: str | None) -> Resolved:
    """A node already in custom_nodes (the Manager's, say) is pinned where it is, if it is that repository
    at that ref: `node list` prints this command for every unpinned node."""
    from envbuild.comfy.git import _same_repo, resolve_url
    from envbuild.comfy.nodegit import Resolved, git_for, origin_url
    from envbuild.settings.pins import read_head

    display = deployment.display(folder)
    head = read_head(folder)
    have = origin_url(git_for(deployment.env), folder) if head else ""
    if head is None or not _same_repo(have, resolve_url(url, deployment.config.project_dir)):
        raise UsageError(f"{display} exists and is not a checkout of {url}",
                         hint="pass --name NAME for another folder name, or move it away")
    if ref not in (None, head):
        raise UsageError(f"{display} is at {head[:12]}, not at {ref}",
                         hint=f"pin what is there with --ref {head}, or move the folder away and add it again")
    return Resolved(head, head)


def _pinned(deployment: Deployment, name: str) -> NodePin:
    _require_config(deployment)
    for pin in deployment.config.node_pins:
        if pin.name.lower() == name.lower():
            return pin
    known = ", ".join(p.name for p in deployment.config.node_pins) or "none"
    raise UsageError(f"no pinned node named {name} (pinned: {known})", hint="`envbuild node list` shows every node")


def _require_config(deployment: Deployment) -> None:
    if deployment.config.source is None:
        raise ConfigError(None, "pinning nodes needs an envbuild.toml", hint="run `envbuild init` first")


def _home(deployment: Deployment) -> Path:
    home = nodes_home(deployment.config)
    if home is None:
        raise ConfigError(deployment.config.source, "no custom_nodes folder: set [comfyui] path or base-directory")
    return home
