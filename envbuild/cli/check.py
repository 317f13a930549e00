"""`envbuild check`: run ComfyUI's own smoke test in a profile's venv and say what to fix."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.options import build_deployment, profile_options, profile_to_use, resolve_venv
from envbuild.cli.output import error, say, show

if TYPE_CHECKING:
    from envbuild.env.check import CheckResult


@click.command()
@profile_options
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The environment (default: .venv beside the ComfyUI checkout, else ./.venv).")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True, metavar="SECONDS",
              help="Give up on ComfyUI after this long.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (for CI).")
@click.pass_context
def check(ctx: click.Context, /, venv: Path | None, timeout: float, as_json: bool, **flags: Any) -> None:
    """Start ComfyUI with `main.py --cpu --quick-test-for-ci`: every custom node must import.

    \b
    ComfyUI exits 0 even when a node fails to import, so the log is read: a missing module of
    ComfyUI itself means the node needs a newer ComfyUI, one of the node's own folders that its
    install step did not run, anything else the distribution to add to extra-requirements. Exits 1
    when anything failed; the result is saved as <venv>/envbuild-check.json.
    """
    from envbuild.env.check import run_check

    deployment = build_deployment(ctx, flags)
    profile = profile_to_use(ctx, deployment, flags)
    target = resolve_venv(deployment, venv)
    def announce() -> None:
        if not as_json:
            say(ctx, f"{profile.name}: running ComfyUI's quick test in {target} (up to {timeout:g} s)")

    result = run_check(deployment, profile, target, timeout, before_start=announce)
    if as_json:
        show(result.to_json(), nl=False)
        ctx.exit(0 if result.ok else 1)
    ctx.exit(report_check(ctx, result, timeout))


def report_check(ctx: click.Context, result: CheckResult, timeout: float = 300) -> int:
    """Print a check's verdict; the exit code to use (1 when anything failed)."""
    _print(ctx, result, timeout)
    return 0 if result.ok else 1


def _print(ctx: click.Context, result: CheckResult, timeout: float) -> None:
    if result.status == "timeout":
        error(f"{result.profile}: ComfyUI did not finish its quick test within {timeout:g} s "
                   "(a node may hang at import; raise --timeout if it is only slow)")
        return
    for failure in result.failures:
        error(f"  FAILED {failure.owner}: {failure.advice or failure.error}")
    nodes = f"{result.nodes_loaded} custom node{'s' if result.nodes_loaded != 1 else ''}"
    if result.ok:
        say(ctx, f"{result.profile}: ComfyUI and {nodes} load ({result.seconds:g} s)")
    else:
        failed = len(result.failures)
        error(f"{result.profile}: check failed: {failed} problem{'s' if failed != 1 else ''} "
                   f"({nodes} loaded; the log tail is in {result.venv}/envbuild-check.json)")
