"""`envbuild manager`: set ComfyUI-Manager up to install with uv, and show what envbuild found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.options import build_deployment
from envbuild.cli.output import say, show, warn

if TYPE_CHECKING:
    from envbuild.comfy.manager import ManagerLayout

_USER_DIRECTORY = click.option(
    "--user-directory", type=click.Path(file_okay=False, path_type=Path),
    help="ComfyUI's --user-directory, if you start it with one (default: <base-directory>/user, else <comfyui>/user).")


def _where(func: Any) -> Any:
    """Where the Manager is (default: from envbuild.toml); these flags only locate it, nothing is locked."""
    func = click.option("--base-directory", type=click.Path(file_okay=False, path_type=Path),
                        help="ComfyUI's --base-directory (default: [comfyui] base-directory).")(func)
    return click.option("--comfyui", type=click.Path(file_okay=False, path_type=Path),
                        help="ComfyUI checkout (default: [comfyui] path).")(func)


@click.group()
def manager() -> None:
    """ComfyUI-Manager: its config.ini, set for uv and for the locked environment."""


@manager.command()
@_USER_DIRECTORY
@_where
@click.pass_context
def setup(ctx: click.Context, /, user_directory: Path | None, **flags: Any) -> None:
    """Write `use_uv = True` and `use_unified_resolver = False` into the Manager's config.ini.

    \b
    use_uv = True                 the Manager installs node requirements with `python -m uv pip`
    use_unified_resolver = False  otherwise (Manager v4.1+) every start re-resolves all nodes'
                                  requirements with torch unpinned and installs the result

    The file is found where this Manager version reads it (its own folder, <user>/default/ComfyUI-Manager
    or <user>/__manager). Every other setting, comment and line stays as it is; running it again
    changes nothing.
    """
    from envbuild.comfy.manager import lock_gaps
    from envbuild.comfy.manager import setup as setup_manager

    config = build_deployment(ctx, flags).config
    result = setup_manager(config, _absolute(user_directory))
    _describe(lambda line: say(ctx, line), config.display, result.layout)
    for warning in result.layout.warnings:
        warn(warning)
    where = config.display(result.layout.config_path)
    if not result.changes:
        say(ctx, f"{where}: already set (use_uv = True, use_unified_resolver = False); nothing written")
    for change in result.changes:
        was = "not set" if change.old is None else change.old
        say(ctx, f"{where}: {'created with ' if result.created else ''}{change.key} = {change.new} (was: {was})")
    for gap in lock_gaps(config):
        warn(gap)
    say(ctx, "start ComfyUI with `envbuild run` (the torch guard applies to the Manager's installs); "
             "after installing nodes, `envbuild lock` then `envbuild sync`")


@manager.command()
@_USER_DIRECTORY
@_where
@click.pass_context
def status(ctx: click.Context, /, user_directory: Path | None, **flags: Any) -> None:
    """Show the Manager envbuild found, its config.ini and whether it is set up."""
    from envbuild.comfy.manager import WANTED, current_values, locate, lock_gaps, needs_setup

    config = build_deployment(ctx, flags).config
    layout = locate(config, _absolute(user_directory))
    _describe(show, config.display, layout)
    for warning in layout.warnings:
        warn(warning)
    values = current_values(layout)
    if values is None:
        show("config.ini: does not exist yet")
    else:
        for key in (*WANTED, "security_level", "network_mode"):
            show(f"  {key} = {values.get(key, '(not set)')}")
    missing = needs_setup(layout)
    show("setup needed: run `envbuild manager setup` (" + ", ".join(missing) + ")" if missing
               else "set up for envbuild: yes")
    for gap in lock_gaps(config):
        warn(gap)


def _describe(echo: Callable[[str], Any], display: Callable[[Path], str], layout: ManagerLayout) -> None:
    version = f" {layout.version}" if layout.version else ""
    echo(f"ComfyUI-Manager{version}: {display(layout.manager)}")
    echo(f"config.ini: {display(layout.config_path)} (decided by {layout.reason})")


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else (Path.cwd() / path).resolve()
