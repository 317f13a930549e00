"""`envbuild doctor`: one report, a pass/warn/fail line per link from uv to a working torch."""

from __future__ import annotations

import os
from pathlib import Path

import click

from envbuild.cli.common import load_config, pick_profile

_MARKS = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


@click.command()
@click.option("--profile", "profile_name", metavar="NAME",
              help="The profile to check (`auto`: the best committed one).")
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The environment to check (default: as for sync).")
@click.option("--no-import", is_flag=True, help="Skip importing torch (a real CUDA build takes seconds to import).")
@click.option("--no-probe", is_flag=True, help="Do not contact the indexes and mirrors.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def doctor(ctx: click.Context, profile_name: str | None, venv: Path | None, no_import: bool, no_probe: bool,
           as_json: bool) -> None:
    """Check uv, the lock, the venv, torch and this machine's driver and GPU; exit 1 if anything fails."""
    import json

    from envbuild.actions import catalogue_for, default_venv
    from envbuild.doctor import Context, exit_code, run_doctor

    config = load_config(ctx)
    profile = pick_profile(ctx, config, catalogue_for(config), profile_name)
    target = (Path.cwd() / venv).resolve() if venv else default_venv(config)
    checks = run_doctor(Context(config, profile, target, os.environ), import_torch=not no_import,
                        probe=not no_probe)
    if as_json:
        click.echo(json.dumps({"profile": profile.name, "venv": str(target),
                               "checks": [c.__dict__ for c in checks]}, indent=2))
    else:
        click.echo(f"profile {profile.name}, venv {target}")
        for check in checks:
            click.echo(f"  {_MARKS[check.status]}  {check.name}: {check.detail}")
    ctx.exit(exit_code(checks))
