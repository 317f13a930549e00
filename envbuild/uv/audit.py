"""Can a committed lock be trusted? Every artifact hashed, and indexes and sources as the profile says.

A lock is what a fresh machine installs from, so two things must hold before anyone builds from it:
every file uv may download carries a sha256 (the PyTorch index has served files without one), and
the lock folder still routes the torch family, and only it, to the profile's index (a hand edit
that drops `explicit = true` or a source reopens the dependency confusion the profile closes).
Offline and without uv: this reads `pyproject.toml`, `uv.lock` and `envbuild-lock.json` only.
Which packages count is `audit_scope`; the checks for edits away from the profile are `audit_tampering`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote

from envbuild.core.errors import ConfigError, LockIntegrityError, StaleLockError
from envbuild.core.tomlfile import parse_toml
from envbuild.pkgs.lockdir import LockFolder
from envbuild.pkgs.uvlock import LockedPackage, LockFile, parse_uv_lock
from envbuild.torch.profile import CANONICAL_PYTORCH_BASE, TorchProfile
from envbuild.torch.torch_bound import audit_problems as torch_bound_problems
from envbuild.torch.variants import VariantGroup, builtin_groups
from envbuild.uv.audit_scope import in_scope
from envbuild.uv.audit_tampering import (
    fingerprint_problems,
    index_problems,
    lock_problems,
    override_problems,
    setting_problems,
    source_problems,
    toml_table,
)

_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Artifact:
    """A file (or source tree) uv may install, and the hash the lock records for it, if any."""

    package: str
    version: str
    kind: str  # "wheel", "sdist", "git", "source tree" or "package" (nothing recorded at all)
    location: str  # URL or path
    hash: str | None  # what the lock records: None, or a digest that is not sha256

    @property
    def filename(self) -> str:
        return unquote(self.location.rstrip("/").rsplit("/", 1)[-1])

    def describe(self) -> str:
        why = "no hash" if self.hash is None else f"hash is not sha256 ({self.hash.split(':', 1)[0]})"
        return f"{self.package} {self.version}: {self.kind} {self.filename} ({why}; {self.location})"


@dataclass(frozen=True)
class AuditReport:
    profile: str
    folder: Path
    unhashed: tuple[Artifact, ...]
    tampering: tuple[str, ...]
    packages: int  # packages audited (the root project and out-of-scope packages not counted)
    artifacts: int  # artifacts audited
    skipped: tuple[str, ...]  # "name version" of packages no profile environment can install

    def clean(self, allow_unhashed: bool = False) -> bool:
        return not self.tampering and (allow_unhashed or not self.unhashed)


# -- hashes ---------------------------------------------------------------------------------------

def package_artifacts(package: LockedPackage) -> list[Artifact]:
    """Every installable thing the lock records for a package (none for the root project)."""
    if "virtual" in package.source:
        return []  # the generated project itself: nothing is installed from it
    if "git" in package.source:
        return [Artifact(package.name, package.version, "git", package.source["git"], None)]
    for kind in ("editable", "directory"):
        if kind in package.source:
            return [Artifact(package.name, package.version, "source tree", package.source[kind], None)]
    fallback = package.source_label()
    found = [Artifact(package.name, package.version, f.kind, f.location or fallback, f.hash) for f in package.files]
    return found or [Artifact(package.name, package.version, "package", fallback, None)]


def _hashed(artifact: Artifact) -> bool:
    return artifact.hash is not None and bool(_SHA256.match(artifact.hash))


# -- the audit -------------------------------------------------------------------------------------

def audit_texts(pyproject_text: str, lock_text: str, profile: TorchProfile, *, folder: Path,
                indexes: tuple[str | None, str | None, str],
                pytorch_bases: Sequence[str] = (CANONICAL_PYTORCH_BASE,),
                variant_groups: Sequence[VariantGroup] | None = None, lock: LockFile | None = None) -> AuditReport:
    """Audit a lock given as text (pure: no files read).

    `indexes` = (torch index, default index, torch index format) the lock should name, as
    `Deployment.indexes` gives them; `pytorch_bases`: where this deployment's PyTorch indexes live;
    `variant_groups`: the deployment's (built-in ones when not given), whose overrides are expected;
    `lock`: `lock_text` already parsed (a lock just made is read once).
    """
    lock = lock or parse_uv_lock(lock_text, folder / "uv.lock")
    try:
        pyproject = parse_toml(pyproject_text, folder / "pyproject.toml")
    except ConfigError as exc:
        raise LockIntegrityError(str(exc), hint=f"re-run `envbuild lock --profile {profile.name}`") from None
    uv = toml_table(toml_table(pyproject.get("tool")).get("uv"))
    expected, default_index, index_format = indexes[:3]
    tampering = [*index_problems(uv, profile, expected, default_index, index_format),
                 *source_problems(uv, profile),
                 *setting_problems(uv, profile), *lock_problems(lock, profile, expected, pytorch_bases),
                 *override_problems(uv, pyproject, builtin_groups() if variant_groups is None else variant_groups),
                 *torch_bound_problems(lock)]
    environments = (*profile.environments, *lock.supported_markers) if profile.environments else ()
    scope = in_scope(lock, environments)
    audited = [p for p, keep in zip(lock.packages, scope, strict=True) if keep and not p.is_root]
    artifacts = [a for p in audited for a in package_artifacts(p)]
    return AuditReport(
        profile=profile.name, folder=folder, unhashed=tuple(a for a in artifacts if not _hashed(a)),
        tampering=tuple(dict.fromkeys(tampering)), packages=len(audited), artifacts=len(artifacts),
        skipped=tuple(f"{p.name} {p.version}" for p, keep in zip(lock.packages, scope, strict=True)
                      if not keep and not p.is_root),
    )


def audit_lock(folder: LockFolder, profile: TorchProfile, *, indexes: tuple[str | None, str | None, str],
               pytorch_bases: Sequence[str] = (CANONICAL_PYTORCH_BASE,),
               variant_groups: Sequence[VariantGroup] | None = None) -> AuditReport:
    """Audit a committed lock folder against its profile (through `trust`, which every command uses)."""
    if not folder.exists():
        raise StaleLockError(f"no lock for profile {profile.name} at {folder.path}",
                             hint=f"run `envbuild lock --profile {profile.name}` and commit it")
    special = folder.special_entries()
    if special:  # before anything in the folder is read
        raise LockIntegrityError(f"{folder.path}: {'; '.join(special)}: a lock folder holds plain files only",
                                 hint="restore the folder from git, or re-run "
                                      f"`envbuild lock --profile {profile.name}`")
    pyproject_text = _read_text(folder.pyproject)
    lock_text = _read_text(folder.uv_lock)
    lock = parse_uv_lock(lock_text, folder.uv_lock)
    report = audit_texts(pyproject_text, lock_text, profile, folder=folder.path, indexes=indexes,
                         pytorch_bases=pytorch_bases, variant_groups=variant_groups, lock=lock)
    return replace(report, tampering=(*report.tampering, *fingerprint_problems(folder, pyproject_text, lock_text),
                                      *constraints_problems(folder, profile, lock)))


def constraints_problems(folder: LockFolder, profile: TorchProfile, lock: LockFile) -> list[str]:
    """constraints.txt is the torch guard `run` and images point pip and uv at: it must be exactly what
    envbuild writes from this uv.lock (a missing one is written by the next `run`; an edited one is not
    envbuild's: `torch>=0` there would let a node's install replace the locked torch)."""
    from envbuild.uv.guard import constraints_text, locked_family

    try:
        text = _read_text(folder.constraints)
    except LockIntegrityError:
        return []  # absent (a lock from before the guard): nothing to compare
    if text != constraints_text(profile, locked_family(profile, lock)):
        return [f"{folder.constraints.name} is not the torch guard envbuild writes from uv.lock"]
    return []


def _read_text(path: Path) -> str:
    from envbuild.core.safeio import MIB, read_regular_file

    try:
        return read_regular_file(path, 64 * MIB).decode("utf-8")
    except FileNotFoundError:
        raise LockIntegrityError(f"{path} is missing", hint="restore it from git, or re-run `envbuild lock`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LockIntegrityError(f"{path}: {exc}", hint="restore it from git, or re-run `envbuild lock`") from None


def require_clean(report: AuditReport, *, allow_unhashed: bool = False) -> None:
    """Raise `LockIntegrityError` naming every problem; unhashed files pass with `allow_unhashed`."""
    if report.clean(allow_unhashed):
        return
    lines = [f"edited away from the profile: {t}" for t in report.tampering]
    if not allow_unhashed:
        lines.extend(f"no sha256: {a.describe()}" for a in report.unhashed)
    hints = []
    if report.tampering:
        hints.append(f"regenerate it with `envbuild lock --profile {report.profile}` and commit it")
    if report.unhashed and not allow_unhashed:
        hints.append("the index served these files without a sha256; pass --allow-unhashed to accept them anyway")
    raise LockIntegrityError(f"the lock for profile {report.profile} ({report.folder}) cannot be trusted:\n  - "
                             + "\n  - ".join(lines), hint="; ".join(hints))
