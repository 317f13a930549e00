"""`envbuild node ...`: custom nodes pinned by commit — add, update, remove, list, import, export."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from envbuild.cli.options import build_deployment
from envbuild.cli.output import say, show, warn

if TYPE_CHECKING:
    from envbuild.deploy.deployment import Deployment
    from envbuild.env.node_ops import NodeChange
    from envbuild.lock.pipeline import LockResult
    from envbuild.torch.profile import TorchProfile


@click.group()
def node() -> None:
    """Custom nodes pinned by commit in envbuild.toml ([custom-nodes.NAME]).

    \b
    A node is added, updated or removed only after the deployment locked with the change: on a
    conflict nothing changes (custom_nodes, envbuild.toml and locks/ stay as they were).
    The profiles re-locked: those of [lock] profiles that have a lock, else every committed lock,
    else the default profile.
    """


@node.command("add")
@click.argument("urls", nargs=-1, required=True, metavar="URL_OR_ID...")
@click.option("--ref", help="A tag, branch or commit (default: the repository's default branch, as it is now); "
                            "with one URL only.")
@click.option("--name", help="Its folder name in custom_nodes (default: the repository's name); with one URL only.")
@click.pass_context
def add(ctx: click.Context, urls: tuple[str, ...], ref: str | None, name: str | None) -> None:
    """Clone each git URL (at REF), or fetch each Comfy Registry node ID[@VERSION] (default: its latest
    version; the archive's sha256 is pinned), lock once per profile with all of them, then put them in
    custom_nodes and pin them. Several are one change: a conflict in any of them adds none."""
    from envbuild.core.errors import UsageError
    from envbuild.env.node_ops import NodeSource, add_nodes

    if len(urls) > 1 and (ref or name):
        raise UsageError("--ref and --name go with one URL", hint="add nodes at other refs one `node add` each")
    deployment = build_deployment(ctx)
    changes = add_nodes(deployment, [NodeSource(url, ref, name) for url in urls], targets=_targets(deployment),
                        on_lock=lambda result: _said_lock(ctx, deployment, result))
    for change in changes:
        _said_change(ctx, deployment, change, last=change is changes[-1])


@node.command("update")
@click.argument("name")
@click.option("--ref", help="The tag, branch or commit to move to (default: the ref the pin was made from).")
@click.option("--force", is_flag=True, help="Replace its folder even with local changes or new files in it.")
@click.pass_context
def update(ctx: click.Context, name: str, ref: str | None, force: bool) -> None:
    """Move a pinned node to REF (its commit now), lock with it, then check it out."""
    from envbuild.env.node_ops import update_node

    deployment = build_deployment(ctx)
    change = update_node(deployment, name, ref=ref, targets=_targets(deployment),
                         on_lock=lambda result: _said_lock(ctx, deployment, result), force=force)
    _said_change(ctx, deployment, change)


@node.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove it even with local changes or new files in its folder.")
@click.pass_context
def remove(ctx: click.Context, name: str, force: bool) -> None:
    """Lock without the node, then delete its folder and its pin."""
    from envbuild.env.node_ops import remove_node

    deployment = build_deployment(ctx)
    change = remove_node(deployment, name, force=force, targets=_targets(deployment),
                         on_lock=lambda result: _said_lock(ctx, deployment, result))
    _said_change(ctx, deployment, change)


@node.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (for scripts).")
@click.pass_context
def list_nodes(ctx: click.Context, as_json: bool) -> None:
    """Every pinned node and every node on disk: ok, moved, dirty, missing, disabled, unpinned,
    submodule-moved, submodule-missing; and what a node's install.py installs beyond its requirement files."""
    from envbuild.comfy.nodes import node_statuses

    deployment = build_deployment(ctx)
    config = deployment.config
    statuses = node_statuses(config, deployment.env, read_install_scripts=True)
    if as_json:
        import json

        show(json.dumps({"nodes": [s.as_json(config) for s in statuses]}, indent=2))
        return
    if not statuses:
        say(ctx, "no custom nodes pinned or on disk")
        return
    for status in statuses:
        at = (status.commit or "")[:12] or "-"
        pinned = f" (pinned {status.pin.identity[:20]}, {status.pin.ref})" if status.pin else ""
        say(ctx, f"{status.name}: {', '.join(status.states)} at {at}{pinned}  {config.display(status.path)}")
        for problem in status.submodules:
            say(ctx, f"    {problem}")
        if status.fix:
            say(ctx, f"    fix: {status.fix}")
        if status.install_script:
            say(ctx, f"    install.py: {status.install_script}")


def _targets(deployment: Deployment) -> list[TorchProfile]:
    """[lock] profiles that have a lock, else every committed lock, else the default profile."""
    from envbuild.deploy.selection import ProfileRequest, profile_to_lock, profiles_to_lock

    committed = set(deployment.committed())
    if deployment.config.profiles:
        listed = [p for p in profiles_to_lock(deployment) if p.name in committed]
        if listed:
            return listed
    elif committed:
        return [deployment.catalogue.get(name) for name in sorted(committed)]
    return [profile_to_lock(deployment, ProfileRequest(None, None))]


def _said_lock(ctx: click.Context, deployment: Deployment, result: LockResult) -> None:
    where = deployment.display(result.folder)
    if result.status == "up-to-date":
        say(ctx, f"{result.profile}: current ({where}, {result.packages} packages)")
    else:
        say(ctx, f"{result.profile}: locked {result.packages} packages into {where}")


def _said_change(ctx: click.Context, deployment: Deployment, change: NodeChange, *, last: bool = True) -> None:
    for line in change.config_lines:
        say(ctx, line)
    if change.pin is None:
        say(ctx, f"node {change.name}: removed")
    elif change.previous is None and change.pin.from_registry:
        say(ctx, f"node {change.name}: added from the Comfy Registry at {change.pin.version} (archive sha256 "
                 f"{change.pin.sha256[:12]}…)")
    elif change.previous is None:
        say(ctx, f"node {change.name}: added at {change.pin.commit[:12]} ({change.pin.ref})")
    else:
        say(ctx, f"node {change.name}: moved from {change.previous.commit[:12]} to {change.pin.commit[:12]} "
                 f"({change.pin.ref})")
    if last:
        say(ctx, "commit envbuild.toml and locks/ together")


@node.command("disable")
@click.argument("name")
@click.pass_context
def disable(ctx: click.Context, name: str) -> None:
    """Lock without a pinned node, then move it to custom_nodes/.disabled (ComfyUI does not load it there;
    the Manager keeps disabled nodes there too) and record `disabled = true` in its pin."""
    _toggle(ctx, name, enabled=False)


@node.command("enable")
@click.argument("name")
@click.pass_context
def enable(ctx: click.Context, name: str) -> None:
    """Lock with a disabled pinned node again, then move it back into custom_nodes."""
    _toggle(ctx, name, enabled=True)


def _toggle(ctx: click.Context, name: str, *, enabled: bool) -> None:
    from envbuild.env.node_ops import set_node_enabled

    deployment = build_deployment(ctx)
    change = set_node_enabled(deployment, name, enabled=enabled, targets=_targets(deployment),
                              on_lock=lambda result: _said_lock(ctx, deployment, result))
    for line in change.config_lines:
        say(ctx, line)
    say(ctx, f"node {change.name}: {'enabled' if enabled else 'disabled'}; commit envbuild.toml and locks/ together")


@node.command("import")
@click.argument("snapshot", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def import_snapshot(ctx: click.Context, snapshot: Path) -> None:
    """Pin what a ComfyUI-Manager snapshot (.json or .yaml) records: node commits, registry node
    versions, the ComfyUI commit. Its `pips` are reported, not installed: the lock decides.
    Then: `envbuild fetch` and `envbuild lock`."""
    from envbuild.comfy.snapshots import read_snapshot, registry_pins
    from envbuild.core.errors import ConfigError
    from envbuild.settings.pins_edit import write_import

    deployment = build_deployment(ctx)
    config = deployment.config
    if config.source is None:
        raise ConfigError(None, "importing a snapshot needs an envbuild.toml", hint="run `envbuild init` first")
    found = read_snapshot(Path.cwd() / snapshot)
    comfyui_ref = None
    if found.comfyui is not None:
        if config.comfyui_git is not None:
            comfyui_ref = found.comfyui
        else:
            warn(f"the snapshot's ComfyUI commit {found.comfyui[:12]} is not pinned: envbuild.toml has no [comfyui] "
                 f"git; add git = URL and ref = \"{found.comfyui}\" to pin it")
    pins = [*found.pins, *registry_pins(found)]
    for line in write_import(config.source, pins, comfyui_ref):
        say(ctx, line)
    for skipped in found.skipped:
        warn(f"not imported: {skipped}")
    for name in found.files:
        warn(f"not imported: single-file node {name} (no repository to pin it from: commit it with the deployment)")
    if found.pips:
        say(ctx, f"{len(found.pips)} installed package(s) listed under `pips` were not taken: the lock decides "
                 "every version, with hashes (`envbuild lock`)")
    say(ctx, "next: `envbuild fetch` (checks out the pins), then `envbuild lock`, and commit envbuild.toml and locks/")


@node.command("export")
@click.option("--manager-snapshot", "target", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the pins as a ComfyUI-Manager snapshot (.json, or .yaml) its Snapshot Manager restores.")
@click.option("--force", is_flag=True, help="Write over an existing file.")
@click.pass_context
def export_snapshot(ctx: click.Context, target: Path, force: bool) -> None:
    """Write the deployment's pins as a ComfyUI-Manager snapshot (`pips` empty: the lock installs them)."""
    from envbuild.comfy.snapshots import snapshot_of, snapshot_text
    from envbuild.core.fsio import atomic_write, refuse_foreign_file
    from envbuild.settings.pins import read_head

    deployment = build_deployment(ctx)
    config = deployment.config
    comfyui = read_head(config.comfyui) if config.comfyui is not None else None
    if comfyui is None and config.comfyui_git is not None:
        from envbuild.settings.pins import FULL_SHA

        comfyui = config.comfyui_git.ref if FULL_SHA.fullmatch(config.comfyui_git.ref) else None
    path = Path.cwd() / target
    refuse_foreign_file(path, written_by_us=None, force=force)  # a snapshot's format has no place to say who wrote it
    atomic_write(path, snapshot_text(snapshot_of(comfyui, config.node_pins), path))
    say(ctx, f"wrote {target}: ComfyUI {comfyui[:12] if comfyui else '(no commit)'}, {len(config.node_pins)} "
             "node(s); restore it with the Manager's Snapshot Manager")
