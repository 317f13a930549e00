"""The command line: parse, call one use case, print its result. Nothing else lives here.

Each command lives in its own module, imported only when that command runs (or when --help lists
it), and domain modules are imported inside the commands, so `envbuild --help` stays fast. This
module holds the only error handler: an `EnvbuildError` becomes one message and an exit code.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from envbuild import __version__

# command name -> "module:function", loaded on first use
COMMANDS: dict[str, str] = {
    "profiles": "envbuild.cli.profiles:profiles",
    "merge": "envbuild.cli.merge:merge",
    "lock": "envbuild.cli.lock:lock",
    "sync": "envbuild.cli.sync:sync",
    "manager": "envbuild.cli.manager:manager",
    "run": "envbuild.cli.run:run",
    "fetch": "envbuild.cli.fetch:fetch",
    "detect": "envbuild.cli.detect:detect",
    "doctor": "envbuild.cli.doctor:doctor",
    "verify": "envbuild.cli.verify:verify",
    "export": "envbuild.cli.export:export",
    "image": "envbuild.cli.image:image",
    "diff": "envbuild.cli.diff:diff",
    "check": "envbuild.cli.check:check",
    "init": "envbuild.cli.init:init",
    "node": "envbuild.cli.node:node",
    "generations": "envbuild.cli.generations:generations",
    "rollback": "envbuild.cli.rollback:rollback",
    "update": "envbuild.cli.update:update",
    "model": "envbuild.cli.model:model",
    "workflow": "envbuild.cli.workflow:workflow",
}


class EnvbuildGroup(click.Group):
    """Loads commands lazily and turns every envbuild error into `error: ...` and its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        from envbuild.cli.output import error
        from envbuild.core.errors import EnvbuildError

        try:
            return super().invoke(ctx)
        except EnvbuildError as exc:
            error(f"error: {exc}")
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:  # `envbuild ... | head`: the reader left; no message, like any Unix tool
            ctx.exit(141)
        except OSError as exc:  # the machine's state (a full disk, permissions), not a bug: one typed error
            from envbuild.core.errors import FileSystemError

            failure = FileSystemError.from_os_error(exc)
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            error(f"error: {failure}")
            ctx.exit(failure.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # the last line of defence: one line, the traceback only with -v
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            error(f"internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)")
            ctx.exit(70)


@click.group(cls=EnvbuildGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Show the exact uv commands (-vv: their output too).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.option("-C", "--project-dir", type=click.Path(file_okay=False, path_type=Path), default=".",
              show_default=True, help="Where to look for envbuild.toml: this folder, then the folders above it "
                   "(as uv finds pyproject.toml).")
@click.version_option(version=__version__, prog_name="envbuild")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, project_dir: Path) -> None:
    """Reproducible, hash-locked ComfyUI environments, one per GPU profile.

    \b
    Typical use:
      envbuild lock --cuda 12.6      merge ComfyUI + nodes + the cu126 profile, lock it
      envbuild sync --profile cu126  build the venv from the committed lock, check torch
    """
    if verbose and not quiet:  # logging costs start-up time: only set it up when asked to talk
        import logging

        from envbuild.core.runner import redact

        class Redacting(logging.Formatter):
            """Log lines go through the same redaction as everything printed."""

            def format(self, record: logging.LogRecord) -> str:
                return redact(super().format(record))

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(Redacting("envbuild: %(message)s"))
        logging.basicConfig(level=logging.INFO if verbose == 1 else logging.DEBUG, handlers=[handler], force=True)
    ctx.obj = {"verbose": verbose, "quiet": quiet, "project_dir": project_dir}


def main() -> None:
    """The console script. Once a command has finished, the process ends without the interpreter's
    teardown of every loaded module: it frees nothing the OS does not free at exit. Measured on this
    2-core machine (paired whole-process runs of a no-op `lock`, 21 each): ~11 % of the command's CPU
    time (~15–20 ms), where the no-op `sync` target (uv + 100 ms) is missed by ~10 ms without it.
    Everything envbuild writes is closed by then (context managers, atomic renames); the standard
    streams and logging are flushed here. Under coverage measurement the ordinary exit is taken, so
    coverage sees the CLI. An unexpected exception still takes the ordinary way out, traceback and all."""
    try:
        cli(prog_name="envbuild")
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, (int, str)) or exc.code is None else 1
    if isinstance(code, str):  # sys.exit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    if "coverage" in sys.modules:  # a measured run: let coverage write its data at the ordinary exit
        sys.exit(code or 0)
    _exit_now(code or 0)


def _exit_now(code: int) -> None:
    import os

    if "logging" in sys.modules:  # only set up with -v; flush its handlers like an ordinary exit would
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`envbuild ... | head`): nothing left to say
            code = code or 1
    os._exit(code)
