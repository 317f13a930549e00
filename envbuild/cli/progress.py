"""Download progress: rich's bars (rate, ETA) on a terminal, a few plain lines in CI logs and pipes.

rich is imported only when a download starts, so `envbuild --help` and every command that downloads
nothing never pay for it.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import click

from envbuild.core.runner import redact
from envbuild.core.units import human_size


class DownloadProgress:
    """A context manager whose `update(name, done, total)` is safe to call from download threads."""

    def __init__(self, ctx: click.Context) -> None:
        self.quiet = bool(ctx.obj.get("quiet"))
        import sys

        stream = sys.stderr
        self.terminal = not self.quiet and stream.isatty()
        self._lock = threading.Lock()
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}
        self._said: dict[str, tuple[float, int]] = {}  # plain mode: when and at what tenth it last spoke

    def __enter__(self) -> DownloadProgress:
        if self.terminal:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), transient=False)
            self._rich.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()

    def update(self, name: str, done: int, total: int | None) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._rich is not None:
                task = self._tasks.get(name)
                if task is None:
                    task = self._tasks[name] = self._rich.add_task(redact(name), total=total)
                self._rich.update(task, completed=done, total=total)
                return
            now = time.monotonic()
            tenth = done * 10 // total if total else 0
            last = self._said.get(name)
            if last is None or tenth > last[1] or now - last[0] >= 30:
                self._said[name] = (now, tenth)
                share = f" of {human_size(total)} ({done * 100 // total} %)" if total else ""
                click.echo(f"model {redact(name)}: {human_size(done)}{share}", err=True)
