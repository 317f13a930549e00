"""`envbuild lock`: write locks/<profile>/ from the merged inputs, or check that it is current."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.common import config_options, load_config, mirror_options, profile_options, say, warn

if TYPE_CHECKING:
    from envbuild.actions import LockResult
    from envbuild.config import Config


@click.command()
@profile_options
@config_options
@click.option("--all", "all_profiles", is_flag=True,
              help="Lock every profile listed in envbuild.toml [lock] profiles (default: all profiles).")
@click.option("--check", is_flag=True,
              help="Only check, offline and without uv, that the locks are current; exit 1 naming each "
                   "stale profile and why. For CI.")
@click.option("--upgrade", is_flag=True, help="Allow newer versions of every package.")
@click.option("--upgrade-package", multiple=True, metavar="NAME", help="Allow a newer version of one package.")
@mirror_options("lock")
@click.option("--jobs", "-j", type=click.IntRange(1, 16), default=4, show_default=True,
              help="With --all: how many profiles to lock at once.")
@click.pass_context
def lock(ctx: click.Context, /, profile_name: str | None, cuda: str | None, all_profiles: bool, check: bool,
         upgrade: bool, upgrade_package: tuple[str, ...], jobs: int, **flags: Any) -> None:
    """Merge the inputs with a profile and write locks/<profile>/ (pyproject.toml + uv.lock).

    A failed lock leaves the previous lock untouched; an unchanged input set does not run uv.
    """
    from envbuild.actions import LISTED_IN, catalogue_for, lock_profile, select_profile
    from envbuild.errors import UsageError

    config = load_config(ctx, **flags)
    catalogue = catalogue_for(config)
    if all_profiles:
        if profile_name or cuda:
            raise UsageError("--all locks every profile; drop --profile/--cuda")
        targets = [catalogue.get(n, listed_in=LISTED_IN) for n in (config.profiles or catalogue.names())]
    else:
        targets = [select_profile(catalogue, config, profile=profile_name, cuda=cuda)]
    if check:
        if upgrade or upgrade_package:
            raise UsageError("--check only checks; drop --upgrade/--upgrade-package")
        ctx.exit(_check_locks(ctx, config, targets))
    from envbuild.actions import refresh_locks_readme

    if all_profiles:
        code, changed = _lock_all(ctx, config, targets, jobs, upgrade, upgrade_package)
        refresh_locks_readme(config, changed=changed)
        ctx.exit(code)
    profile = targets[0]
    result = lock_profile(config, profile, upgrade=upgrade, upgrade_packages=upgrade_package,
                          stream=not ctx.obj["quiet"],
                          on_wait=lambda: warn(f"{profile.name}: waiting for another envbuild locking it"))
    refresh_locks_readme(config, changed=result.status == "locked")
    _report_lock(ctx, config, result)


def _lock_all(ctx: click.Context, config: Config, targets: list[Any], jobs: int, upgrade: bool,
              upgrade_package: tuple[str, ...]) -> tuple[int, bool]:
    """Parallel locks with one progress line per event and a summary table; exit 1 if any failed."""
    import threading

    from envbuild.actions import LockEvent, lock_many

    printing = threading.Lock()

    def progress(event: LockEvent) -> None:
        with printing:
            if event.kind == "started":
                say(ctx, f"{event.profile}: started")
            elif event.kind == "waiting":
                warn(f"{event.profile}: waiting for another envbuild locking it")
            elif event.kind == "failed":
                first = getattr(event.error, "brief", None) or str(event.error).splitlines()[0]
                click.echo(f"{event.profile}: failed: {first}", err=True)
            elif event.result is not None:
                _report_lock(ctx, config, event.result)

    events = lock_many(config, targets, jobs=jobs, on_event=progress, upgrade=upgrade,
                       upgrade_packages=upgrade_package)
    failed = [e for e in events if e.kind == "failed"]
    say(ctx, "")
    for line in _summary(events):
        say(ctx, line)
    for event in failed:
        click.echo(f"\nerror: {event.profile}: {event.error}", err=True)
    changed = any(e.result is not None and e.result.status == "locked" for e in events)
    return (1 if failed else 0), changed


def _summary(events: list[Any]) -> list[str]:
    rows = [("profile", "result", "packages", "seconds")]
    for e in events:
        if e.result is not None:
            rows.append((e.profile, e.result.status, str(e.result.packages), f"{e.result.seconds:.2f}"))
        else:
            rows.append((e.profile, "FAILED", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _check_locks(ctx: click.Context, config: Config, targets: list[Any]) -> int:
    from envbuild.actions import check_profile

    stale = 0
    for profile in targets:
        reasons = check_profile(config, profile)
        where = config.display(config.lock_dir / profile.name)
        if reasons:
            stale += 1
            click.echo(f"{profile.name}: stale ({where}): {'; '.join(reasons)}", err=True)
        else:
            say(ctx, f"{profile.name}: current ({where})")
    if stale:
        command = "envbuild lock --all" if len(targets) > 1 else f"envbuild lock --profile {targets[0].name}"
        click.echo(f"error: {stale} of {len(targets)} lock(s) out of date; run `{command}` and commit locks/",
                   err=True)
    return 1 if stale else 0


def _report_lock(ctx: click.Context, config: Config, result: LockResult) -> None:
    for warning in result.warnings:
        warn(f"{result.profile}: {warning}")
    where = config.display(result.folder)
    if result.status == "up-to-date":
        say(ctx, f"{result.profile}: up to date ({where}, {result.packages} packages; uv not run)")
        return
    why = f" ({'; '.join(result.reasons)})" if result.reasons else ""
    say(ctx, f"{result.profile}: locked {result.packages} packages into {where} in {result.seconds:.2f} s{why}")
