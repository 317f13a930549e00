"""`envbuild sync`: build a venv from a committed lock and prove its torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.common import load_config, mirror_options, pick_profile, say, warn

if TYPE_CHECKING:
    from envbuild.config import Config
    from envbuild.profiles import TorchProfile


@click.command()
@click.option("--profile", "profile_name", metavar="NAME",
              help="Which committed lock to install; `auto`: the best committed lock that fits this machine.")
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The environment to build (default: .venv beside the ComfyUI checkout, else ./.venv).")
@click.option("--lock-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the lock folders live.")
@click.option("--python", metavar="VERSION|PATH", help="The interpreter uv builds the venv with.")
@click.option("--inexact", is_flag=True, help="Keep packages the lock does not list (uv removes them by default).")
@click.option("--no-verify", is_flag=True, help="Skip the torch check after installing.")
@click.option("--allow-unhashed", is_flag=True,
              help="Install even files the lock has no sha256 for (the index served none); never the default.")
@click.option("--check", "check", is_flag=True,
              help="Then run ComfyUI's quick test (main.py --quick-test-for-ci) and fail if any node failed.")
@click.option("--torch-source", type=click.Choice(["pytorch-index", "pypi"]),
              help="pypi: install the profile's -pypi lock (torch from PyPI's CUDA wheels).")
@mirror_options("install")
@click.option("--strict", is_flag=True, help="Refuse (instead of warning) when this machine cannot run the profile.")
@click.pass_context
def sync(ctx: click.Context, /, profile_name: str | None, venv: Path | None, lock_dir: Path | None,
         python: str | None, inexact: bool, no_verify: bool, allow_unhashed: bool, strict: bool, check: bool,
         **mirror: Any) -> None:
    """Build the venv exactly from a committed lock (`uv sync --locked`), then check torch."""
    from envbuild.actions import catalogue_for, default_venv, sync_profile

    config = load_config(ctx, lock_dir=lock_dir, **mirror)
    catalogue = catalogue_for(config)
    profile = pick_profile(ctx, config, catalogue, profile_name)
    _check_fit(config, profile, strict)
    target = (Path.cwd() / venv).resolve() if venv else default_venv(config)
    say(ctx, f"{profile.name}: syncing {target} from {config.display(config.lock_dir / profile.name)}")
    result = sync_profile(config, profile, target, verify=not no_verify, inexact=inexact, python=python,
                          stream=not ctx.obj["quiet"], allow_unhashed=allow_unhashed)
    for note in result.notes:
        warn(note)
    if result.torch is not None:
        say(ctx, f"{profile.name}: {result.torch.describe()} in {result.venv}: matches the profile")
    else:
        say(ctx, f"{profile.name}: synced {result.venv} (torch not checked)")
    if check:
        _smoke_check(ctx, config, profile, result.venv)


def _smoke_check(ctx: click.Context, config: Config, profile: TorchProfile, venv: Path) -> None:
    """`--check`: ComfyUI's own quick test in the fresh venv; any node that failed to import fails sync."""
    from envbuild.cli.check import report_check
    from envbuild.smoke import run_check

    say(ctx, f"{profile.name}: running ComfyUI's quick test in {venv}")
    ctx.exit(report_check(ctx, run_check(config, profile, venv)))


def _check_fit(config: Config, profile: TorchProfile, strict: bool) -> None:
    """Installing a build this machine cannot run is allowed (images are built elsewhere), but said."""
    from envbuild.errors import DetectionError
    from envbuild.fitting import fit_of
    from envbuild.lockdir import LockFolder

    _, fit = fit_of(profile, LockFolder(config.lock_dir, profile.name))
    if fit.ok:
        return
    if strict:
        raise DetectionError(f"this machine cannot run profile {profile.name}: {fit.reason}",
                             hint="see `envbuild detect`, or drop --strict to install it anyway")
    warn(f"this machine cannot run profile {profile.name}: {fit.reason} (installing anyway; --strict refuses)")
