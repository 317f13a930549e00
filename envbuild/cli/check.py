"""`envbuild check`: run ComfyUI's own smoke test in a profile's venv and say what to fix."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from envbuild.cli.common import load_config, pick_profile, say

if TYPE_CHECKING:
    from envbuild.smoke import CheckResult


@click.command()
@click.option("--profile", "profile_name", metavar="NAME", help="Whose venv to check (default: as for sync).")
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The environment (default: .venv beside the ComfyUI checkout, else ./.venv).")
@click.option("--comfyui", type=click.Path(file_okay=False, path_type=Path), help="ComfyUI checkout.")
@click.option("--base-directory", type=click.Path(file_okay=False, path_type=Path),
              help="ComfyUI's --base-directory; its custom_nodes/ holds the nodes.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True, metavar="SECONDS",
              help="Give up on ComfyUI after this long.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (for CI).")
@click.pass_context
def check(ctx: click.Context, profile_name: str | None, venv: Path | None, comfyui: Path | None,
          base_directory: Path | None, timeout: float, as_json: bool) -> None:
    """Start ComfyUI with `main.py --cpu --quick-test-for-ci`: every custom node must import.

    \b
    ComfyUI exits 0 even when a node fails to import, so the log is read: a missing module
    becomes the distribution to add to extra-requirements. Exits 1 when anything failed; the
    result is saved as <venv>/envbuild-check.json.
    """
    from envbuild.actions import catalogue_for, default_venv
    from envbuild.smoke import run_check

    config = load_config(ctx, comfyui=comfyui, base_directory=base_directory)
    profile = pick_profile(ctx, config, catalogue_for(config), profile_name)
    target = (Path.cwd() / venv).resolve() if venv else default_venv(config)
    if not as_json:
        say(ctx, f"{profile.name}: running ComfyUI's quick test in {target} (up to {timeout:g} s)")
    result = run_check(config, profile, target, timeout)
    if as_json:
        click.echo(result.to_json(), nl=False)
        ctx.exit(0 if result.ok else 1)
    ctx.exit(report_check(ctx, result, timeout))


def report_check(ctx: click.Context, result: CheckResult, timeout: float = 300) -> int:
    """Print a check's verdict; the exit code to use (1 when anything failed)."""
    _print(ctx, result, timeout)
    return 0 if result.ok else 1


def _print(ctx: click.Context, result: CheckResult, timeout: float) -> None:
    if result.status == "timeout":
        click.echo(f"{result.profile}: ComfyUI did not finish its quick test within {timeout:g} s "
                   "(a node may hang at import; raise --timeout if it is only slow)", err=True)
        return
    for failure in result.failures:
        click.echo(f"  FAILED {failure.owner}: {failure.advice or failure.error}", err=True)
    nodes = f"{result.nodes_loaded} custom node{'s' if result.nodes_loaded != 1 else ''}"
    if result.ok:
        say(ctx, f"{result.profile}: ComfyUI and {nodes} load ({result.seconds:g} s)")
    else:
        failed = len(result.failures)
        click.echo(f"{result.profile}: check failed: {failed} problem{'s' if failed != 1 else ''} "
                   f"({nodes} loaded; the log tail is in {result.venv}/envbuild-check.json)", err=True)
