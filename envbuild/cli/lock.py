"""`envbuild lock`: write locks/<profile>/ from the merged inputs, or check that it is current."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.options import (
    build_deployment,
    input_options,
    mirror_options,
    profile_options,
    profile_to_lock,
    request_of,
)
from envbuild.cli.output import error, say, warn

if TYPE_CHECKING:
    from envbuild.deploy.deployment import Deployment
    from envbuild.lock.pipeline import LockEvent, LockResult
    from envbuild.torch.profile import TorchProfile


@click.command()
@profile_options
@input_options
@click.option("--all", "all_profiles", is_flag=True,
              help="Lock every profile listed in envbuild.toml [lock] profiles (default: every profile of the "
                   "torch source).")
@click.option("--check", is_flag=True,
              help="Only check, offline and without uv, that the locks are current and trusted; exit 4 naming each "
                   "stale profile and why (5 for an edited one). For CI.")
@click.option("--upgrade", is_flag=True, help="Allow newer versions of every package.")
@click.option("--upgrade-package", multiple=True, metavar="NAME", help="Allow a newer version of one package.")
@mirror_options("lock")
@click.option("--jobs", "-j", type=click.IntRange(1, 16), default=4, show_default=True,
              help="With --all: how many profiles to lock at once.")
@click.pass_context
def lock(ctx: click.Context, /, all_profiles: bool, check: bool, upgrade: bool, upgrade_package: tuple[str, ...],
         jobs: int, **flags: Any) -> None:
    """Merge the inputs with a profile and write locks/<profile>/ (pyproject.toml + uv.lock).

    A failed lock leaves the previous lock untouched; an unchanged input set does not run uv.
    Choices that change what is locked (--comfyui, --base-directory, --exclude-node,
    --extra-requirements, --torch-source, --lock-dir, --mirror...) are written into envbuild.toml
    once the lock succeeded, so sync, run and the next lock use the same deployment.
    """
    from envbuild.core.errors import EnvbuildError, UsageError
    from envbuild.deploy.selection import profiles_to_lock
    from envbuild.lock.pipeline import refresh_locks_readme

    deployment = build_deployment(ctx, flags)
    _require_inputs(deployment)
    request = request_of(flags)
    if all_profiles and (request.profile or request.cuda):
        raise UsageError("--all locks every profile; drop --profile/--cuda")
    if check and (upgrade or upgrade_package):
        raise UsageError("--check only checks; drop --upgrade/--upgrade-package")
    targets = profiles_to_lock(deployment) if all_profiles else [profile_to_lock(ctx, deployment, flags)]
    _say_outside(deployment)
    if check:
        ctx.exit(_check_locks(ctx, deployment, targets))
    if all_profiles:
        code, changed = _lock_all(ctx, deployment, targets, jobs, upgrade, upgrade_package)
    else:
        profile = targets[0]
        from envbuild.lock.pipeline import lock_profile

        result = lock_profile(deployment, profile, upgrade=upgrade, upgrade_packages=upgrade_package,
                              stream=not ctx.obj["quiet"],
                              on_wait=lambda: warn(f"{profile.name}: waiting for another envbuild locking it"))
        _report_lock(ctx, deployment, result)
        code, changed = 0, result.status == "locked"
    try:
        refresh_locks_readme(deployment, changed=changed)
    except (OSError, EnvbuildError) as exc:  # the locks themselves are in place: said, not failed
        warn(f"{deployment.display(deployment.lock_dir / 'README.md')} was not rewritten: "
             f"{getattr(exc, 'strerror', None) or exc}")
    if code == 0:
        _persist_choices(ctx, deployment, flags)
    ctx.exit(code)


def _require_inputs(deployment: Deployment) -> None:
    """Locking needs a ComfyUI: without envbuild.toml or --comfyui there is nothing to lock (one error,
    not one per profile)."""
    from envbuild.core.errors import ConfigError

    config = deployment.config
    if config.comfyui is not None:
        return
    if config.source is None:
        raise ConfigError(None, f"no deployment here: no envbuild.toml in {config.project_dir} or a folder above "
                                "it, and no --comfyui",
                          hint="run `envbuild init` beside your ComfyUI checkout (it writes envbuild.toml), or "
                               "pass --comfyui PATH")
    raise ConfigError(config.source, "no ComfyUI checkout given",
                      hint='set [comfyui] path = "ComfyUI" in envbuild.toml, or pass --comfyui PATH')


def _say_outside(deployment: Deployment) -> None:
    """A lock folder outside the deployment's folder is allowed, but it is not committed with it: said."""
    project, lock_dir = deployment.config.project_dir.resolve(), deployment.lock_dir.resolve()
    if project != lock_dir and project not in lock_dir.parents:
        warn(f"the lock folder {lock_dir} is outside the deployment folder {project}: it is not committed with "
             "envbuild.toml unless you commit it yourself")


def _persist_choices(ctx: click.Context, deployment: Deployment, flags: dict[str, Any]) -> None:
    from envbuild.deploy.config_edit import persist_lock_choices

    for line in persist_lock_choices(deployment, flags, start_dir=ctx.obj["project_dir"]):
        say(ctx, line)


def _lock_all(ctx: click.Context, deployment: Deployment, targets: list[TorchProfile], jobs: int, upgrade: bool,
              upgrade_package: tuple[str, ...]) -> tuple[int, bool]:
    """Parallel locks with one progress line per event and a summary table; the exit code of the first failure."""
    import threading

    from envbuild.lock.pipeline import lock_many

    printing = threading.Lock()

    def progress(event: LockEvent) -> None:
        with printing:
            if event.kind == "started":
                say(ctx, f"{event.profile}: started")
            elif event.kind == "waiting":
                warn(f"{event.profile}: waiting for another envbuild locking it")
            elif event.kind == "failed":
                first = getattr(event.error, "brief", None) or str(event.error).splitlines()[0]
                error(f"{event.profile}: failed: {first}")
            elif event.result is not None:
                _report_lock(ctx, deployment, event.result)

    events = lock_many(deployment, targets, jobs=jobs, on_event=progress, upgrade=upgrade,
                       upgrade_packages=upgrade_package)
    failed = [e for e in events if e.kind == "failed" and e.error is not None]
    say(ctx, "")
    for line in _summary(events):
        say(ctx, line)
    for event in failed:
        error(f"\nerror: {event.profile}: {event.error}")
    changed = any(e.result is not None and e.result.status == "locked" for e in events)
    return (failed[0].error.exit_code if failed and failed[0].error else 0), changed


def _summary(events: list[LockEvent]) -> list[str]:
    rows = [("profile", "result", "packages", "seconds")]
    for e in events:
        if e.result is not None:
            status = "current" if e.result.status == "up-to-date" else e.result.status
            rows.append((e.profile, status, str(e.result.packages), f"{e.result.seconds:.2f}"))
        else:
            rows.append((e.profile, "FAILED", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _check_locks(ctx: click.Context, deployment: Deployment, targets: list[TorchProfile]) -> int:
    """Each lock's state in the one vocabulary; the exit code of the worst kind (edited 5, stale/missing 4)."""
    from envbuild.core.errors import LockIntegrityError, StaleLockError
    from envbuild.lock.trust import EDITED, UNHASHED, assess

    codes = []
    for profile in targets:
        found = assess(deployment, profile)
        where = deployment.display(found.folder.path)
        if found.usable:
            note = f"; {len(found.unhashed)} file(s) without sha256" if found.state == UNHASHED else ""
            say(ctx, f"{profile.name}: {found.state} ({where}{note})")
            continue
        codes.append(LockIntegrityError.exit_code if found.state == EDITED else StaleLockError.exit_code)
        why = "; ".join(found.reasons) or "no lock folder"
        error(f"{profile.name}: {found.state} ({where}): {why}")
    from envbuild.comfy.nodes import deployment_notes

    for note in deployment_notes(deployment.config, deployment.env):  # the code beside the locks
        warn(note)
    if codes:
        command = ("envbuild lock --all" if len(targets) > 1 else f"envbuild lock --profile {targets[0].name}")
        error(f"error: {len(codes)} of {len(targets)} lock(s) not current; run `{command}` and commit locks/")
    return max(codes, default=0)


def _report_lock(ctx: click.Context, deployment: Deployment, result: LockResult) -> None:
    for warning in result.warnings:
        warn(f"{result.profile}: {warning}")
    where = deployment.display(result.folder)
    if result.status == "up-to-date":
        say(ctx, f"{result.profile}: current ({where}, {result.packages} packages; uv not run)")
        return
    for line in (*result.settled, *result.notes):
        say(ctx, f"{result.profile}: {line}")
    why = f" ({'; '.join(result.reasons)})" if result.reasons else ""
    say(ctx, f"{result.profile}: locked {result.packages} packages into {where} in {result.seconds:.2f} s{why}")
