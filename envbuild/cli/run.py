"""`envbuild run`: start ComfyUI in a profile's environment, with the torch guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from envbuild.cli.options import build_deployment, profile_options, profile_to_use, resolve_venv
from envbuild.cli.output import say, warn


@click.command()
@profile_options
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The environment `envbuild sync` built (default: .venv beside the ComfyUI checkout).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[-- ARGS...]")
@click.pass_context
def run(ctx: click.Context, /, venv: Path | None, args: tuple[str, ...], **flags: Any) -> None:
    """Run ComfyUI's main.py with the profile's venv, after checking lock and venv.

    \b
    Passes [comfyui] base-directory, listen and port from envbuild.toml as --base-directory,
    --listen and --port; ARGS after `--` go to main.py after them, so they win
    (`envbuild run -- --port 8190 --cpu`). ComfyUI starts in its checkout folder.

    \b
    Refuses a lock that no longer matches its inputs (installed a node? `envbuild lock`) or
    cannot be trusted, and an environment that does not hold the lock (`envbuild sync`).
    ComfyUI and everything it starts see PIP_CONSTRAINT/UV_CONSTRAINT =
    locks/<profile>/constraints.txt, so ComfyUI-Manager's pip/uv installs cannot replace the
    locked torch.
    """
    from envbuild.env.run import launch, prepare_run

    deployment = build_deployment(ctx, flags)
    profile = profile_to_use(ctx, deployment, flags)
    target = resolve_venv(deployment, venv)
    plan = prepare_run(deployment, profile, target, args)
    for warning in plan.warnings:
        warn(warning)
    say(ctx, f"{profile.name}: starting ComfyUI with {target} (torch guard: {deployment.display(plan.constraints)})")
    ctx.exit(launch(plan))
