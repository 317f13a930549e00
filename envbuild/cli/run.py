"""`envbuild run`: start ComfyUI in a profile's environment, with the torch guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from envbuild.cli.common import config_options, load_config, say, warn


@click.command()
@click.option("--profile", "profile_name", metavar="NAME",
              help="Whose environment (default: the first profile in envbuild.toml).")
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The environment `envbuild sync` built (default: .venv beside the ComfyUI checkout).")
@config_options
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[-- ARGS...]")
@click.pass_context
def run(ctx: click.Context, /, profile_name: str | None, venv: Path | None, args: tuple[str, ...],
        **flags: Any) -> None:
    """Run ComfyUI's main.py with the profile's venv, after checking lock and venv.

    \b
    Passes [comfyui] base-directory, listen and port from envbuild.toml as --base-directory,
    --listen and --port; ARGS after `--` go to main.py after them, so they win
    (`envbuild run -- --port 8190 --cpu`). ComfyUI starts in its checkout folder.

    \b
    Refuses a lock that no longer matches its inputs (installed a node? `envbuild lock`) and
    an environment that does not hold the lock (`envbuild sync`). ComfyUI and everything it
    starts see PIP_CONSTRAINT/UV_CONSTRAINT = locks/<profile>/constraints.txt, so
    ComfyUI-Manager's pip/uv installs cannot replace the locked torch.
    """
    from envbuild.actions import catalogue_for, default_venv
    from envbuild.comfy import launch, prepare_run, select_run_profile

    config = load_config(ctx, **flags)
    profile = select_run_profile(catalogue_for(config), config, profile_name)
    target = (Path.cwd() / venv).resolve() if venv else default_venv(config)
    plan = prepare_run(config, profile, target, args)
    for warning in plan.warnings:
        warn(warning)
    say(ctx, f"{profile.name}: starting ComfyUI with {target} (torch guard: {config.display(plan.constraints)})")
    ctx.exit(launch(plan))
