"""`envbuild diff`: what differs between two committed profile locks."""

from __future__ import annotations

from pathlib import Path

import click

from envbuild.cli.options import build_deployment
from envbuild.cli.output import show


@click.command()
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (stable: sorted, no paths).")
@click.pass_context
def diff(ctx: click.Context, a: str, b: str, as_json: bool) -> None:
    """Packages that differ between the committed locks of profiles A and B: only in one, another
    version, another local label (+cu126 vs +cu128) or another index. Offline; exit 0 either way.

    A and B are profile names (locks/<name>/) or paths to lock folders.
    """
    from envbuild.pkgs.diff import diff_folders, render_table

    deployment = build_deployment(ctx)
    result = diff_folders(_folder(deployment.lock_dir, a), _folder(deployment.lock_dir, b))
    show(result.to_json() if as_json else render_table(result), nl=False)


def _folder(lock_dir: Path, name: str) -> Path:
    from envbuild.core.errors import StaleLockError

    for candidate in (lock_dir / name, Path.cwd() / name):
        if (candidate / "uv.lock").is_file():
            return candidate.resolve()
    raise StaleLockError(f"no committed lock `{name}` (looked for {lock_dir / name}/uv.lock)",
                         hint=f"run `envbuild lock --profile {name}`, or pass a lock folder's path")
