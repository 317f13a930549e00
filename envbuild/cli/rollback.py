"""`envbuild rollback`: point the venv path back at its previous generation."""

from __future__ import annotations

from pathlib import Path

import click

from envbuild.cli.options import build_deployment, resolve_venv
from envbuild.cli.output import say, warn


@click.command()
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The venv path (default: .venv beside the ComfyUI checkout, else ./.venv).")
@click.pass_context
def rollback(ctx: click.Context, venv: Path | None) -> None:
    """Switch the venv path to the generation it pointed at before (one atomic rename).

    \b
    A second rollback switches forth again. A running ComfyUI keeps the generation it started in.
    The committed lock is not changed: when it no longer matches the generation, this says so.
    """
    from envbuild.env.switch import roll_back

    deployment = build_deployment(ctx)
    target = resolve_venv(deployment, venv)
    result = roll_back(deployment, target)
    left = result.left.describe() if result.left is not None else "?"
    say(ctx, f"rolled back {deployment.display(target)}: from {left} to {result.now.describe()}")
    if result.lock_note:
        warn(result.lock_note)
