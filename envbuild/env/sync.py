"""`sync`: build a venv exactly from a committed, trusted lock, and prove its torch from files.

The lock is trusted first (`trust.require_usable`: current, audited), then `uv sync --locked`
installs it, never re-resolving; through a mirror in mode "install", a copy of the lock whose URLs
point at the mirror is installed with every sha256 kept. torch is then read from the venv's files
(metadata, torch/version.py): importing a CUDA torch would cost seconds and ~800 MB.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.core.errors import LockIntegrityError, UvError, VerifyError
from envbuild.core.units import human_size
from envbuild.deploy.deployment import Deployment
from envbuild.lock.trust import require_usable
from envbuild.pkgs.lockdir import LockFolder
from envbuild.torch.profile import TorchProfile
from envbuild.uv.command import own_index_env

if TYPE_CHECKING:
    from envbuild.torch.installed import TorchBuild


class SyncResult(NamedTuple):
    profile: str
    venv: Path
    torch: TorchBuild | None
    seconds: float
    notes: tuple[str, ...] = ()  # e.g. packages an exact sync removed
    generation: Path | None = None  # where the lock was installed (None: in place, where generations are off)
    switched: tuple[str, ...] = ()  # the switch of the venv path, generations adopted or removed: to be said


def sync_profile(
    deployment: Deployment, profile: TorchProfile, venv: Path, *, verify: bool = True, inexact: bool = False,
    python: str | None = None, stream: bool = True, allow_unhashed: bool = False,
    before_install: Callable[[], None] | None = None, switch: bool = True,
) -> SyncResult:
    """`before_install`: called once the lock passed every check, just before uv starts (the CLI starts
    its GPU fit check there, so it runs while uv works instead of before it). The lock is installed
    into a generation of its own; `switch=False` leaves pointing the venv path at it to the caller
    (`sync --check` and `update` test it first)."""
    started = time.perf_counter()
    folder = deployment.folder(profile)
    require_usable(deployment, profile, allow_unhashed=allow_unhashed, then="then `envbuild sync`")
    uv = deployment.uv
    venv = venv.absolute()
    from envbuild.env.switch import finish_generation, prepare_generation

    into = prepare_generation(deployment, profile, venv)  # the lock's own generation (POSIX), else the venv
    if before_install is not None:
        before_install()
    if deployment.mirrors.installs_through:
        output = sync_through_mirror(deployment, folder, into, inexact=inexact, python=python, stream=stream)
    else:
        try:
            output = uv.sync(folder.path, into, inexact=inexact, python=python, stream=stream,
                             env_unset=own_index_env(folder))
        except UvError as exc:
            raise (_hash_mismatch(exc, folder.uv_lock.read_text(encoding="utf-8"), "the index")
                   or _partly_changed(exc, into, venv)) from None
    build = verify_venv(into, profile) if verify else None
    switched = finish_generation(deployment, profile, venv, into, switch=switch)
    from envbuild.uv.command import describe_removals

    return SyncResult(profile.name, venv, build, time.perf_counter() - started, tuple(describe_removals(output)),
                      None if into == venv else into, tuple(switched))


def sync_through_mirror(deployment: Deployment, folder: LockFolder, venv: Path, *, inexact: bool,
                        python: str | None, stream: bool) -> str:
    """Install a canonical lock through a mirror, every artifact checked against the lock's sha256.

    uv cannot do this alone (`--frozen` ignores mirror settings, `UV_INDEX` overrides break
    `--locked`): so the canonical lock is first proven current, then a copy whose URLs point at the
    mirror, hashes untouched, is installed with `--frozen`. A mirror that serves other bytes fails
    uv's hash check before anything is installed.
    """
    import logging
    import tempfile

    from envbuild.pkgs.uvlock import parse_uv_lock
    from envbuild.settings.mirrors import install_rules, rewrite_lock_text, uv_environment

    mirrors, uv = deployment.mirrors, deployment.uv
    for line in mirrors.describe():
        logging.getLogger("envbuild.settings.mirrors").info(line)
    uv.lock(folder.path, check=True, offline=True, stream=False)  # the canonical lock matches its pyproject
    lock_text = folder.uv_lock.read_text(encoding="utf-8")
    rules = install_rules(parse_uv_lock(lock_text, folder.uv_lock), mirrors, deployment.pytorch_base)
    with tempfile.TemporaryDirectory(prefix="envbuild-mirror-") as scratch:
        copy = Path(scratch)
        rewritten = rewrite_lock_text(lock_text, rules)
        (copy / "uv.lock").write_text(rewritten, encoding="utf-8")
        pyproject = folder.pyproject.read_text(encoding="utf-8")
        (copy / "pyproject.toml").write_text(rewrite_lock_text(pyproject, rules), encoding="utf-8")
        try:
            return uv.sync(copy, venv, inexact=inexact, python=python, stream=stream, frozen=True,
                           env_set=uv_environment(mirrors))
        except UvError as exc:
            raise _hash_mismatch(exc, rewritten) or exc from None


# Failure-path patterns stay strings: re compiles (and caches) them only when a sync failed.
_HASH_MISMATCH = r"Hash\s+mismatch\s+for\s+`([^`=]+)==([^`]+)`.*?Expected:\s+(\S+).*?Computed:\s+(\S+)"


def _hash_mismatch(exc: UvError, lock_text: str, server: str = "the mirror") -> LockIntegrityError | None:
    """Name the file an index or mirror served with other bytes than the lock hashed, and both hashes."""
    match = re.search(_HASH_MISMATCH, exc.uv_message, re.S)
    if match is None:
        return None
    name, version, expected, computed = match.groups()
    from envbuild.pkgs.uvlock import parse_uv_lock

    try:
        urls = [url for p in parse_uv_lock(lock_text, "uv.lock").named(name) if p.version == version for url in p.urls]
    except LockIntegrityError:  # only the message loses the URL
        urls = []
    where = f" from {urls[0]}" if len(urls) == 1 else ""
    return LockIntegrityError(
        f"hash mismatch for {name}=={version}{where}: the lock says {expected}, {server} served {computed}; "
        "nothing was installed",
        hint=f"{server} holds other bytes than the ones locked (stale or tampered): "
             + ("use another mirror" if server == "the mirror" else "do not install from it until it serves "
                                                                "the locked files again"),
    )


_CHANGED_VENV = r"^\s*(?:Uninstalled|Installed) \d+ packages? in"


def _partly_changed(exc: UvError, venv: Path, link: Path) -> UvError:
    """uv can fail an install (a malformed wheel) after it removed or replaced packages: say the venv is
    incomplete now, instead of letting the user think the old one still stands. Into a new generation,
    the venv path was never switched: say that instead."""
    from envbuild.env.generations import current

    if venv != link and current(link) != venv:
        note = f"{link} was not switched: it still points at the environment it had"
        exc.hint = f"{note}; {exc.hint}" if exc.hint else note
    elif re.search(_CHANGED_VENV, exc.uv_message, re.M):
        note = (f"uv had already changed {venv} when it failed, so it is incomplete now: fix the cause and run "
                "`envbuild sync` again")
        exc.hint = f"{note}; {exc.hint}" if exc.hint else note
    return exc


def verify_venv(venv: Path, profile: TorchProfile) -> TorchBuild:
    from envbuild.torch.installed import inspect_torch, mismatches

    build = inspect_torch(venv)
    if build is None:
        raise VerifyError(f"torch is not installed in {venv}", hint="the lock should contain torch; re-run sync")
    problems = mismatches(build, profile, torch_source=profile.torch_source)
    if problems:
        raise VerifyError("the environment does not match the profile:\n  - " + "\n  - ".join(problems),
                          hint=f"re-lock with `envbuild lock --profile {profile.name}`, then sync again")
    return build


class SyncPlan(NamedTuple):
    """What `sync --dry-run` found: the changes uv would make, and what they would download."""

    profile: str
    venv: Path
    installs: tuple[str, ...]  # "name==version", installed or replaced
    removals: tuple[str, ...]  # removed and not replaced
    download_bytes: int  # the locked files of `installs`, by the sizes uv.lock records
    unsized: tuple[str, ...]  # installs whose file size the lock does not record
    locked: int = 0  # packages in the lock, every platform's (what `lock` counts)
    platforms: int = 0  # the platforms the lock covers (its supported-markers)

    def describe(self) -> list[str]:
        if not self.installs and not self.removals:
            return [f"{self.profile}: {self.venv} already holds the lock: nothing to do"]
        sized = len(self.installs) - len(self.unsized)
        if not self.installs:
            download = "downloading nothing"
        elif not sized:  # the index gave uv no sizes: "up to 0 B" would be a wrong number
            download = "download size unknown (the index records no file sizes)"
        else:
            download = (f"downloading up to {human_size(self.download_bytes)} (less what uv's cache holds"
                        + (f"; {len(self.unsized)} file(s) of unknown size not counted)" if self.unsized else ")"))
        whole = (f" (the lock holds {self.locked} packages for its {self.platforms} platforms; a machine installs "
                 "those of its own)") if self.platforms > 1 and self.locked else ""
        lines = [f"{self.profile}: a sync of {self.venv} would install {len(self.installs)} and remove "
                 f"{len(self.removals)} package(s), {download}{whole}"]
        lines += [f"  + {spec}" for spec in self.installs]
        lines += [f"  - {spec}" for spec in self.removals]
        return lines


def plan_sync(deployment: Deployment, profile: TorchProfile, venv: Path, *, inexact: bool = False,
              allow_unhashed: bool = False) -> SyncPlan:
    """`uv sync --locked --dry-run` after the same trust check as a sync: nothing is installed."""
    from envbuild.uv.command import package_changes

    folder = deployment.folder(profile)
    require_usable(deployment, profile, allow_unhashed=allow_unhashed, then="then `envbuild sync`")
    output = deployment.uv.sync(folder.path, venv.absolute(), inexact=inexact, dry_run=True, stream=False,
                                env_unset=own_index_env(folder))
    installs, removals = package_changes(output)
    sizes = _download_sizes(folder, installs)
    unsized = tuple(spec for spec in installs if sizes.get(spec) is None)
    from envbuild.pkgs.uvlock import read_uv_lock

    lock = read_uv_lock(folder.uv_lock)
    return SyncPlan(profile.name, venv, tuple(installs), tuple(removals),
                    sum(size for size in sizes.values() if size), unsized,
                    locked=sum(1 for p in lock.packages if not p.is_root), platforms=len(lock.supported_markers))


def _download_sizes(folder: LockFolder, installs: list[str]) -> dict[str, int | None]:
    """Per `name==version`, the size of the file this interpreter's platform would install (the first
    wheel whose tags it supports, else the sdist), as uv.lock records it."""
    from urllib.parse import unquote

    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename

    from envbuild.pkgs.uvlock import read_uv_lock

    supported = {str(tag) for tag in sys_tags()}
    packages = {(p.name, p.version): p for p in read_uv_lock(folder.uv_lock).packages}
    sizes: dict[str, int | None] = {}
    for spec in installs:
        name, _, version = spec.partition("==")
        package = packages.get((str(canonicalize_name(name)), version.strip()))
        size = None
        if package is not None:
            for wheel in package.wheels:
                filename = unquote(str(wheel.location or "").rsplit("/", 1)[-1])
                try:
                    tags = parse_wheel_filename(filename)[3]
                except ValueError:
                    continue
                if any(str(tag) in supported for tag in tags):
                    size = wheel.size
                    break
            else:
                size = package.sdist.size if package.sdist is not None else None
        sizes[spec] = size
    return sizes
