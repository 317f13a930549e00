"""Options shared by the commands, and the one place a command's settings become a `Deployment`.

`build_deployment` is the only reader of the process environment in envbuild: the deployment it
returns carries everything (envbuild.toml found from the working folder up, these flags, the
environment) and every module below takes it from there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from envbuild.deploy.deployment import Deployment
    from envbuild.deploy.selection import ProfileRequest
    from envbuild.torch.profile import TorchProfile

F = TypeVar("F", bound=Callable[..., Any])
TORCH_SOURCES = ("pytorch-index", "pypi")


def _apply(func: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def profile_options(func: F) -> F:
    """How every command names a profile: the same three flags, the same rule (`selection`)."""
    return _apply(func, [
        click.option("--profile", "profile_name", metavar="NAME",
                     help="A profile by name, any case (see `envbuild profiles`); `auto`: the one that fits this "
                          "machine."),
        click.option("--cuda", metavar="VERSION",
                     help="The stable profile for a CUDA version: 12.6, 13 (= 13.0), 12 (the newest 12.x); "
                          "`auto`: the one that fits this machine."),
        click.option("--torch-source", type=click.Choice(TORCH_SOURCES),
                     help="Where torch comes from: the profile's PyTorch index, or PyPI's own CUDA wheels (the "
                          "profile's -pypi variant, Linux x86_64). Default: [lock] torch-source, else the index."),
    ])


def input_options(func: F) -> F:
    """What goes into a lock. On `lock` these are written into envbuild.toml (as `uv add` writes
    pyproject.toml), so every later command and a teammate's clone see the same deployment."""
    return _apply(func, [
        click.option("--comfyui", type=click.Path(file_okay=False, path_type=Path),
                     help="ComfyUI checkout ([comfyui] path)."),
        click.option("--base-directory", type=click.Path(file_okay=False, path_type=Path),
                     help="ComfyUI's --base-directory; its custom_nodes/ holds the nodes ([comfyui] base-directory)."),
        click.option("--exclude-node", "exclude_nodes", multiple=True, metavar="NAME",
                     help="Leave a custom node's requirements out ([nodes] exclude; repeatable)."),
        click.option("--extra-requirements", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Another requirements file to include ([lock] extra-requirements; repeatable)."),
        click.option("--lock-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Where the per-profile lock folders live ([lock] dir; default: locks/)."),
    ])


def mirror_options(mode: str) -> Callable[[F], F]:
    """Per-command mirror flags: on `lock` the lock is made through the mirror (and the mirror is written
    into envbuild.toml); on `sync` the committed lock is installed through it (hashes checked)."""
    what = ("lock through this mirror (the lock names it; written to [mirrors])" if mode == "lock"
            else "install the committed lock through this mirror (every file checked against the lock's hashes)")

    def decorate(func: F) -> F:
        return _apply(func, [
            click.option("--mirror", metavar="URL",
                         help=f"A base URL replacing https://download.pytorch.org/whl: {what}."),
            click.option("--pypi-mirror", metavar="URL", help=f"A PyPI simple URL: {what}."),
            click.option("--mirror-layout", type=click.Choice(["tree", "flat"]),
                         help="tree: same paths as download.pytorch.org; flat: one page of wheel links per variant."),
            click.option("--mirror-mode", hidden=True, default=mode),
        ])

    return decorate


def profile_to_use(ctx: click.Context, deployment: Deployment, flags: Mapping[str, Any]) -> TorchProfile:
    """selection.profile_to_use, and `auto`'s choice said (a command that uses a committed lock)."""
    from envbuild.deploy.selection import profile_to_use as choose

    profile = choose(deployment, request_of(flags), command=command_line(ctx, flags))
    _say_auto(ctx, flags, profile, "the best committed lock that fits this machine", deployment)
    return profile


def profile_to_lock(ctx: click.Context, deployment: Deployment, flags: Mapping[str, Any]) -> TorchProfile:
    """selection.profile_to_lock, and `auto`'s choice said."""
    from envbuild.deploy.selection import profile_to_lock as choose

    profile = choose(deployment, request_of(flags))
    _say_auto(ctx, flags, profile, "the profile that fits this machine", deployment)
    return profile


def _say_auto(ctx: click.Context, flags: Mapping[str, Any], profile: TorchProfile, what: str,
              deployment: Deployment) -> None:
    from envbuild.cli.output import say
    from envbuild.deploy.selection import AUTO

    if AUTO in (flags.get("profile_name"), flags.get("cuda")):
        from envbuild.torch.fitting import candidates, ended_note

        ended = ended_note(profile, candidates(deployment.catalogue, deployment.torch_source), environ=deployment.env)
        say(ctx, f"auto: chose {profile.name}{ended} ({what})")


def request_of(flags: Mapping[str, Any]) -> ProfileRequest:
    from envbuild.deploy.selection import ProfileRequest

    return ProfileRequest(flags.get("profile_name"), flags.get("cuda"))


def build_deployment(ctx: click.Context, flags: Mapping[str, Any] | None = None) -> Deployment:
    """envbuild.toml (from -C, else the working folder, up) + this command's flags + the environment."""
    from envbuild.deploy.deployment import load_deployment

    flags = flags or {}
    cwd = Path.cwd()

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else (cwd / path).resolve()

    overrides: dict[str, Any] = {
        "comfyui": absolute(flags.get("comfyui")),
        "base_directory": absolute(flags.get("base_directory")),
        "lock_dir": absolute(flags.get("lock_dir")),
    }
    deployment = load_deployment(
        ctx.obj["project_dir"], os.environ, overrides=overrides, mirror_flags=_mirror_flags(flags),
        torch_source=flags.get("torch_source"), exclude_nodes=tuple(flags.get("exclude_nodes") or ()),
        extra_requirements=tuple(p for p in map(absolute, flags.get("extra_requirements") or ()) if p))
    from envbuild.pkgs.lockdir import UPDATE_JOURNAL

    if (deployment.lock_dir / UPDATE_JOURNAL).exists():  # one stat: a killed `update` left its journal
        from envbuild.cli.output import warn
        from envbuild.env.update import recover_interrupted

        for line in recover_interrupted(deployment):
            warn(line)
    return deployment


def _mirror_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """--mirror and friends; given on the command line, they apply in the command's own mode."""
    given = {"pytorch": flags.get("mirror"), "pypi": flags.get("pypi_mirror"),
             "pytorch-layout": flags.get("mirror_layout")}
    given = {k: v for k, v in given.items() if v}
    if given.get("pytorch") or given.get("pypi"):
        given["mode"] = flags.get("mirror_mode")
    return given


def resolve_venv(deployment: Deployment, venv: Path | None) -> Path:
    return deployment.venv(None if venv is None else Path.cwd() / venv)


def command_line(ctx: click.Context, flags: Mapping[str, Any]) -> str:
    """The command as the user would type it again (for hints): name, profile flags kept."""
    parts = [ctx.command_path]
    for flag, key in (("--profile", "profile_name"), ("--cuda", "cuda")):
        if flags.get(key):
            parts.append(f"{flag} {flags[key]}")
    return " ".join(parts)
