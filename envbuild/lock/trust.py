"""Where a lock is trusted: the one check every command runs before it uses a committed lock.

A lock folder is what a fresh machine installs from, and anyone who can edit the repository can
edit it — the fingerprint in it too. So trust is never read from the folder. A lock is usable when

- the pyproject is what envbuild renders from today's inputs and profile (`freshness`), and
- uv.lock passes the audit (`audit`): every file hashed, the torch family from the profile's index
  and nothing else from it, no setting that redirects packages.

Both are pure functions of bytes and settings, so their verdict is remembered in the per-user cache
under a key made of exactly those bytes and settings (`freshness.content_key`), outside the
repository: a no-op `sync` hashes a few files and finds the verdict, an edited folder has another
key and is checked in full. `lock`, `lock --check`, `sync`, `run`, `verify`, `export`, `check` and
`doctor` all come here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.core.errors import EnvbuildError, LockIntegrityError, StaleLockError
from envbuild.deploy.deployment import Deployment
from envbuild.lock.freshness import compare, content_key, current_digests
from envbuild.lock.plan import LockPlan, expected_fingerprint, plan_lock
from envbuild.pkgs.lockdir import LockFolder
from envbuild.torch.profile import TorchProfile

if TYPE_CHECKING:
    from envbuild.uv.audit import AuditReport

# A lock's state, in one vocabulary for `lock`, `lock --check`, `verify`, `doctor` and locks/README.md.
MISSING, STALE, EDITED, UNHASHED, CURRENT = "missing", "stale", "edited", "unhashed", "current"
STATE_MEANING = {
    MISSING: "no lock folder",
    STALE: "the inputs or settings changed since it was locked: run `envbuild lock`",
    EDITED: "its files are not what envbuild wrote (edited by hand?): run `envbuild lock` to regenerate it",
    UNHASHED: "current, but some files have no sha256 (sync needs --allow-unhashed)",
    CURRENT: "matches its inputs; every file hashed; indexes as the profile says",
}
_CACHE_FOLDER = "trust"
_NO_INPUTS = "<no inputs here: the lock folder alone>"


class Assessment(NamedTuple):
    profile: str
    folder: LockFolder
    state: str  # MISSING | STALE | EDITED | UNHASHED | CURRENT
    reasons: tuple[str, ...]  # why STALE or EDITED
    unhashed: tuple[str, ...]  # files without a sha256, described
    compared_with_inputs: bool  # False: no ComfyUI checkout here, only the audit ran
    cached: bool  # the verdict came from the per-user cache (nothing was parsed)
    report: AuditReport | None = None  # the audit, when it ran now
    plan: LockPlan | None = None  # the full check's plan, when it ran now

    @property
    def usable(self) -> bool:
        return self.state in (CURRENT, UNHASHED)


def has_inputs(deployment: Deployment) -> bool:
    """Is the deployment's ComfyUI here to compare a lock with? (`sync` also works from locks/ alone.)"""
    comfyui = deployment.config.comfyui
    return comfyui is not None and (comfyui / "requirements.txt").exists()


def remembered(deployment: Deployment, profile: TorchProfile) -> Assessment | None:
    """The verdict the per-user cache holds for the folder as it is now (None: not known yet), from raw
    bytes only: no parsing, no packaging import. This is what a no-op `lock` and `sync` cost."""
    folder = deployment.folder(profile)
    if not folder.exists():
        return None
    with_inputs = has_inputs(deployment)
    unhashed = _remembered(deployment, _fast_key(deployment, profile, folder, with_inputs))
    if unhashed is None:
        return None
    return Assessment(profile.name, folder, UNHASHED if unhashed else CURRENT, (), unhashed, with_inputs, True)


def assess(deployment: Deployment, profile: TorchProfile, *, full: bool = False,
           plan: LockPlan | None = None) -> Assessment:
    """The lock's state. `full`: run the whole check even when the cache holds a verdict (`verify`
    reports every detail of the audit; `lock` decides whether uv must run). `plan`: one made already."""
    folder = deployment.folder(profile)
    special = folder.special_entries()  # lstat only, before any file of the folder is opened or hashed
    if special:
        return Assessment(profile.name, folder, EDITED, (*special, "a lock folder holds plain files only"), (),
                          False, False)
    if not full:
        known = remembered(deployment, profile)
        if known is not None:
            return known
    if not folder.exists():
        return Assessment(profile.name, folder, MISSING, (), (), False, False)
    with_inputs = has_inputs(deployment)
    if with_inputs and plan is None:
        plan = plan_lock(deployment, profile)
    freshness = compare(folder, plan) if plan is not None else None
    try:
        report = audit(deployment, profile, folder)
    except LockIntegrityError as exc:  # uv.lock or pyproject.toml cannot even be parsed
        return Assessment(profile.name, folder, EDITED, (exc.message,), (), with_inputs, False, plan=plan)
    unhashed = tuple(a.describe() for a in report.unhashed)
    if freshness is not None and freshness.changes:
        return Assessment(profile.name, folder, STALE, (*freshness.changes, *freshness.edits), unhashed, True, False,
                          report, plan)
    edits = (*(freshness.edits if freshness else ()), *report.tampering)
    if edits:
        return Assessment(profile.name, folder, EDITED, edits, unhashed, with_inputs, False, report, plan)
    key = _plan_key(plan, folder) if plan is not None else _bare_key(deployment, profile, folder)
    _remember(deployment, key, unhashed)
    return Assessment(profile.name, folder, UNHASHED if unhashed else CURRENT, (), unhashed, with_inputs, False,
                      report, plan)


def require_usable(deployment: Deployment, profile: TorchProfile, *, allow_unhashed: bool = False,
                   then: str = "") -> Assessment:
    """The lock, trusted, or the error that says why not and what to run. `then`: what to run after
    re-locking (e.g. "then `envbuild sync`"), for the hint."""
    found = assess(deployment, profile)
    name = profile.name
    relock = f"run `envbuild lock --profile {name}`" + (f", {then}" if then else "") + f" and commit locks/{name}/"
    if found.state == MISSING:
        raise StaleLockError(f"no lock for profile {name} at {deployment.display(found.folder.path)}", hint=relock)
    if found.state == STALE:
        raise StaleLockError(f"the lock for profile {name} is out of date: " + "; ".join(found.reasons), hint=relock)
    if found.state == EDITED:
        raise LockIntegrityError(
            f"the lock for profile {name} ({deployment.display(found.folder.path)}) cannot be trusted:\n"
            + "\n".join(f"  - {reason}" for reason in found.reasons),
            hint=f"{relock} (it regenerates the folder from the inputs and the profile)")
    if found.unhashed and not allow_unhashed:
        raise LockIntegrityError(
            f"the lock for profile {name} ({deployment.display(found.folder.path)}) cannot be trusted:\n"
            + "\n".join(f"  - no sha256: {item}" for item in found.unhashed),
            hint="the index served these files without a sha256; pass --allow-unhashed to accept them anyway")
    return found


def audit(deployment: Deployment, profile: TorchProfile, folder: LockFolder) -> AuditReport:
    """The uv.lock audit against what this deployment locks the profile with (mirrors included)."""
    from envbuild.torch.variants import groups_for
    from envbuild.uv.audit import audit_lock

    return audit_lock(folder, profile, indexes=deployment.indexes(profile)[:3],
                      pytorch_bases=deployment.pytorch_bases(),
                      variant_groups=groups_for(deployment.config.variant_groups, deployment.config.source))


def remember_new_lock(deployment: Deployment, plan: LockPlan, unhashed: tuple[str, ...]) -> None:
    """`lock` just wrote and audited this folder: the next command finds its verdict without a re-check."""
    _remember(deployment, _plan_key(plan, plan.folder), unhashed)


# -- the per-user cache of verdicts -------------------------------------------------------------------

def _fast_key(deployment: Deployment, profile: TorchProfile, folder: LockFolder, with_inputs: bool) -> str | None:
    """The verdict's key from raw bytes only (no parsing), or None when the fingerprint cannot even say
    which files were read, or names other input files than the deployment has now."""
    if not with_inputs:
        return _bare_key(deployment, profile, folder)
    recorded = folder.read_fingerprint()
    if recorded is None or not recorded.raw_inputs:
        return None
    from envbuild.comfy.inputs import collect_inputs

    roots = tuple(deployment.display(item.path) for item in collect_inputs(deployment.config).files)
    if roots != recorded.roots:
        return None
    expected = expected_fingerprint(deployment, profile)._replace(settled=recorded.settled, bounds=recorded.bounds,
                                                                    companions=recorded.companions,
                                                                    cutoff=recorded.cutoff)
    return content_key(expected, roots, current_digests(recorded, deployment.config.project_dir), folder)


def _plan_key(plan: LockPlan, folder: LockFolder) -> str:
    return content_key(plan.fingerprint, plan.fingerprint.roots, plan.fingerprint.raw_inputs, folder)


def _bare_key(deployment: Deployment, profile: TorchProfile, folder: LockFolder) -> str:
    """Without inputs only the audit runs: its verdict depends on the profile and indexes, not on commits."""
    expected = expected_fingerprint(deployment, profile)._replace(extra={})
    return content_key(expected, (_NO_INPUTS,), {}, folder)


def _cache_path(deployment: Deployment, key: str) -> Path:
    return deployment.cache_dir / _CACHE_FOLDER / key[:2] / f"{key}.json"


def _remembered(deployment: Deployment, key: str | None) -> tuple[str, ...] | None:
    """The unhashed files of a remembered good verdict (empty: all hashed), or None: not remembered."""
    if key is None:
        return None
    try:
        data = json.loads(_cache_path(deployment, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    unhashed = data.get("unhashed") if isinstance(data, dict) else None
    if not isinstance(unhashed, list) or not all(isinstance(item, str) for item in unhashed):
        return None
    return tuple(unhashed)


def _remember(deployment: Deployment, key: str, unhashed: tuple[str, ...]) -> None:
    """A cache that cannot be written (read-only home, full disk) costs the next run a full check, nothing
    more: never an error."""
    from envbuild.core.fsio import atomic_write

    try:
        atomic_write(_cache_path(deployment, key), json.dumps({"unhashed": list(unhashed)}) + "\n")
    except (OSError, EnvbuildError):
        pass

