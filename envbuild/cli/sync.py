"""`envbuild sync`: build a venv from a committed lock and prove its torch."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.options import build_deployment, mirror_options, profile_options, profile_to_use, resolve_venv
from envbuild.cli.output import error, say, show, warn

if TYPE_CHECKING:
    from envbuild.deploy.deployment import Deployment
    from envbuild.env.sync import SyncResult
    from envbuild.torch.gpu import Fit
    from envbuild.torch.profile import TorchProfile


@click.command()
@profile_options
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The environment to build (default: .venv beside the ComfyUI checkout, else ./.venv).")
@click.option("--python", metavar="VERSION|PATH", help="The interpreter uv builds the venv with.")
@click.option("--inexact", is_flag=True, help="Keep packages the lock does not list (uv removes them by default).")
@click.option("--no-verify", is_flag=True, help="Skip the torch check after installing.")
@click.option("--allow-unhashed", is_flag=True,
              help="Install even files the lock has no sha256 for (the index served none); never the default.")
@click.option("--dry-run", is_flag=True,
              help="Only say what would be installed and removed, and how much would be downloaded.")
@click.option("--check", "check", is_flag=True,
              help="Then run ComfyUI's quick test (main.py --quick-test-for-ci) and fail if any node failed.")
@mirror_options("install")
@click.option("--strict", is_flag=True, help="Refuse (instead of warning) when this machine cannot run the profile.")
@click.pass_context
def sync(ctx: click.Context, /, venv: Path | None, python: str | None, inexact: bool, no_verify: bool,
         allow_unhashed: bool, dry_run: bool, strict: bool, check: bool, **flags: Any) -> None:
    """Build the venv exactly from a committed lock (`uv sync --locked`), then check torch."""
    from envbuild.env.sync import sync_profile

    deployment = build_deployment(ctx, flags)
    profile = profile_to_use(ctx, deployment, flags)
    target = resolve_venv(deployment, venv)
    if dry_run:
        _dry_run(ctx, deployment, profile, target, inexact=inexact, allow_unhashed=allow_unhashed)
        return
    fit = _FitCheck(deployment, profile)
    if strict:
        fit.run()
        fit.report(strict=True)
    try:
        result = sync_profile(deployment, profile, target, verify=not no_verify, inexact=inexact, python=python,
                              stream=not ctx.obj["quiet"], allow_unhashed=allow_unhashed, switch=not check,
                              before_install=lambda: _start(ctx, deployment, profile, target, fit, strict))
    finally:
        if not strict:
            fit.report(strict=False)
    for note in result.notes:
        warn(note)
    built = result.generation or result.venv
    if result.torch is not None:
        say(ctx, f"{profile.name}: {result.torch.describe()} in {built}: matches the profile")
    else:
        say(ctx, f"{profile.name}: synced {built} (torch not checked)")
    for line in result.switched:
        say(ctx, f"{profile.name}: {line}")
    if check:
        _smoke_check(ctx, deployment, profile, result)


def _start(ctx: click.Context, deployment: Deployment, profile: TorchProfile, target: Path, fit: _FitCheck,
           strict: bool) -> None:
    """Said only once the lock passed every check, just before uv starts."""
    say(ctx, f"{profile.name}: syncing {target} from {deployment.display(deployment.folder(profile).path)}")
    if not strict:
        fit.start()


def _dry_run(ctx: click.Context, deployment: Deployment, profile: TorchProfile, target: Path, *, inexact: bool,
             allow_unhashed: bool) -> None:
    from envbuild.env.sync import plan_sync

    plan = plan_sync(deployment, profile, target, inexact=inexact, allow_unhashed=allow_unhashed)
    for line in plan.describe():
        show(line)


def _smoke_check(ctx: click.Context, deployment: Deployment, profile: TorchProfile, synced: SyncResult) -> None:
    """`--check`: ComfyUI's own quick test in the new generation, before the venv path is switched to it;
    any node that failed to import fails sync and leaves the venv path where it was."""
    from envbuild.cli.check import report_check
    from envbuild.env.check import run_check

    venv = synced.generation or synced.venv
    result = run_check(deployment, profile, venv,
                       before_start=lambda: say(ctx, f"{profile.name}: running ComfyUI's quick test in {venv}"))
    code = report_check(ctx, result)
    if synced.generation is not None:
        from envbuild.env.generations import current
        from envbuild.env.switch import switch_to

        if code == 0:
            for line in switch_to(deployment, synced.venv, synced.generation):
                say(ctx, f"{profile.name}: {line}")
        elif current(synced.venv) != synced.generation:
            error(f"{profile.name}: {synced.venv} was not switched: it stays on "
                  f"{_name(current(synced.venv), synced.venv)}")
    ctx.exit(code)


def _name(generation: Path | None, venv: Path) -> str:
    if generation is not None:
        return generation.name
    return "the venv made before generations" if venv.is_dir() else "nothing (it did not exist)"


class _FitCheck:
    """Can this machine run the profile? Installing a build it cannot run is allowed (images are built
    elsewhere), but said; `--strict` refuses before installing.

    Without --strict the check (GPU detection, the rule table: ~20 ms of Python) runs in a thread
    started just before uv, so it is done while uv works, and is reported after.
    """

    def __init__(self, deployment: Deployment, profile: TorchProfile) -> None:
        self.deployment, self.profile = deployment, profile
        self.reason: str | None = None  # why it cannot run (None: it can, or not known yet)
        self.error: Exception | None = None
        self.thread: threading.Thread | None = None

    def run(self) -> None:
        from envbuild.torch.fitting import fit_of

        try:
            _, fit = fit_of(self.profile, self.deployment.folder(self.profile), environ=self.deployment.env)
            self.reason = None if fit.ok else _reason(fit)
        except Exception as exc:  # reported by report(), in the main thread
            self.error = exc

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="envbuild-fit-check", daemon=True)
        self.thread.start()

    def report(self, *, strict: bool) -> None:
        from envbuild.core.errors import DetectionError, EnvbuildError

        if self.thread is not None:
            self.thread.join()
        name = self.profile.name
        if self.error is not None:
            if strict:
                raise self.error
            # Advisory without --strict: never the reason a sync fails (or hides why it failed).
            what = str(self.error) if isinstance(self.error, EnvbuildError) else repr(self.error)
            warn(f"could not tell whether this machine can run profile {name}: {what}")
        elif self.reason is not None:
            if strict:
                raise DetectionError(f"this machine cannot run profile {name}: {self.reason}",
                                     hint="see `envbuild detect`, or drop --strict to install it anyway")
            warn(f"this machine cannot run profile {name}: {self.reason} (installed anyway; --strict refuses)")


def _reason(fit: Fit) -> str:
    """In the fit-check thread: GPU detection and its sentences load there, not before uv starts (~20 ms)."""
    from envbuild.torch.gpu.explain import fit_reason

    return fit_reason(fit)

