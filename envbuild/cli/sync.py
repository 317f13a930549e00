"""`envbuild sync`: build a venv from a committed lock and prove its torch."""

from __future__ import annotations

from pathlib import Path

import click

from envbuild.cli.common import load_config, say


@click.command()
@click.option("--profile", "profile_name", metavar="NAME", help="Which committed lock to install.")
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The environment to build (default: .venv beside the ComfyUI checkout, else ./.venv).")
@click.option("--lock-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the lock folders live.")
@click.option("--python", metavar="VERSION|PATH", help="The interpreter uv builds the venv with.")
@click.option("--inexact", is_flag=True, help="Keep packages the lock does not list (uv removes them by default).")
@click.option("--no-verify", is_flag=True, help="Skip the torch check after installing.")
@click.pass_context
def sync(ctx: click.Context, profile_name: str | None, venv: Path | None, lock_dir: Path | None,
         python: str | None, inexact: bool, no_verify: bool) -> None:
    """Build the venv exactly from a committed lock (`uv sync --locked`), then check torch."""
    from envbuild.actions import catalogue_for, committed_profiles, default_venv, sync_profile
    from envbuild.errors import UsageError

    config = load_config(ctx, lock_dir=lock_dir)
    catalogue = catalogue_for(config)
    if profile_name is None:
        committed = committed_profiles(config)
        if config.profiles:
            profile_name = config.profiles[0]
        elif len(committed) == 1:
            profile_name = committed[0]
        else:
            raise UsageError("which profile? pass --profile NAME",
                             hint=f"committed locks: {', '.join(committed) or 'none (run envbuild lock first)'}")
    profile = catalogue.get(profile_name)
    target = (Path.cwd() / venv).resolve() if venv else default_venv(config)
    say(ctx, f"{profile.name}: syncing {target} from {config.display(config.lock_dir / profile.name)}")
    result = sync_profile(config, profile, target, verify=not no_verify, inexact=inexact, python=python,
                          stream=not ctx.obj["quiet"])
    if result.torch is not None:
        say(ctx, f"{profile.name}: {result.torch.describe()} in {result.venv}: matches the profile")
    else:
        say(ctx, f"{profile.name}: synced {result.venv} (torch not checked)")
