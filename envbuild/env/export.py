"""Exports of a committed lock for tools that do not read uv.lock: pip and PEP 751 installers.

Both come from the real `uv export --frozen`, so nothing is ever re-resolved: the export lists
exactly the locked files with their hashes. A lock that fails the audit (edited indexes, files
without a sha256) is not exported, since an export would carry the problem where no check sees it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from envbuild.core.errors import UsageError
from envbuild.core.fsio import atomic_write, refuse_foreign_file
from envbuild.deploy.deployment import Deployment
from envbuild.lock.trust import require_usable
from envbuild.pkgs.lockdir import LockFolder
from envbuild.pkgs.uvlock import read_uv_lock
from envbuild.torch.profile import PYPI_SIMPLE, TorchProfile

# envbuild's format name -> uv's
FORMATS: Mapping[str, str] = {"requirements": "requirements.txt", "pylock": "pylock.toml"}
_PYLOCK_NAME = re.compile(r"^pylock\.([^.]+)\.toml$")  # PEP 751; uv refuses any other name
_REQUIREMENT_LINE = re.compile(r"^[A-Za-z0-9]")


@dataclass(frozen=True)
class ExportResult:
    profile: str
    format: str
    text: str
    packages: int
    unhashed: int  # files exported without a sha256 (only with allow_unhashed)


def default_filename(profile: str, fmt: str) -> str:
    """`pylock.<profile>.toml` (PEP 751: no dots in the name, so rocm6.3 → rocm6-3), `requirements-<profile>.txt`."""
    if fmt == "pylock":
        return f"pylock.{profile.replace('.', '-')}.toml"
    return f"requirements-{profile}.txt"


def check_output_name(path: Path, fmt: str) -> None:
    if fmt == "pylock" and not _PYLOCK_NAME.match(path.name):
        raise UsageError(f"`{path.name}` is not a PEP 751 lock file name; installers refuse it",
                         hint="name it pylock.toml or pylock.<name>.toml (no dots in <name>)")


def export_lock(deployment: Deployment, profile: TorchProfile, fmt: str, *,
                allow_unhashed: bool = False) -> ExportResult:
    """Trust the lock (`trust.require_usable`, as sync does), then have uv export it.

    uv is looked for only once the lock is trusted: a lock that cannot be trusted is reported even without uv.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format `{fmt}`", hint=f"use one of: {', '.join(FORMATS)}")
    folder = deployment.folder(profile)
    shown_as = deployment.display(folder.uv_lock)  # no machine paths in the header
    found = require_usable(deployment, profile, allow_unhashed=allow_unhashed)
    # Only a pylock export of a lock with hash-less files needs the network: uv downloads them to hash them.
    body = deployment.uv.export(folder.path, fmt=FORMATS[fmt], offline=not (allow_unhashed and found.unhashed))
    if fmt == "requirements":
        text = _requirements_header(profile, shown_as, folder) + body
        packages = sum(1 for line in body.splitlines() if _REQUIREMENT_LINE.match(line))
    else:
        text = _pylock_header(profile, shown_as) + body
        packages = body.count("[[packages]]")
    return ExportResult(profile.name, fmt, text, packages, len(found.unhashed))


EXPORT_MARK = b"# Exported by envbuild from "  # the first bytes of every export: one may be written over


def check_output(path: Path, fmt: str, lock_dir: Path, *, force: bool = False) -> None:
    """Where an export may be written, checked before uv runs: a name of its format, never inside the lock
    folder (a file there is committed lock data: `-o locks/cu126/uv.lock` would replace the lock), and
    never over a file envbuild did not write (envbuild.toml, a requirements file) without --force."""
    check_output_name(path, fmt)
    target, locks = path.resolve(), lock_dir.resolve()
    if target == locks or locks in target.parents:
        raise UsageError(f"{path} is inside the lock folder {lock_dir}: an export never writes there",
                         hint="write it elsewhere, e.g. `-o requirements-cu126.txt` in the deployment folder")
    refuse_foreign_file(path, written_by_us=EXPORT_MARK, force=force)


def write_export(result: ExportResult, path: Path, lock_dir: Path, *, force: bool = False) -> Path:
    """Write the export where `check_output` allows it."""
    check_output(path, result.format, lock_dir, force=force)
    atomic_write(path, result.text)
    return path


def _requirements_header(profile: TorchProfile, shown_as: str, folder: LockFolder) -> str:
    """Comments, then the index lines pip needs, taken from the lock rather than this machine's settings."""
    lines = [
        f"# Exported by envbuild from {shown_as} (profile {profile.name}); do not edit, export again.",
        "# Install: pip install --no-deps --require-hashes -r <this file>",
        "# (--no-deps: this file is the whole resolution; envbuild drops some dependencies' requirements on",
        "# purpose, e.g. a second cv2 build, and pip would otherwise go and fetch them)",
    ]
    default, extra = _registries(folder, profile)
    if extra:
        lines += ["# A requirements file cannot pin a package to an index: pip searches the index below for",
                  "# every package, so one published on both may come from either (the hashes still pin the file)."]
    if default is not None and default != PYPI_SIMPLE:
        lines.append(f"--index-url {default}")
    lines.extend(f"--extra-index-url {url}" for url in extra)
    return "\n".join(lines) + "\n\n"


def _pylock_header(profile: TorchProfile, shown_as: str) -> str:
    return (f"# Exported by envbuild from {shown_as} (profile {profile.name}); do not edit, export again.\n"
            "# Install: uv pip sync <this file> (or another PEP 751 installer); each file names its index.\n")


def _registries(folder: LockFolder, profile: TorchProfile) -> tuple[str | None, list[str]]:
    """(the default index the lock used, the torch-family indexes). The audit made sure there is one of each."""
    lock = read_uv_lock(folder.uv_lock)
    family = profile.package_names()
    extra = sorted({p.registry for p in lock.packages if p.name in family and p.registry} if profile.index_url else ())
    others = sorted({p.registry for p in lock.packages if p.registry and p.registry not in extra})
    return (others[0] if others else None), extra
