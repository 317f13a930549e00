"""The one error hierarchy: every user mistake ends in one of these.

Domain code raises them; only the CLI prints them and turns them into exit codes.
Each class writes its own message, so the handler at the top stays one line.

One exit code per kind of failure, the same in every command (docs/reference/exit-codes.md, checked
against these classes by tests/test_docs.py): 1 a check the command ran found problems, 2 usage or input,
3 uv missing or too old, 4 lock missing or out of date, 5 lock cannot be trusted, 6 uv failed
(resolution, install, index), 7 the environment or machine does not hold what the lock promises, 8 git,
9 another envbuild holds the lock, 10 a file or folder cannot be read or written, 70 internal error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class EnvbuildError(Exception):
    """Base of every error envbuild reports to a user (never with a traceback)."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(EnvbuildError):
    """The user asked for something that cannot be done as asked (exit 2, like click)."""

    exit_code = 2


class ConfigError(EnvbuildError):
    """envbuild.toml (or a per-user settings file) is missing, malformed or has a wrong key."""

    exit_code = 2

    def __init__(self, path: Path | str | None, message: str, *, hint: str | None = None) -> None:
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{message}", hint=hint)
        self.path = path


class RequirementFileError(EnvbuildError):
    """A requirement file has a line envbuild cannot accept; names file and line."""

    exit_code = 2

    def __init__(
        self, path: Path | str, line: int | None, message: str, *, hint: str | None = None
    ) -> None:
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {message}", hint=hint)
        self.path = path
        self.line = line


class ConflictError(EnvbuildError):
    """Two (or more) inputs ask for versions of one package that cannot all hold."""

    exit_code = 2

    def __init__(self, package: str, details: Sequence[str], *, hint: str | None = None) -> None:
        lines = "\n".join(f"  - {d}" for d in details)
        super().__init__(f"conflicting requirements for {package}:\n{lines}", hint=hint)
        self.package = package
        self.details = tuple(details)


class ProfileError(EnvbuildError):
    """A profile is unknown, or a profile file is malformed."""

    exit_code = 2


class UvNotFoundError(EnvbuildError):
    """No usable uv binary: envbuild never re-implements it, so it cannot go on."""

    exit_code = 3


class UvVersionError(EnvbuildError):
    """The uv found is older than the settings envbuild writes need."""

    exit_code = 3


class CommandFailed(EnvbuildError):
    """A subprocess exited non-zero; carries its argv and the tail of its output."""

    def __init__(self, argv: Sequence[str], returncode: int, output_tail: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.output_tail = output_tail
        super().__init__(f"`{_short_argv(argv)}` exited with status {returncode}")


class UvError(EnvbuildError):
    """uv itself refused or failed; the message carries uv's own words."""

    exit_code = 6

    def __init__(
        self, action: str, uv_message: str, *, hint: str | None = None, shown: bool = False,
        summary: str | None = None,
    ) -> None:
        """`shown`: uv's output already streamed to the user, so the message does not repeat it."""
        text = uv_message.strip() or "(uv printed nothing)"
        headline = f"{action} failed" + (f": {summary}" if summary else "")
        if shown and uv_message.strip():
            message = f"{headline} (uv's message is above)"
        else:
            indented = "\n".join(f"  {line}" for line in text.splitlines())
            message = f"{headline}; uv said:\n{indented}"
        super().__init__(message, hint=hint)
        self.uv_message = uv_message
        self.action = action
        self.summary = summary

    @property
    def brief(self) -> str:
        """One line for progress output: uv's own reason, not its preamble."""
        if self.summary:
            return f"{self.action} failed: {self.summary}"
        lines = [line.strip(" ╰─▶│") for line in self.uv_message.splitlines() if line.strip()]
        for marker in ("Because ", "because ", "cause: ", "error: "):
            for line in lines:
                if marker in line:
                    return f"{self.action} failed: {line[line.index(marker):].removeprefix('error: ')}"
        return f"{self.action} failed"


class ResolveError(UvError):
    """`uv lock` could not resolve the merged requirements."""


class SyncError(UvError):
    """`uv sync` could not build the environment."""


class IndexUnreachableError(UvError):
    """An index or mirror did not answer (connection refused, DNS, timeout)."""


class StaleLockError(EnvbuildError):
    """A committed lock is missing or no longer matches its inputs."""

    exit_code = 4


class LockBusyError(EnvbuildError):
    """Another envbuild is writing the same lock folder and did not finish in time."""

    exit_code = 9


class LockIntegrityError(EnvbuildError):
    """A lock was edited away from its profile, or carries artifacts without hashes."""

    exit_code = 5


class VerifyError(EnvbuildError):
    """The environment was built but does not hold what the profile promises."""

    exit_code = 7


class DetectionError(EnvbuildError):
    """Machine detection could not decide, or no profile fits this machine."""

    exit_code = 7


class CheckFailed(EnvbuildError):
    """A check the command ran (ComfyUI's quick test, a doctor check) found problems; already reported."""

    exit_code = 1


def _short_argv(argv: Sequence[str]) -> str:
    return " ".join(str(a) for a in argv)


class FileSystemError(EnvbuildError):
    """A file or folder could not be read or written: a full disk, permissions, a file where a folder
    belongs. The machine's state, not a bug: said with the path and what to do, never a traceback."""

    exit_code = 10

    @classmethod
    def from_os_error(cls, exc: OSError) -> FileSystemError:
        import errno

        where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None) or "a file"
        hints = {errno.ENOSPC: "free disk space, then run the command again (what was there is untouched)",
                 errno.EDQUOT: "free disk space (a quota is full), then run the command again",
                 errno.EACCES: "check the permissions of that path", errno.EPERM: "check the permissions of that path",
                 errno.EROFS: "the file system is read-only: run where it is writable",
                 errno.ENOTDIR: "a file stands where a folder belongs: move it away",
                 errno.EEXIST: "something stands at that path already: move it away",
                 errno.EISDIR: "a folder stands where a file belongs: move it away"}
        return cls(f"{where}: {exc.strerror or exc}", hint=hints.get(exc.errno or 0))

