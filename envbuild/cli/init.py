"""`envbuild init`: write a commented envbuild.toml for the ComfyUI checkout found here."""

from __future__ import annotations

from pathlib import Path

import click

from envbuild.cli.options import build_deployment
from envbuild.cli.output import say, warn


@click.command()
@click.option("--comfyui", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The ComfyUI checkout (default: this folder if it is one, else ComfyUI/ or another folder below).")
@click.option("--base-directory", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="ComfyUI's --base-directory (default: data/ beside the checkout, if it has custom_nodes/).")
@click.pass_context
def init(ctx: click.Context, comfyui: Path | None, base_directory: Path | None) -> None:
    """Write envbuild.toml for the ComfyUI checkout here: its nodes, the Manager, and the profile
    `envbuild detect` recommends, each setting explained. Never overwrites an existing file."""
    from envbuild.env.init import init_deployment

    deployment = build_deployment(ctx)
    start = Path(ctx.obj["project_dir"]).resolve()
    found = init_deployment(start, deployment.env, deployment.catalogue, comfyui=comfyui,
                            base_directory=base_directory)
    say(ctx, f"wrote {found.path}")
    say(ctx, f"  ComfyUI: {found.comfyui}" + (f" (base directory {found.base_directory})" if found.base_directory
                                                else ""))
    say(ctx, f"  ComfyUI-Manager: {found.manager_route}")
    for warning in found.manager_warnings:
        warn(warning)
    say(ctx, f"  custom nodes: {len(found.nodes)}")
    say(ctx, f"  profile: {found.profile} ({found.why})")
    say(ctx, "next: `envbuild lock`, commit envbuild.toml and locks/, then `envbuild sync` and `envbuild run`")
