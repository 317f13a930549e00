"""`envbuild update`: new refs and/or upgraded packages, locked, installed and checked before anything is swapped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from envbuild.cli.options import build_deployment, profile_options, profile_to_use, resolve_venv
from envbuild.cli.output import say, show, warn


@click.command()
@profile_options
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The venv path (default: .venv beside the ComfyUI checkout, else ./.venv).")
@click.option("--comfyui-ref", metavar="REF", help="Move ComfyUI ([comfyui] git) to this tag, branch or commit.")
@click.option("--manager-ref", metavar="REF", help="Move ComfyUI-Manager ([manager] git) to this ref.")
@click.option("--upgrade", is_flag=True, help="Allow newer versions of every package.")
@click.option("--upgrade-package", multiple=True, metavar="NAME", help="Allow a newer version of one package.")
@click.option("--no-check", is_flag=True, help="Skip ComfyUI's quick test before the switch.")
@click.option("--dry-run", is_flag=True, help="Lock into staging and show the lock diff; install and change nothing.")
@click.pass_context
def update(ctx: click.Context, /, venv: Path | None, comfyui_ref: str | None, manager_ref: str | None, upgrade: bool,
           upgrade_package: tuple[str, ...], no_check: bool, dry_run: bool, **flags: Any) -> None:
    """Update as one transaction: refs -> lock into staging -> new generation -> quick test -> switch.

    \b
    The committed lock is replaced, the venv path switched and the refs pinned in envbuild.toml
    only when all of it passed; otherwise everything stays as it was (the checkouts move back)
    and the report says what failed. `--dry-run` shows the lock diff before anything is installed.
    """
    from envbuild.cli.check import report_check
    from envbuild.env.update import update as run_update
    from envbuild.pkgs.diff import render_table
    from envbuild.settings.config import refuse_pip_manager_ref

    if manager_ref:  # a v4 ref is refused before anything else, as in envbuild.toml
        refuse_pip_manager_ref(manager_ref, "--manager-ref")
    deployment = build_deployment(ctx, flags)
    profile = profile_to_use(ctx, deployment, flags)
    target = resolve_venv(deployment, venv)
    refs = {k: v for k, v in (("comfyui", comfyui_ref), ("manager", manager_ref)) if v}
    result = run_update(deployment, profile, target, refs=refs, upgrade=upgrade, upgrade_packages=upgrade_package,
                        check=not no_check, dry_run=dry_run, stream=not ctx.obj["quiet"],
                        progress=lambda line: say(ctx, f"{profile.name}: {line}"))
    for warning in result.warnings:
        warn(warning)
    if result.diff is not None:
        show(render_table(result.diff), nl=False)
    elif result.status != "unchanged":
        show(f"{profile.name}: no committed lock yet to compare with")
    if result.status == "dry-run":
        say(ctx, f"{profile.name}: dry run: nothing installed, the committed lock and the checkouts are as they were")
        return
    if result.status == "check-failed" and result.check is not None:
        report_check(ctx, result.check)
        from envbuild.core.errors import CheckFailed

        raise CheckFailed(f"{profile.name}: update failed its check: locks/{profile.name}, {target} and "
                          "envbuild.toml are as they were (the new generation "
                          f"{result.generation.name if result.generation else '?'} is kept)")
    for line in result.said:
        say(ctx, f"{profile.name}: {line}")
    say(ctx, f"{profile.name}: {'already up to date' if result.status == 'unchanged' else 'updated'}")
