"""`envbuild fetch`: clone or update ComfyUI, ComfyUI-Manager and every pinned custom node at its pin."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from envbuild.deploy.deployment import Deployment

from envbuild.cli.options import build_deployment
from envbuild.cli.output import say

if TYPE_CHECKING:
    from envbuild.comfy.nodegit import NodeFetch
    from envbuild.settings.config import Config


@click.command()
@click.option("--force", is_flag=True,
              help="Put a pinned node that moved or has local changes back at its pin (its changes are lost); "
                   "replace a file at a pinned model's path that holds other bytes.")
@click.option("--jobs", "-j", type=click.IntRange(1, 32), default=8, show_default=True,
              help="How many custom nodes to fetch at once.")
@click.pass_context
def fetch(ctx: click.Context, force: bool, jobs: int) -> None:
    """Clone (or update) [comfyui] git, [manager] git and every [custom-nodes.NAME] at its pin, and
    download every [models.NAME] (verified by sha256, several at once, resumed after a drop).

    \b
    Each checkout is left at its pinned commit as a detached HEAD (a branch ref: its commit now),
    and the commit is printed. ComfyUI and the Manager are not moved over local changes; a custom
    node that moved or has local changes is named and left alone unless --force is given.
    Custom nodes are fetched in parallel, one commit deep where the server allows it; their git
    submodules are checked out at the commits the node's pinned commit records.
    After a checkout moved, `envbuild lock` records the new commits in the lock.
    """
    from envbuild.comfy.git import GitError, fetch_all
    from envbuild.comfy.nodegit import fetch_nodes
    from envbuild.comfy.nodes import pinned_folder
    from envbuild.core.errors import UsageError

    deployment = build_deployment(ctx)
    config = deployment.config
    from envbuild.core.fsio import exclusive_lock
    from envbuild.lock.pipeline import ignore_scratch_files
    from envbuild.pkgs.lockdir import UPDATE_LOCK

    ignore_scratch_files(deployment.lock_dir)  # the lock file below is scratch: never committed

    # Checkouts move only under the deployment's update lock: a fetch never races an `update`'s moves.
    with exclusive_lock(deployment.lock_dir / UPDATE_LOCK, timeout=deployment.lock_timeout,
                        on_wait=lambda: say(ctx, "waiting for another envbuild update or fetch of this deployment")):
        results = fetch_all(config, deployment.env, stream=not ctx.obj["quiet"])
    targets = [(pin, folder) for pin in config.node_pins if (folder := pinned_folder(config, pin)) is not None]
    models = config.models.pins if config.models is not None else ()
    if not results and not targets and not models:
        raise UsageError("nothing to fetch: envbuild.toml sets no git source and pins no custom node or model",
                         hint='add [comfyui] git = "https://github.com/Comfy-Org/ComfyUI" and ref = "v0.3.x" '
                              "(and optionally [manager] git/ref), or `envbuild node add URL`")
    for result in results:
        where = config.display(result.path)
        short = result.commit[:12]
        if result.action == "cloned":
            say(ctx, f"{result.name}: cloned {result.url} at {result.ref} ({short}) into {where}")
        elif result.action == "updated":
            say(ctx, f"{result.name}: {where} moved from {(result.previous or '?')[:12]} to {result.ref} ({short})")
        else:
            say(ctx, f"{result.name}: {where} already at {result.ref} ({short})")
    nodes = fetch_nodes(targets, project_dir=config.project_dir, environ=deployment.env, force=force, jobs=jobs,
                        registry=config.node_registry)
    _record_archive_hashes(ctx, deployment.config, nodes)
    problems = []
    for node in nodes:
        where = config.display(node.path)
        if node.action in ("refused", "failed"):
            problems.append(f"node {node.name} ({where}) {node.problem}" if node.action == "refused"
                            else f"node {node.name}: {node.problem}")
        elif node.action == "cloned":
            say(ctx, f"node {node.name}: {'installed' if node.sha256 else 'cloned'} at {node.commit[:12]} into "
                     f"{where}")
        elif node.action == "updated":
            say(ctx, f"node {node.name}: {where} moved from {(node.previous or '?')[:12]} to {node.commit[:12]}")
        else:
            say(ctx, f"node {node.name}: {where} already at {node.commit[:12]}"
                     + (f" (it {node.problem})" if node.problem else ""))
    if any(r.action != "unchanged" for r in results) or any(n.action in ("cloned", "updated") for n in nodes):
        stale = _stale_locks(deployment)
        if stale:
            say(ctx, f"run `envbuild lock` so the lock records these commits ({', '.join(stale)} not current)")
        else:  # a second machine fetching what the committed locks were made from: nothing to lock
            say(ctx, "the committed locks were made from these commits: `envbuild sync` installs one")
    if models:
        from envbuild.cli.model import fetch_pinned_models

        fetch_pinned_models(ctx, deployment, jobs=min(jobs, 4), force=force)
    if problems:
        raise GitError(f"{len(problems)} of {len(nodes)} custom node(s) not at their pin:\n  "
                        + "\n  ".join(problems),
                        hint="`envbuild node list` shows every node's state")


def _record_archive_hashes(ctx: click.Context, config: Config, nodes: list[NodeFetch]) -> None:
    """A registry node's archive hash, seen at its first fetch, is written into envbuild.toml: from then
    on every fetch (here or on another machine) must get the same bytes."""
    from envbuild.settings.pins_edit import write_pin

    fetched = {node.name: node.sha256 for node in nodes if node.sha256}
    for pin in config.node_pins:
        if pin.from_registry and not pin.sha256 and fetched.get(pin.name) and config.source is not None:
            for line in write_pin(config.source, pin.name, pin._replace(sha256=fetched[pin.name])):
                say(ctx, line + " (the archive's hash, enforced from now on: commit it)")


def _stale_locks(deployment: Deployment) -> list[str]:
    """The listed profiles whose committed lock is not current now that the checkouts moved."""
    from envbuild.deploy.selection import profiles_to_lock
    from envbuild.lock.trust import CURRENT, UNHASHED, assess

    if not deployment.config.profiles:
        return ["the lock"]  # no profiles listed: which lock the user means is theirs to say
    return [profile.name for profile in profiles_to_lock(deployment)
            if assess(deployment, profile).state not in (CURRENT, UNHASHED)]

