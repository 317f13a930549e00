"""The command line: parse, call one use case, print its result. Nothing else lives here.

Domain modules are imported inside the commands so `envbuild --help` stays fast, and this
module holds the only error handler: an `EnvbuildError` becomes one message and an exit code.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from envbuild.actions import LockResult
    from envbuild.config import Config

F = TypeVar("F", bound=Callable[..., Any])


class EnvbuildGroup(click.Group):
    """Turns every envbuild error into `error: ...` and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from envbuild.errors import EnvbuildError

        try:
            return super().invoke(ctx)
        except EnvbuildError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # the last line of defence: one line, the traceback only with -v
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)", err=True)
            ctx.exit(70)


@click.group(cls=EnvbuildGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Show the exact uv commands (-vv: their output too).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.option("-C", "--project-dir", type=click.Path(file_okay=False, path_type=Path), default=".",
              show_default=True, help="The deployment folder (where envbuild.toml and locks/ live).")
@click.version_option(package_name="envbuild", prog_name="envbuild")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, project_dir: Path) -> None:
    """Reproducible, hash-locked ComfyUI environments, one per GPU profile.

    \b
    Typical use:
      envbuild lock --cuda 12.6      merge ComfyUI + nodes + the cu126 profile, lock it
      envbuild sync --profile cu126  build the venv from the committed lock, check torch
    """
    level = logging.WARNING if quiet else (logging.INFO if verbose == 1 else logging.DEBUG if verbose > 1
                                           else logging.WARNING)
    logging.basicConfig(level=level, format="envbuild: %(message)s", stream=sys.stderr, force=True)
    ctx.obj = {"verbose": verbose, "quiet": quiet, "project_dir": project_dir}


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
    func = click.option("--cuda", metavar="VERSION", help="Pick the stable profile for a CUDA version, e.g. 12.6.")(func)
    return click.option("--profile", "profile_name", metavar="NAME", help="A profile by name (see `envbuild profiles`).")(func)


def _config(ctx: click.Context, **flags: Any) -> Config:
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
    )


def _say(ctx: click.Context, message: str) -> None:
    if not ctx.obj["quiet"]:
        click.echo(message)


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def profiles(ctx: click.Context, as_json: bool) -> None:
    """List the torch profiles (built-in and the deployment's own profiles/)."""
    import json

    from envbuild.actions import catalogue_for

    catalogue = catalogue_for(_config(ctx))
    rows = []
    for name in catalogue.names():
        p = catalogue.get(name)
        torch = next((str(x.specifier) for x in p.packages if x.name == "torch"), "")
        rows.append({"name": p.name, "accelerator": p.accelerator, "version": p.accelerator_version,
                     "channel": p.channel, "index": p.index_url, "torch": torch, "description": p.description})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    widths = [max(len(str(r[k] or "")) for r in rows) for k in ("name", "accelerator", "version", "torch")]
    for r in rows:
        cells = [str(r[k] or "-").ljust(w) for k, w in zip(("name", "accelerator", "version", "torch"), widths)]
        click.echo(f"{'  '.join(cells)}  {r['description']}")


@cli.command()
@profile_options
@config_options
@click.option("--explain", is_flag=True, help="Show, for every package, which file and line asked for it.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def merge(ctx: click.Context, profile_name: str | None, cuda: str | None, explain: bool, as_json: bool,
          **flags: Any) -> None:
    """Print the merged requirement set for a profile (nothing is written, uv does not run)."""
    import json

    from envbuild.actions import catalogue_for, input_warnings, select_profile
    from envbuild.inputs import merge_inputs

    config = _config(ctx, **flags)
    profile = select_profile(catalogue_for(config), config, profile=profile_name, cuda=cuda)
    merged = merge_inputs(config, profile)
    for warning in input_warnings(merged):
        _warn(warning)
    if as_json:
        click.echo(json.dumps([
            {"requirement": r.pep508(), "origins": [
                {"path": o.origin.path, "line": o.origin.line, "source": o.origin.source, "text": o.text}
                for o in r.origins]}
            for r in merged.result.requirements], indent=2))
        return
    for requirement in merged.result.requirements:
        click.echo(requirement.pep508())
        if explain:
            for item in requirement.origins:
                click.echo(f"    {item.text:<30} {item.origin}")


@cli.command()
@profile_options
@config_options
@click.option("--all", "all_profiles", is_flag=True,
              help="Lock every profile listed in envbuild.toml [lock] profiles (default: all profiles).")
@click.option("--check", is_flag=True,
              help="Only check, offline and without uv, that the locks are current; exit 1 naming each "
                   "stale profile and why. For CI.")
@click.option("--upgrade", is_flag=True, help="Allow newer versions of every package.")
@click.option("--upgrade-package", multiple=True, metavar="NAME", help="Allow a newer version of one package.")
@click.pass_context
def lock(ctx: click.Context, profile_name: str | None, cuda: str | None, all_profiles: bool, check: bool,
         upgrade: bool, upgrade_package: tuple[str, ...], **flags: Any) -> None:
    """Merge the inputs with a profile and write locks/<profile>/ (pyproject.toml + uv.lock).

    A failed lock leaves the previous lock untouched; an unchanged input set does not run uv.
    """
    from envbuild.actions import catalogue_for, lock_profile, select_profile
    from envbuild.errors import EnvbuildError, UsageError

    config = _config(ctx, **flags)
    catalogue = catalogue_for(config)
    if all_profiles:
        if profile_name or cuda:
            raise UsageError("--all locks every profile; drop --profile/--cuda")
        targets = [catalogue.get(n) for n in (config.profiles or catalogue.names())]
    else:
        targets = [select_profile(catalogue, config, profile=profile_name, cuda=cuda)]
    if check:
        if upgrade or upgrade_package:
            raise UsageError("--check only checks; drop --upgrade/--upgrade-package")
        ctx.exit(_check_locks(ctx, config, targets))
    failures = 0
    for profile in targets:
        try:
            result = lock_profile(config, profile, upgrade=upgrade, upgrade_packages=upgrade_package,
                                  stream=not ctx.obj["quiet"])
        except EnvbuildError as exc:
            if not all_profiles:
                raise
            failures += 1
            click.echo(f"error: {profile.name}: {exc}", err=True)
            continue
        _report_lock(ctx, config, result)
    if failures:
        ctx.exit(1)


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
            _say(ctx, f"{profile.name}: current ({where})")
    if stale:
        command = "envbuild lock --all" if len(targets) > 1 else f"envbuild lock --profile {targets[0].name}"
        click.echo(f"error: {stale} of {len(targets)} lock(s) out of date; run `{command}` and commit locks/",
                   err=True)
    return 1 if stale else 0


def _report_lock(ctx: click.Context, config: Config, result: LockResult) -> None:
    for warning in result.warnings:
        _warn(f"{result.profile}: {warning}")
    where = config.display(result.folder)
    if result.status == "up-to-date":
        _say(ctx, f"{result.profile}: up to date ({where}, {result.packages} packages; uv not run)")
        return
    why = f" ({'; '.join(result.reasons)})" if result.reasons else ""
    _say(ctx, f"{result.profile}: locked {result.packages} packages into {where} in {result.seconds:.2f} s{why}")


@cli.command()
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

    config = _config(ctx, lock_dir=lock_dir)
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
    _say(ctx, f"{profile.name}: syncing {target} from {config.display(config.lock_dir / profile.name)}")
    result = sync_profile(config, profile, target, verify=not no_verify, inexact=inexact, python=python,
                          stream=not ctx.obj["quiet"])
    if result.torch is not None:
        _say(ctx, f"{profile.name}: {result.torch.describe()} in {result.venv}: matches the profile")
    else:
        _say(ctx, f"{profile.name}: synced {result.venv} (torch not checked)")


def main() -> None:
    cli(prog_name="envbuild")
