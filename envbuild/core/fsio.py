"""Writes that never leave a half-written file or folder behind.

A lock folder is what a team commits and a fresh machine builds from: a crash in the middle
of writing one must leave the previous version, not a mix of old and new.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from envbuild.core.errors import LockBusyError


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write through a temporary file in the same folder, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is wrong for files a team commits
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def refuse_foreign_file(path: Path, *, written_by_us: bytes | None, force: bool) -> None:
    """Before writing `path`: an existing file is replaced only when envbuild wrote it (it starts with
    `written_by_us`; None: no file of this kind says so) or with --force. A user's envbuild.toml or
    requirements file named by mistake as an output is never written over."""
    if force or not os.path.lexists(path):
        return
    from envbuild.core.errors import UsageError

    if not path.is_file() or path.is_symlink():
        raise UsageError(f"{path} exists and is not a plain file: envbuild does not write over it",
                         hint="choose another output path")
    if written_by_us is not None:
        with open(path, "rb") as handle:
            if handle.read(len(written_by_us)) == written_by_us:
                return
    raise UsageError(f"{path} exists and envbuild did not write it: not written over",
                     hint="choose another output path, or pass --force to replace it")


@contextlib.contextmanager
def staging_dir(parent: Path, name: str) -> Iterator[Path]:
    """A scratch folder beside the target (same filesystem, so the final rename is atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    path = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.staging-"))
    os.chmod(path, 0o777 & ~_umask())
    try:
        yield path
    finally:
        _rmtree(path, ignore_errors=True)


def remove_stale_staging(parent: Path, name: str) -> None:
    """Staging folders a killed run left behind; call only while holding the target's exclusive lock."""
    import glob

    for leftover in parent.glob(f".{glob.escape(name)}.staging-*"):
        _rmtree(leftover, ignore_errors=True)


def _umask() -> int:
    """The process umask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def replace_dir(staged: Path, target: Path) -> None:
    """Swap a fully written folder into place.

    The old folder is renamed aside first and removed only after the new one is in place;
    `recover_dir` puts it back if a crash struck between the two renames.
    """
    backup = target.with_name(f".{target.name}.previous")
    if backup.exists():
        _rmtree(backup)
    if target.exists():
        os.replace(target, backup)
    try:
        os.replace(staged, target)
    except BaseException:
        if backup.exists() and not target.exists():
            os.replace(backup, target)
        raise
    _rmtree(backup, ignore_errors=True)


def recover_dir(target: Path) -> None:
    """Restore a folder that an interrupted `replace_dir` left renamed aside."""
    backup = target.with_name(f".{target.name}.previous")
    if backup.exists():
        if target.exists():
            _rmtree(backup, ignore_errors=True)
        else:
            os.replace(backup, target)


@contextlib.contextmanager
def exclusive_lock(path: Path, *, timeout: float, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An OS-level lock on `path` (flock; msvcrt.locking on Windows), held for the block: a second envbuild
    waits for the first, `on_wait` telling the user once why nothing happens.

    The kernel drops the lock when its holder dies, so a killed run never leaves a stale lock. The lock
    belongs to the open file, so two takers in one process (threads of `lock --all`) exclude each other too.
    """
    import time

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            if on_wait is not None:
                on_wait()
            deadline = time.monotonic() + timeout
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    raise LockBusyError(f"another envbuild has held {path} for over {timeout:g} s",
                                        hint="let it finish (or stop it), then run the command again")
                time.sleep(0.1)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def _rmtree(path: Path, *, ignore_errors: bool = False) -> None:
    """shutil, imported when a folder is removed: its import (archive formats, ~3 ms) is not worth it
    on the no-op path, which removes nothing."""
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)
