"""`envbuild doctor`: one report, a pass/warn/fail line per link from uv to a working torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from envbuild.cli.options import build_deployment, profile_options, profile_to_lock, profile_to_use, resolve_venv
from envbuild.cli.output import show

_MARKS = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


@click.command()
@profile_options
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The environment to check (default: as for sync).")
@click.option("--no-import", is_flag=True, help="Skip importing torch (a real CUDA build takes seconds to import).")
@click.option("--no-probe", is_flag=True, help="Do not contact the indexes and mirrors.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def doctor(ctx: click.Context, /, venv: Path | None, no_import: bool, no_probe: bool, as_json: bool,
           **flags: Any) -> None:
    """Check uv, the lock, the venv, torch and this machine's driver and GPU; exit 1 if anything fails."""
    import json

    from envbuild.env.doctor import Context, exit_code, run_doctor

    deployment = build_deployment(ctx, flags)
    # Doctor reports a missing lock as a finding, so it picks the profile without requiring one; `auto`
    # means the best committed lock, as for sync.
    profile = profile_to_use(ctx, deployment, flags) if _auto(flags) else profile_to_lock(ctx, deployment, flags)
    target = resolve_venv(deployment, venv)
    checks = run_doctor(Context(deployment, profile, target), import_torch=not no_import, probe=not no_probe)
    if as_json:
        show(json.dumps({"profile": profile.name, "venv": str(target),
                         "checks": [c.__dict__ for c in checks]}, indent=2))
    else:
        show(f"profile {profile.name}, venv {target}")
        for check in checks:
            show(f"  {_MARKS[check.status]}  {check.name}: {check.detail}")
    ctx.exit(exit_code(checks))


def _auto(flags: dict[str, Any]) -> bool:
    return "auto" in (flags.get("profile_name"), flags.get("cuda"))
