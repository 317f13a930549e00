"""Reading files whose path someone else chose, without hanging or filling memory.

A requirements file, a node's pyproject or a path recorded in a committed fingerprint can be a
FIFO (opening it blocks until a writer comes, forever), a link to /dev/zero (reading never ends) or
simply huge. These helpers open without blocking, read only regular files, and stop at a size cap.
The errors are OSError subclasses, so a caller that already reports "cannot be read" keeps working;
callers that know the file's role turn them into their own message.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

MIB = 1024 * 1024
_CHUNK = 64 * 1024
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_BINARY", 0))


class NotARegularFileError(OSError):
    """The path names a FIFO, a device, a socket: something that is not a file's bytes."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"is {kind}, not a regular file", str(path))
        self.kind = kind
        self.reason = f"is {kind}, not a regular file"


class FileTooLargeError(OSError):
    """The file is bigger than its role allows (checked before reading, and while reading)."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(errno.EFBIG, f"is larger than {describe_size(limit)}", str(path))
        self.limit = limit
        self.reason = f"is larger than {describe_size(limit)}"


def describe_size(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB and size % MIB == 0 else f"{size} bytes"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def _open_regular(path: Path, limit: int) -> int:
    """An open descriptor of a regular file no bigger than `limit` (the caller closes it)."""
    try:  # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer
        fd = os.open(path, _OPEN_FLAGS)
    except ValueError:  # a NUL byte in the path
        raise OSError(errno.EINVAL, "the path contains a NUL byte", str(path)) from None
    try:
        mode = os.fstat(fd)
        if stat.S_ISDIR(mode.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if not stat.S_ISREG(mode.st_mode):
            raise NotARegularFileError(path, _kind(mode.st_mode))
        if mode.st_size > limit:
            raise FileTooLargeError(path, limit)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(path: Path, limit: int) -> bytes:
    """All bytes of a regular file, refusing anything else and anything over `limit` bytes.

    Raises FileNotFoundError, IsADirectoryError, NotARegularFileError, FileTooLargeError or
    another OSError. A file that grows while being read is caught too: reading stops at limit + 1.
    """
    fd = _open_regular(path, limit)
    try:
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(_CHUNK, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise FileTooLargeError(path, limit)
    finally:
        os.close(fd)
    return b"".join(chunks)


def digest_regular_file(path: Path, limit: int) -> str | None:
    """sha256 of a regular file of at most `limit` bytes; None for anything else or an unreadable path.

    Streamed, so the cap bounds time, not memory: a path from a committed (possibly hostile)
    file can name a FIFO, /dev/zero or a multi-gigabyte model, and none may stall a no-op run.
    """
    try:
        fd = _open_regular(path, limit)
    except OSError:
        return None
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := os.read(fd, _CHUNK):
            size += len(chunk)
            if size > limit:
                return None
            digest.update(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return digest.hexdigest()
