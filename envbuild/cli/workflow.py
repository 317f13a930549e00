"""`envbuild workflow import FILE`: a ComfyUI workflow's custom nodes and models pinned in envbuild.toml."""

from __future__ import annotations

from pathlib import Path

import click

from envbuild.cli.options import build_deployment
from envbuild.cli.output import say, warn


@click.group()
def workflow() -> None:
    """ComfyUI workflows: what they need, pinned."""


@workflow.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-models", is_flag=True, help="Pin only the custom nodes; download no model.")
@click.option("--jobs", "-j", type=click.IntRange(1, 16), default=4, show_default=True,
              help="How many models to download at once.")
@click.pass_context
def import_workflow_command(ctx: click.Context, file: Path, no_models: bool, jobs: int) -> None:
    """Pin what FILE needs: the UI JSON, the API JSON, or a PNG/WebP ComfyUI saved with its workflow.

    \b
    A node's cnr_id + ver becomes a Comfy Registry pin, aux_id (GitHub owner/repo) + a commit a git pin
    (comfy-core never). Each model listed with a URL is downloaded, verified (or hashed, said so) and
    pinned under [models.NAME]. Then: `envbuild fetch`, `envbuild lock`, and commit envbuild.toml and locks/.
    """
    from envbuild.cli.progress import DownloadProgress
    from envbuild.env.workflow import import_workflow

    deployment = build_deployment(ctx)
    with DownloadProgress(ctx) as progress:
        result = import_workflow(deployment, Path.cwd() / file, models=not no_models, jobs=jobs,
                                 on_progress=progress.update)
    found = result.workflow
    say(ctx, f"{file}: the {'UI' if found.kind == 'ui' else 'API'} workflow, {len(found.nodes)} node(s) of "
             f"{len(found.node_types())} type(s), {len(found.models)} model(s) with a URL")
    for line in result.config_lines:
        say(ctx, line)
    for name in result.computed:
        say(ctx, f"model {name}: the workflow gives no sha256; pinned with the one envbuild computed from the bytes "
                 "it downloaded")
    for skipped in result.skipped:
        warn(f"not pinned: {skipped}")
    if result.unprovided:
        warn(f"{len(result.unprovided)} node type(s) no pinned node provides: {', '.join(result.unprovided)} "
             "(`envbuild node add URL` pins the node that has them)")
    if not result.config_lines:
        say(ctx, "nothing new to pin")
    else:
        say(ctx, "next: `envbuild fetch` (checks out the nodes), then `envbuild lock`, and commit envbuild.toml and "
                 "locks/")
