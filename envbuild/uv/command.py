"""The one module that knows how to call uv: finding it, its argv, its environment (its failure messages:
`uv_failures`).

envbuild never re-implements resolution or installation; it writes a project and asks the real
uv binary (from the `uv` package on PyPI, or PATH) to lock and sync it.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.core import runner
from envbuild.core.errors import (
    CommandFailed,
    ResolveError,
    SyncError,
    UvError,
    UvNotFoundError,
    UvVersionError,
)
from envbuild.torch.profile import canonical_name
from envbuild.uv import names
from envbuild.uv.render import UV_REQUIRED_VERSION

if TYPE_CHECKING:
    from packaging.version import Version

    from envbuild.pkgs.lockdir import LockFolder

UV_OVERRIDE_ENV = "ENVBUILD_UV"
# Variables that would point uv at another project or environment than the one we chose.
# And the cooldown, which is the deployment's ([lock] exclude-newer, rendered into the pyproject): uv lets
# UV_EXCLUDE_NEWER win over it, and `uv sync --locked` then refuses every lock (measured, uv 0.13.9).
_DROPPED_ENV = ("VIRTUAL_ENV", "CONDA_PREFIX", "UV_PROJECT", names.PROJECT_ENVIRONMENT, names.EXCLUDE_NEWER)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CHANGE_LINE = re.compile(r"^\s*(?P<op>[-+~])\s+(?P<spec>(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\S*(?:\s.*)?)$")


DEFAULT_INDEX_ENV = names.DEFAULT_INDEX


def own_index_env(folder: LockFolder) -> tuple[str, ...]:
    """uv variables to drop for a lock that names its own default index (made through a PyPI mirror)."""
    recorded = folder.read_fingerprint()
    return DEFAULT_INDEX_ENV if recorded is not None and recorded.default_index else ()


class Uv(NamedTuple):
    path: Path
    env: Mapping[str, str]  # the environment uv runs in (the deployment's, read once by the CLI)

    def base_env(self) -> dict[str, str]:
        env = dict(self.env)
        for key in _DROPPED_ENV:
            env.pop(key, None)
        return env

    def lock(
        self, project: Path, *, upgrade: bool = False, upgrade_packages: Sequence[str] = (),
        check: bool = False, offline: bool = False, stream: bool = True,
        env_set: Mapping[str, str] | None = None, env_unset: Sequence[str] = (),
    ) -> str:
        """Run `uv lock` on a generated project; returns uv's own summary line."""
        argv = [str(self.path), "lock", "--project", str(project)]
        if upgrade:
            argv.append("--upgrade")
        for name in upgrade_packages:
            argv += ["--upgrade-package", name]
        if check:
            argv.append("--check")
        if offline:
            argv.append("--offline")
        proc = self._run(argv, action="uv lock", error=ResolveError, stream=stream, env_set=env_set,
                         env_unset=env_unset)
        return _last_line(proc.stderr)

    def sync(
        self, project: Path, venv: Path, *, inexact: bool = False, python: str | None = None,
        dry_run: bool = False, stream: bool = True, reinstall_packages: Sequence[str] = (),
        frozen: bool = False, env_set: Mapping[str, str] | None = None, env_unset: Sequence[str] = (),
    ) -> str:
        """`uv sync --locked`: install exactly the lock, refuse (never re-resolve) if it is stale.

        `frozen`: install the lock's URLs as written without checking it against the pyproject (the
        caller has checked the canonical lock; this is how a lock is installed through a mirror).
        """
        mode = "--frozen" if frozen else "--locked"
        argv = [str(self.path), "sync", mode, "--project", str(project), "--no-install-project"]
        if inexact:
            argv.append("--inexact")
        if python:
            argv += ["--python", python]
        if dry_run:
            argv.append("--dry-run")
        for name in reinstall_packages:
            argv += ["--reinstall-package", name]
        env_set = {**(env_set or {}), names.PROJECT_ENVIRONMENT: str(venv)}
        proc = self._run(argv, action="uv sync", error=SyncError, stream=stream, env_set=env_set,
                         env_unset=env_unset)
        return proc.stderr

    def export(self, project: Path, *, fmt: str, offline: bool = True) -> str:
        """`uv export --frozen`: the committed lock in another format, never re-resolved; returns the text.

        `fmt` is uv's name (`requirements.txt`, `pylock.toml`). Hashes are on by default; index lines
        and the header (which names this machine's paths) are left to the caller. `offline=False` only
        lets uv download files whose hash the lock lacks (pylock needs one for every file).
        """
        argv = [str(self.path), "export", "--frozen", "--project", str(project), "--format", fmt,
                "--no-emit-project", "--no-header"]
        if offline:
            argv.append("--offline")
        return self._run(argv, action="uv export", error=UvError, stream=False).stdout

    def _run(
        self, argv: list[str], *, action: str, error: type[UvError], stream: bool,
        env_set: Mapping[str, str] | None = None, env_unset: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        env = self.base_env()
        for key in env_unset:
            env.pop(key, None)
        env.update(env_set or {})
        try:
            return runner.run(argv, env=env, env_log=env_set, capture=not stream)
        except CommandFailed as exc:
            from envbuild.uv.failures import classify_failure  # only when uv failed: its patterns cost ~3 ms

            raise classify_failure(action, exc.output_tail, error, shown=stream) from None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def find_uv(env: Mapping[str, str]) -> Path:
    """`ENVBUILD_UV`, then the binary the `uv` package ships, then PATH."""
    override = env.get(UV_OVERRIDE_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UvNotFoundError(f"{UV_OVERRIDE_ENV}={override} is not an executable file",
                                  hint=f"unset {UV_OVERRIDE_ENV} or point it at a uv binary")
        return path
    beside = _beside_interpreter()
    if beside is not None:
        return beside
    try:
        from uv import find_uv_bin  # also looks in the base prefix, user scheme and --target layouts

        return Path(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    import shutil

    found = shutil.which("uv", path=env.get("PATH"))
    if found:
        return Path(found)
    raise UvNotFoundError(
        "uv was not found (envbuild uses it to lock and install)",
        hint="install it with `python -m pip install uv`, or set ENVBUILD_UV to its path",
    )


def _beside_interpreter() -> Path | None:
    """The binary the `uv` package put next to this interpreter: a venv's or pipx's bin/ (Scripts\\ on
    Windows). The common case, found with one stat instead of `find_uv_bin`'s sysconfig lookups (~5 ms)."""
    import sys

    name = "uv.exe" if os.name == "nt" else "uv"
    candidate = Path(sys.executable).parent / name
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


@functools.lru_cache(maxsize=8)
def _probe_version(path: Path) -> Version:
    from packaging.version import InvalidVersion, Version

    try:
        proc = runner.run([str(path), "--version"], timeout=30)
    except CommandFailed as exc:
        raise UvNotFoundError(f"{path} --version failed: {exc.output_tail or exc}") from None
    except OSError as exc:
        raise UvNotFoundError(f"{path} cannot be run: {exc.strerror}") from None
    match = re.search(r"uv (\d+\.\d+\.\d+\S*)", proc.stdout)
    try:
        return Version(match.group(1)) if match else Version("0")
    except InvalidVersion:
        return Version("0")


def get_uv(env: Mapping[str, str]) -> Uv:
    """The uv to run. Its version is not probed here: uv itself enforces the `required-version` that
    every generated pyproject carries, and that refusal becomes a `UvVersionError`."""
    return Uv(find_uv(env), env)


def checked_uv(env: Mapping[str, str]) -> tuple[Uv, Version]:
    """A uv whose version was asked for and is new enough (for `doctor`)."""
    from packaging.specifiers import SpecifierSet

    path = find_uv(env)
    version = _probe_version(path)
    if version not in SpecifierSet(UV_REQUIRED_VERSION):
        raise UvVersionError(
            f"uv {version} at {path} is too old: envbuild needs uv {UV_REQUIRED_VERSION}",
            hint="upgrade it with `python -m pip install -U uv` (or unset ENVBUILD_UV)",
        )
    return Uv(path, env), version


def venv_python(venv: Path) -> Path:
    """The interpreter of a venv on this platform."""
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def package_changes(uv_output: str) -> tuple[list[str], list[str]]:
    """From uv's ` + name==ver` / ` - name==ver` lines: (installed or changed, removed and not replaced)."""
    added: dict[str, str] = {}
    removed: dict[str, str] = {}
    for raw in _ANSI.sub("", uv_output).splitlines():
        match = _CHANGE_LINE.match(raw)
        if match is None:
            continue
        name = canonical_name(match.group("name"))
        (removed if match.group("op") == "-" else added)[name] = match.group("spec").strip()
    return sorted(added.values()), [spec for name, spec in sorted(removed.items()) if name not in added]


def describe_removals(uv_output: str) -> list[str]:
    """What an exact sync removed, as lines to show the user (empty: nothing was removed)."""
    _, removed = package_changes(uv_output)
    if not removed:
        return []
    return [
        (f"sync removed {len(removed)} package(s) the lock does not list: {', '.join(removed)} "
         "(sync is exact; `envbuild sync --inexact` keeps packages the lock does not list)"),
        ("installed custom nodes since the last lock? run `envbuild lock` so their requirements are part of "
         "the lock, then `envbuild sync`"),
    ]
