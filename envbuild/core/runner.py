"""The one place envbuild starts other programs.

Every command is logged (redacted) before it runs, so `-v` shows exactly what was
executed, and a failure becomes a `CommandFailed` carrying the program's own words.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from envbuild.core.errors import CommandFailed


def _log(level: str, message: str, *args: Any) -> None:
    """Log through `logging` only once something imported it: without a handler set up (the CLI sets
    one for -v), INFO and DEBUG lines go nowhere, and importing `logging` costs every start-up ~4 ms."""
    logging = sys.modules.get("logging")
    if logging is not None:
        getattr(logging.getLogger("envbuild.core.runner"), level)(message, *args)

# user:password@ in URLs and values of *PASSWORD*/*TOKEN* variables never reach a log.
# Linear on any text: a match can only start at a literal "://", and the userinfo class stops at
# "/", so no two attempts scan the same characters (a scheme pattern before "://" made a long run
# of letters quadratic: 40 KB took 20 s). Whatever precedes "://" is kept as it is.
_CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]+@")
_SECRET_ENV = re.compile(r"(PASSWORD|TOKEN|SECRET|AUTH)", re.I)
_TAIL_LINES = 40


# A query parameter named like a secret (`?token=`, `&X-Amz-Signature=`, `?api_key=`): its value is hidden too.
_SECRET_QUERY = re.compile(r"([?&](?:[\w.-]{0,40}[_.-])?(?:token|key|apikey|secret|passw(?:or)?d|sig(?:nature)?|auth|"
                           r"credential)(?:[_.-][\w.-]{0,40})?)=[^&#\s\"'<>]+", re.I)


def redact(text: str) -> str:
    """Hide credentials embedded in URLs: a user name and password, and query parameters named like secrets."""
    return _SECRET_QUERY.sub(r"\1=***", _CREDENTIALS_IN_URL.sub("://***@", text))


def format_argv(argv: Sequence[str | os.PathLike[str]]) -> str:
    return " ".join(_quote(redact(os.fspath(a))) for a in argv)


def _quote(arg: str) -> str:
    if arg and re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    env_log: Mapping[str, str] | None = None,
    capture: bool = True,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a program; with `capture=False` its output streams to the user's terminal.

    `env` is the complete environment for the child; `env_log` names the variables
    worth showing in the log line (the ones envbuild set), secrets masked.
    """
    args = [os.fspath(a) for a in argv]
    prefix = ""
    if env_log:
        shown = " ".join(
            f"{k}={'***' if _SECRET_ENV.search(k) else redact(v)}" for k, v in sorted(env_log.items())
        )
        prefix = f"{shown} "
    where = f" (in {cwd})" if cwd else ""
    _log("info", "$ %s%s%s", prefix, format_argv(args), where)
    try:
        if capture:
            proc = subprocess.run(
                args,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
            )
        else:
            # Stream through, but keep stderr so a failure can quote uv's own message.
            proc = _run_streaming(args, cwd=cwd, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        # Keep what the program said before it was stopped: it shows where it hung.
        partial = exc.stderr or exc.stdout or ""
        if isinstance(partial, bytes):
            partial = partial.decode("utf-8", errors="replace")
        tail = output_tail(partial)
        raise CommandFailed(args, -1, f"{tail}\ntimed out after {timeout:g} s".strip()) from exc
    if proc.stdout and capture:
        _log("debug", "stdout:\n%s", proc.stdout.rstrip())
    if proc.stderr and capture:
        _log("debug", "stderr:\n%s", proc.stderr.rstrip())
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, output_tail(proc.stderr or proc.stdout or ""))
    return proc


def _run_streaming(
    args: list[str], *, cwd: Path | None, env: Mapping[str, str] | None, timeout: float | None
) -> subprocess.CompletedProcess[str]:
    """Pass stdout through untouched and tee stderr, which is where uv writes progress and errors."""
    with subprocess.Popen(
        args,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=None,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    ) as proc:
        assert proc.stderr is not None
        kept: list[str] = []
        try:
            for line in proc.stderr:
                sys.stderr.write(redact(line))  # uv's own lines, through the one redaction too
                sys.stderr.flush()
                kept.append(line)
                if len(kept) > 4 * _TAIL_LINES:
                    del kept[: len(kept) - 2 * _TAIL_LINES]
            returncode = proc.wait(timeout=timeout)
        except BaseException:
            proc.kill()
            raise
    return subprocess.CompletedProcess(args, returncode, "", "".join(kept))


def output_tail(text: str, lines: int = _TAIL_LINES) -> str:
    """The last lines of a program's output: where uv puts the reason it failed."""
    kept = text.rstrip().splitlines()[-lines:]
    return redact("\n".join(kept))
