"""`envbuild verify`: offline audit of committed locks (hashes, indexes, sources), for CI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.common import load_config, say

if TYPE_CHECKING:
    from envbuild.audit import AuditReport
    from envbuild.config import Config


@click.command()
@click.option("--profile", "profile_name", metavar="NAME", help="The committed lock to check.")
@click.option("--all", "all_profiles", is_flag=True, help="Check every committed lock under the lock folder.")
@click.option("--lock-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the lock folders live.")
@click.option("--allow-unhashed", is_flag=True,
              help="List files without a sha256 as warnings instead of failing on them.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def verify(ctx: click.Context, profile_name: str | None, all_profiles: bool, lock_dir: Path | None,
           allow_unhashed: bool, as_json: bool) -> None:
    """Check committed locks without network or uv: every file the profile's platforms may install
    has a sha256, and the indexes and sources still pin the torch family to the profile's index
    (and nothing else to it). Exit 1 naming each problem.

    Run it with the same ENVBUILD_PYTORCH_INDEX as the lock was made with.
    """
    import json

    from envbuild.actions import catalogue_for
    from envbuild.audit import audit_lock
    from envbuild.errors import EnvbuildError, UsageError
    from envbuild.lockdir import LockFolder

    config = load_config(ctx, lock_dir=lock_dir)
    if all_profiles and profile_name:
        raise UsageError("--all checks every committed lock; drop --profile")
    names = _committed(config) if all_profiles else [profile_name or _default_profile(config)]
    if not names:
        raise UsageError(f"no committed locks in {config.display(config.lock_dir)}",
                         hint="run `envbuild lock --all` first")
    catalogue = catalogue_for(config)
    rows: list[dict[str, Any]] = []
    for name in names:
        try:
            report = audit_lock(LockFolder(config.lock_dir, name), catalogue.get(name))
        except EnvbuildError as exc:
            if not all_profiles:
                raise
            rows.append({"profile": name, "ok": False, "error": str(exc)})
            continue
        rows.append(_row(config, report, allow_unhashed))
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
    else:
        for row in rows:
            _print_row(ctx, row)
    failed = [row["profile"] for row in rows if not row["ok"]]
    if failed:
        if not as_json:
            click.echo(f"error: {len(failed)} of {len(rows)} lock(s) failed verification: {', '.join(failed)}",
                       err=True)
        ctx.exit(1)


def _committed(config: Config) -> list[str]:
    if not config.lock_dir.is_dir():
        return []
    return sorted(p.parent.name for p in config.lock_dir.glob("*/uv.lock") if not p.parent.name.startswith("."))


def _default_profile(config: Config) -> str:
    """As `sync`: the first profile of envbuild.toml, else the only committed lock."""
    from envbuild.errors import UsageError

    committed = _committed(config)
    if config.profiles:
        return config.profiles[0]
    if len(committed) == 1:
        return committed[0]
    raise UsageError("which lock? pass --profile NAME or --all",
                     hint=f"committed locks: {', '.join(committed) or 'none (run envbuild lock first)'}")


def _row(config: Config, report: AuditReport, allow_unhashed: bool) -> dict[str, Any]:
    return {
        "profile": report.profile,
        "lock": config.display(report.folder),
        "ok": report.clean(allow_unhashed),
        "packages": report.packages,
        "artifacts": report.artifacts,
        "skipped": list(report.skipped),
        "tampering": list(report.tampering),
        "unhashed": [{"package": a.package, "version": a.version, "kind": a.kind, "filename": a.filename,
                      "location": a.location, "hash": a.hash} for a in report.unhashed],
        "unhashed_allowed": allow_unhashed,
    }


def _print_row(ctx: click.Context, row: dict[str, Any]) -> None:
    name = row["profile"]
    if "error" in row:
        click.echo(f"{name}: FAILED: {row['error']}", err=True)
        return
    if row["ok"] and not row["unhashed"]:
        say(ctx, f"{name}: ok ({row['lock']}: {row['packages']} packages, {row['artifacts']} files, all with "
                 "sha256; indexes and sources as the profile says)")
        return
    status = "ok, with warnings" if row["ok"] else "FAILED"
    click.echo(f"{name}: {status} ({row['lock']})", err=not row["ok"])
    for problem in row["tampering"]:
        click.echo(f"  edited away from the profile: {problem}", err=True)
    label = "warning: no sha256" if row["unhashed_allowed"] else "no sha256"
    for item in row["unhashed"]:
        why = "no hash" if item["hash"] is None else f"hash is not sha256 ({item['hash'].split(':', 1)[0]})"
        click.echo(f"  {label}: {item['package']} {item['version']} {item['kind']} {item['filename']} ({why})",
                   err=True)
    if row["tampering"]:
        click.echo(f"  fix: `envbuild lock --profile {name}` regenerates the folder from the profile", err=True)
    elif not row["ok"]:
        click.echo("  the index served these files without a sha256; --allow-unhashed accepts them", err=True)
