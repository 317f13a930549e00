"""`envbuild init`: write a commented envbuild.toml for the ComfyUI checkout found here."""

from __future__ import annotations

from pathlib import Path

import click

from envbuild.cli.options import TORCH_SOURCES, build_deployment
from envbuild.cli.output import say, warn


@click.command()
@click.option("--comfyui", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The ComfyUI checkout (default: this folder if it is one, else ComfyUI/ or another folder below).")
@click.option("--base-directory", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="ComfyUI's --base-directory (default: data/ beside the checkout, if it has custom_nodes/).")
@click.option("--profile", "profile_name", metavar="NAME",
              help="The profile to lock (see `envbuild profiles`); default or `auto`: the one that fits this machine.")
@click.option("--torch-source", type=click.Choice(TORCH_SOURCES),
              help="pypi: CUDA torch from PyPI (the profile's -pypi variant; written as [lock] torch-source).")
@click.option("--mirror", metavar="URL",
              help="A base URL replacing https://download.pytorch.org/whl ([mirrors] pytorch).")
@click.option("--pypi-mirror", metavar="URL", help="A PyPI simple URL ([mirrors] pypi).")
@click.pass_context
def init(ctx: click.Context, comfyui: Path | None, base_directory: Path | None, profile_name: str | None,
         torch_source: str | None, mirror: str | None, pypi_mirror: str | None) -> None:
    """Write envbuild.toml for the ComfyUI checkout here: its nodes, the Manager, and the profile
    `envbuild detect` recommends, each setting explained. Never overwrites an existing file.

    \b
    A git checkout of ComfyUI (and a legacy Manager clone) is pinned by its origin URL and the tag at
    HEAD (else the commit), so another machine can fetch it; requires-python is one the profile's torch
    has wheels for; .gitignore gets the venv, generations, fetched checkouts, staging and exports.
    """
    from envbuild.env.init import InitOptions, init_deployment

    deployment = build_deployment(ctx)
    start = Path(ctx.obj["project_dir"]).resolve()
    options = InitOptions(profile_name, torch_source, mirror, pypi_mirror)
    found = init_deployment(start, deployment.env, deployment.catalogue, comfyui=comfyui,
                            base_directory=base_directory, options=options)
    say(ctx, f"wrote {found.path}")
    say(ctx, f"  ComfyUI: {found.comfyui}" + (f" (base directory {found.base_directory})" if found.base_directory
                                                else ""))
    say(ctx, f"  ComfyUI-Manager: {found.manager_route}")
    for warning in found.manager_warnings:
        warn(warning)
    say(ctx, f"  custom nodes: {len(found.nodes)}")
    say(ctx, f"  profile: {found.profile} ({found.why})")
    for note in found.notes:
        say(ctx, f"  {note}")
    for caution in found.warnings:
        warn(caution)
    say(ctx, "next: `envbuild lock`, commit envbuild.toml and locks/, then `envbuild sync` and `envbuild run`")
