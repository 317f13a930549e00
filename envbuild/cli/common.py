"""Options and helpers shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from envbuild.config import Config
    from envbuild.profiles import ProfileCatalogue, TorchProfile

F = TypeVar("F", bound=Callable[..., Any])


def config_options(func: F) -> F:
    """Flags that override envbuild.toml, shared by the commands that read the inputs."""
    options = [
        click.option("--comfyui", type=click.Path(file_okay=False, path_type=Path),
                     help="ComfyUI checkout (overrides [comfyui] path)."),
        click.option("--base-directory", type=click.Path(file_okay=False, path_type=Path),
                     help="ComfyUI's --base-directory; its custom_nodes/ holds the nodes."),
        click.option("--exclude-node", "exclude_nodes", multiple=True, metavar="NAME",
                     help="Leave a custom node's requirements out (repeatable)."),
        click.option("--extra-requirements", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Another requirements file to include (repeatable)."),
        click.option("--lock-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Where the per-profile lock folders live (default: locks/)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def profile_options(func: F) -> F:
    func = click.option("--torch-source", type=click.Choice(["pytorch-index", "pypi"]),
                        help="Where the torch family comes from: the profile's PyTorch index (default), or "
                             "PyPI's own CUDA wheels (Linux x86_64 only; the profile's -pypi variant).")(func)
    func = click.option("--cuda", metavar="VERSION",
                        help="Pick the stable profile for a CUDA version, e.g. 12.6; `auto`: the one that "
                             "fits this machine (see `envbuild detect`).")(func)
    return click.option("--profile", "profile_name", metavar="NAME",
                        help="A profile by name (see `envbuild profiles`).")(func)


def load_config(ctx: click.Context, **flags: Any) -> Config:
    from envbuild.config import load_config

    config = load_config(ctx.obj["project_dir"])
    cwd = Path.cwd()

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else (cwd / path).resolve()

    return config.with_overrides(
        comfyui=absolute(flags.get("comfyui")),
        base_directory=absolute(flags.get("base_directory")),
        exclude_nodes=tuple(config.exclude_nodes) + tuple(flags.get("exclude_nodes") or ()),
        extra_requirements=tuple(config.extra_requirements)
        + tuple(absolute(p) for p in flags.get("extra_requirements") or ()),
        lock_dir=absolute(flags.get("lock_dir")),
        mirror_flags=_mirror_flags(flags),
        torch_source=flags.get("torch_source"),
    )


def _mirror_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """--mirror and friends; given on the command line, they apply in the command's own mode."""
    given = {"pytorch": flags.get("mirror"), "pypi": flags.get("pypi_mirror"),
             "pytorch-layout": flags.get("mirror_layout")}
    given = {k: v for k, v in given.items() if v}
    if given.get("pytorch") or given.get("pypi"):
        given["mode"] = flags.get("mirror_mode")
    return given


def mirror_options(mode: str) -> Callable[[F], F]:
    """Per-command mirror flags: on `lock` the lock is made through the mirror, on `sync` the
    canonical lock is installed through it (hashes checked against the lock)."""
    what = ("lock through this mirror (the lock names it)" if mode == "lock"
            else "install the committed lock through this mirror (every file checked against the lock's hashes)")

    def decorate(func: F) -> F:
        func = click.option("--mirror-layout", type=click.Choice(["tree", "flat"]),
                            help="tree: same paths as download.pytorch.org; flat: one page of wheel links "
                                 "per variant.")(func)
        func = click.option("--pypi-mirror", metavar="URL", help=f"A PyPI simple URL: {what}.")(func)
        func = click.option("--mirror", metavar="URL",
                            help=f"A base URL replacing https://download.pytorch.org/whl: {what}.")(func)
        return click.option("--mirror-mode", hidden=True, default=mode)(func)

    return decorate


def say(ctx: click.Context, message: str) -> None:
    if not ctx.obj["quiet"]:
        click.echo(message)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def pick_profile(ctx: click.Context, config: Config, catalogue: ProfileCatalogue, name: str | None) -> TorchProfile:
    """--profile NAME, `auto` (best committed lock for this machine), or the deployment's default."""
    from envbuild.actions import AUTO, LISTED_IN, committed_profiles
    from envbuild.errors import UsageError

    committed = committed_profiles(config)
    if name == AUTO:
        from envbuild.fitting import choose_committed

        profile = choose_committed(catalogue, config.lock_dir, committed)
        say(ctx, f"auto: chose {profile.name} (the best committed lock that fits this machine)")
        return profile
    if name is None:
        if config.profiles:
            return catalogue.with_source(catalogue.get(config.profiles[0], listed_in=LISTED_IN), config.torch_source)
        elif len(committed) == 1:
            name = committed[0]
        else:
            raise UsageError("which profile? pass --profile NAME (or --profile auto)",
                             hint=f"committed locks: {', '.join(committed) or 'none (run envbuild lock first)'}")
    return catalogue.with_source(catalogue.get(name), config.torch_source)
