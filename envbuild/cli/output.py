"""Every line envbuild prints goes through here, and through one redaction: a password in a mirror URL
(`https://bob:s3cr3t@mirror/...`) reaches neither the terminal nor a CI log."""

from __future__ import annotations

import click

from envbuild.core.runner import redact


def say(ctx: click.Context, message: str) -> None:
    """Progress and results on stdout; -q silences them."""
    if not ctx.obj["quiet"]:
        click.echo(redact(message))


def show(message: str = "", *, nl: bool = True) -> None:
    """Output that is the command's answer (tables, JSON): printed even with -q."""
    click.echo(redact(message), nl=nl)


def warn(message: str) -> None:
    click.echo(f"warning: {redact(message)}", err=True)


def error(message: str) -> None:
    click.echo(redact(message), err=True)
