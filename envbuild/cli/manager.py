"""`envbuild manager`: set ComfyUI-Manager up to install with uv, and show what envbuild found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.common import config_options, load_config, say, warn

if TYPE_CHECKING:
    from envbuild.manager import ManagerLayout

_USER_DIRECTORY = click.option(
    "--user-directory", type=click.Path(file_okay=False, path_type=Path),
    help="ComfyUI's --user-directory, if you start it with one (default: <base-directory>/user, else <comfyui>/user).")


@click.group()
def manager() -> None:
    """ComfyUI-Manager: its config.ini, set for uv and for the locked environment."""


@manager.command()
@_USER_DIRECTORY
@config_options
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
    from envbuild.manager import lock_gaps
    from envbuild.manager import setup as setup_manager

    config = load_config(ctx, **flags)
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
@config_options
@click.pass_context
def status(ctx: click.Context, /, user_directory: Path | None, **flags: Any) -> None:
    """Show the Manager envbuild found, its config.ini and whether it is set up."""
    from envbuild.manager import WANTED, current_values, locate, lock_gaps, needs_setup

    config = load_config(ctx, **flags)
    layout = locate(config, _absolute(user_directory))
    _describe(click.echo, config.display, layout)
    for warning in layout.warnings:
        warn(warning)
    values = current_values(layout)
    if values is None:
        click.echo("config.ini: does not exist yet")
    else:
        for key in (*WANTED, "security_level", "network_mode"):
            click.echo(f"  {key} = {values.get(key, '(not set)')}")
    missing = needs_setup(layout)
    click.echo("setup needed: run `envbuild manager setup` (" + ", ".join(missing) + ")" if missing
               else "set up for envbuild: yes")
    for gap in lock_gaps(config):
        warn(gap)


def _describe(echo: Callable[[str], Any], display: Callable[[Path], str], layout: ManagerLayout) -> None:
    version = f" {layout.version}" if layout.version else ""
    echo(f"ComfyUI-Manager{version}: {display(layout.manager)}")
    echo(f"config.ini: {display(layout.config_path)} (decided by {layout.reason})")


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else (Path.cwd() / path).resolve()
