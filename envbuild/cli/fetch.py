"""`envbuild fetch`: clone or update ComfyUI and ComfyUI-Manager at the refs envbuild.toml pins."""

from __future__ import annotations

import click

from envbuild.cli.options import build_deployment
from envbuild.cli.output import say


@click.command()
@click.pass_context
def fetch(ctx: click.Context) -> None:
    """Clone (or update) [comfyui] git and [manager] git into their paths, at their refs.

    \b
    Each checkout is left at its ref's commit as a detached HEAD (a branch ref: its commit now),
    and the commit is printed. A checkout with local changes to tracked files is not moved.
    After a checkout moved, `envbuild lock` records the new commits in the lock.
    """
    from envbuild.errors import UsageError
    from envbuild.gitsrc import fetch_all

    deployment = build_deployment(ctx)
    config = deployment.config
    results = fetch_all(config, deployment.env, stream=not ctx.obj["quiet"])
    if not results:
        raise UsageError("nothing to fetch: envbuild.toml sets no git source",
                         hint='add [comfyui] git = "https://github.com/Comfy-Org/ComfyUI" and ref = "v0.3.x" '
                              "(and optionally [manager] git/ref)")
    for result in results:
        where = config.display(result.path)
        short = result.commit[:12]
        if result.action == "cloned":
            say(ctx, f"{result.name}: cloned {result.url} at {result.ref} ({short}) into {where}")
        elif result.action == "updated":
            say(ctx, f"{result.name}: {where} moved from {(result.previous or '?')[:12]} to {result.ref} ({short})")
        else:
            say(ctx, f"{result.name}: {where} already at {result.ref} ({short})")
    if any(r.action != "unchanged" for r in results):
        say(ctx, "run `envbuild lock` so the lock records these commits")
