"""`envbuild manager`: set ComfyUI-Manager up to install with uv (and as envbuild.toml's [manager] says),
and show which Manager this deployment runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.options import build_deployment
from envbuild.cli.output import say, show, warn

if TYPE_CHECKING:
    from envbuild.comfy.manager import ManagerLayout
    from envbuild.settings.config import Config

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
    """ComfyUI-Manager: which one this deployment runs, and its config.ini set for uv and the lock."""


@manager.command()
@_USER_DIRECTORY
@_where
@click.pass_context
def setup(ctx: click.Context, /, user_directory: Path | None, **flags: Any) -> None:
    """Write envbuild's keys and [manager]'s security settings into the Manager's config.ini.

    \b
    use_uv = True                 the Manager installs node requirements with `python -m uv pip`
    use_unified_resolver = False  otherwise (Manager v4.1+) every start re-resolves all nodes'
                                  requirements with torch unpinned and installs the result
    network_mode, security_level, allow_git_url_install, allow_pip_install,
    allow_flagged_nodepack_install: only those [manager] in envbuild.toml sets

    The file is found where this Manager reads it (the pip Manager of ComfyUI's
    manager_requirements.txt: <user>/__manager; a legacy clone: its own folder,
    <user>/default/ComfyUI-Manager or <user>/__manager). Every other setting, comment and line stays
    as it is; running it again changes nothing.
    """
    from envbuild.comfy.manager import lock_gaps, wanted
    from envbuild.comfy.manager import setup as setup_manager

    config = build_deployment(ctx, flags).config
    result = setup_manager(config, _absolute(user_directory))
    _describe(lambda line: say(ctx, line), config, result.layout)
    for warning in (*result.layout.warnings, *result.warnings):
        warn(warning)
    where = config.display(result.layout.config_path)
    if not result.changes:
        said = ", ".join(f"{k} = {v}" for k, v in wanted(config).items())
        say(ctx, f"{where}: already set ({said}); nothing written")
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
    """Show which Manager this deployment runs, its config.ini and whether it is set up."""
    from envbuild.comfy.layout import NO_ROUTE, manager_route
    from envbuild.comfy.manager import (
        current_values,
        describe_route,
        locate,
        lock_gaps,
        needs_setup,
        route_warnings,
        wanted,
    )

    config = build_deployment(ctx, flags).config
    route = manager_route(config)
    if route.kind == NO_ROUTE:  # a report, not an error: this deployment runs no Manager
        show(f"ComfyUI-Manager: {describe_route(config, route)}")
        return
    layout = locate(config, _absolute(user_directory))
    _describe(show, config, layout)
    values = current_values(layout)
    for warning in layout.warnings:
        warn(warning)
    if layout.route is not None:
        for warning in route_warnings(config, layout.route, values, layout.version):
            warn(warning)
    if values is None:
        show("config.ini: does not exist yet")
    else:
        for key in dict.fromkeys((*wanted(config), "security_level", "network_mode")):
            declared = f" (envbuild.toml: {config.manager_ini[key]})" if key in config.manager_ini else ""
            show(f"  {key} = {values.get(key, '(not set)')}{declared}")
    missing = needs_setup(layout, config)
    show("setup needed: run `envbuild manager setup` (" + ", ".join(missing) + ")" if missing
         else "set up for envbuild: yes")
    for gap in lock_gaps(config):
        warn(gap)


def _describe(echo: Callable[[str], Any], config: Config, layout: ManagerLayout) -> None:
    from envbuild.comfy.manager import describe_route

    if layout.route is not None:
        echo(f"ComfyUI-Manager: {describe_route(config, layout.route)}")
    else:
        version = f" {layout.version}" if layout.version else ""
        echo(f"ComfyUI-Manager{version}: {config.display(layout.manager)}")
    echo(f"config.ini: {config.display(layout.config_path)} (decided by {layout.reason})")


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else (Path.cwd() / path).resolve()
