"""`lock`: make locks/<profile>/ from the plan with the real `uv lock`, never half-written.

The order matters for safety: everything that can be checked without uv is checked in the plan,
before anything is written; uv locks a staged copy beside the folder, the new lock is audited, and
only then does it replace the committed one. A lock whose folder is already current runs no uv.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.core.errors import EnvbuildError, IndexUnreachableError, ResolveError
from envbuild.core.fsio import atomic_write, exclusive_lock, remove_stale_staging, replace_dir, staging_dir
from envbuild.deploy.deployment import Deployment
from envbuild.lock.plan import LockPlan, moved_cutoff, plan_lock
from envbuild.lock.settlements import Settled
from envbuild.lock.trust import CURRENT, EDITED, UNHASHED, assess, remember_new_lock, remembered
from envbuild.pkgs.lockdir import LockFolder
from envbuild.pkgs.uvlock import count_locked_packages
from envbuild.torch.profile import TorchProfile
from envbuild.uv.command import DEFAULT_INDEX_ENV

if TYPE_CHECKING:
    from envbuild.pkgs.uvlock import LockFile


class LockResult(NamedTuple):
    profile: str
    status: str  # "locked" | "up-to-date"
    folder: Path
    packages: int
    reasons: tuple[str, ...]  # why it was (re)locked
    seconds: float
    warnings: tuple[str, ...] = ()  # lines skipped or ignored, nodes left out: never silent
    settled: tuple[str, ...] = ()  # variant groups settled by this lock (envbuild.lock.settle), said
    notes: tuple[str, ...] = ()  # facts about what was locked (ComfyUI's compiled packages on this profile)


class Written(NamedTuple):
    """An audited lock in a staging folder, and the plan it was made from (settling a group changes it)."""

    plan: LockPlan
    lock_text: str
    summary: str
    unhashed: tuple[str, ...]
    settled: tuple[str, ...]


def lock_profile(
    deployment: Deployment, profile: TorchProfile, *, upgrade: bool = False, upgrade_packages: Sequence[str] = (),
    stream: bool = True, on_wait: Callable[[], None] | None = None, seed_lock: Path | None = None,
) -> LockResult:
    """`seed_lock`: a uv.lock just made and audited for the same requirements (a node operation's staged
    lock): uv's starting point instead of the committed lock, so landing the change resolves nothing anew."""
    started = time.perf_counter()
    upgrading = bool(upgrade or upgrade_packages)
    folder = deployment.folder(profile)
    if not upgrading and remembered(deployment, profile) is not None:  # a few file hashes, no parsing
        return _up_to_date(folder, started)
    # every input error surfaces before anything is written; an upgrade also moves the cooldown's cutoff
    plan = plan_lock(deployment, profile, cutoff=moved_cutoff(deployment, profile) if upgrading else None)
    if not upgrading and _current_as_recorded(deployment, plan):  # a fresh clone's first no-op: nothing to write
        return _up_to_date(folder, started)
    require_owned_lock_dir(deployment)
    try:
        return _lock_planned(deployment, plan, upgrade, upgrade_packages, stream, on_wait, started, seed_lock)
    except OSError as exc:  # a read-only or full disk: name the place, not a traceback; the old lock stands
        from envbuild.core.errors import ConfigError

        where = exc.filename or deployment.lock_dir
        raise ConfigError(None, f"cannot write the lock for profile {profile.name}: {where}: "
                                f"{exc.strerror or exc}; the previous lock is untouched",
                          hint="free disk space or make the lock folder writable, then run `envbuild lock` "
                               "again") from None


def _current_as_recorded(deployment: Deployment, plan: LockPlan) -> bool:
    """The full check says current and the fingerprint needs no refresh: nothing to write, so no write lock
    is taken either (a checkout may be read-only; a lock file would be the only write)."""
    found = assess(deployment, plan.profile, full=True, plan=plan)
    return found.state in (CURRENT, UNHASHED) and _refreshed(plan) is None


def _lock_planned(deployment: Deployment, plan: LockPlan, upgrade: bool, upgrade_packages: Sequence[str],
                  stream: bool, on_wait: Callable[[], None] | None, started: float,
                  seed_lock: Path | None = None) -> LockResult:
    profile, folder = plan.profile, plan.folder
    upgrading = bool(upgrade or upgrade_packages)
    ignore_scratch_files(deployment.lock_dir)
    # One writer per profile folder: a second run waits, then finds the lock current (or re-locks).
    with exclusive_lock(deployment.lock_dir / f".{profile.name}.lock", timeout=deployment.lock_timeout,
                        on_wait=on_wait):
        found = assess(deployment, profile, full=True, plan=plan)
        if found.state in (CURRENT, UNHASHED) and not upgrading:
            if _refresh_fingerprint(plan):  # the verdict's key covers the fingerprint's bytes: remember anew
                remember_new_lock(deployment, plan, found.unhashed)
            return _up_to_date(folder, started)
        reasons = list(found.reasons) if found.reasons else ([f"no lock yet at {deployment.display(folder.path)}"]
                                                              if found.state == "missing" else [])
        # Only a lock that passed the audit seeds the next one: uv keeps a lock that still fits as it
        # is, so a forged hash or URL would otherwise be carried into the new lock.
        seed = found.state != "missing" and found.report is not None and not found.report.tampering
        if found.state == EDITED and (plan.fingerprint.settled or plan.fingerprint.bounds
                                      or plan.fingerprint.companions):
            # Nor does an edited folder give its recorded choices: envbuild decides them afresh (a forged
            # `settled` would otherwise be kept, locking a package nobody asked for).
            plan = plan_lock(deployment, profile, settled=Settled(), cutoff=plan.fingerprint.cutoff or None)
            reasons.append("recorded settlements not reused (the folder was edited): decided afresh")
        written = _lock_staged(deployment, plan, upgrade, upgrade_packages, stream, seed, seed_lock)
    if upgrading:
        reasons.append("upgrade requested")
    return LockResult(profile=profile.name, status="locked", folder=folder.path,
                      packages=count_locked_packages(written.lock_text), reasons=tuple(reasons),
                      seconds=time.perf_counter() - started,
                      warnings=(*written.plan.fingerprint.warnings, *_unhashed_notes(written.unhashed)),
                      settled=written.settled, notes=_compiled_notes(profile, written.lock_text))


def _compiled_notes(profile: TorchProfile, lock_text: str) -> tuple[str, ...]:
    """What ComfyUI does with comfy-kitchen and comfy-aimdo on this profile, when the lock holds them."""
    from envbuild.comfy.compiled import compiled_note
    from envbuild.pkgs.uvlock import parse_uv_lock

    note = compiled_note(profile, (p.name for p in parse_uv_lock(lock_text, "uv.lock").packages))
    return (note,) if note else ()


_IGNORE_TEXT = "# envbuild's scratch files (per-profile write locks, staged locks)\n.*\n!.gitignore\n"
_README_FIRST_LINE = "# Committed locks"


def require_owned_lock_dir(deployment: Deployment) -> None:
    """The lock folder must be one envbuild owns: it writes README.md and .gitignore there and swaps whole
    folders in, so `lock.dir = "."` (or a ComfyUI checkout) would replace the user's own files."""
    from envbuild.core.errors import ConfigError

    lock_dir, config = deployment.lock_dir, deployment.config
    where = config.source or "--lock-dir"
    for checkout, what in ((config.comfyui, "the ComfyUI checkout"), (config.base_directory, "ComfyUI's base "
                                                                                             "directory")):
        if checkout is not None and (lock_dir.resolve() == checkout.resolve()
                                     or checkout.resolve() in lock_dir.resolve().parents):
            raise ConfigError(where, f"the lock folder {lock_dir} is inside {what}, where ComfyUI's own files live",
                              hint='use a folder of its own beside it, e.g. [lock] dir = "locks"')
    if not lock_dir.exists():
        return
    if not lock_dir.is_dir():
        raise ConfigError(where, f"the lock folder {lock_dir} is a file, not a folder",
                          hint='move it away, or set [lock] dir to another folder (default "locks")')
    foreign = [entry.name for entry in sorted(lock_dir.iterdir()) if not _ours(entry)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(where, f"the lock folder {lock_dir} holds files envbuild did not write ({shown}); envbuild "
                                 "replaces README.md, .gitignore and whole profile folders there",
                          hint='give locks a folder of their own, e.g. [lock] dir = "locks"')


def _ours(entry: Path) -> bool:
    """What envbuild writes in a lock folder: profile folders, README.md, .gitignore, dot-named scratch."""
    name = entry.name
    if name.startswith(".") and name != ".gitignore":
        return True  # write locks, staging and previous copies (and .git of a lock-only repository)
    try:
        if entry.is_symlink():
            return False
        if name == ".gitignore":
            return entry.is_file() and entry.read_text(encoding="utf-8") == _IGNORE_TEXT
        if name == "README.md":
            return entry.is_file() and entry.read_text(encoding="utf-8").startswith(_README_FIRST_LINE)
        if entry.is_dir():
            return (entry / "uv.lock").exists() or (entry / "pyproject.toml").exists() or not any(entry.iterdir())
    except (OSError, UnicodeDecodeError):
        return False
    return False


def ignore_scratch_files(lock_dir: Path) -> None:
    """locks/ is committed; envbuild's lock files and staging folders in it must never be."""
    ignore = lock_dir / ".gitignore"
    if not ignore.exists():
        atomic_write(ignore, _IGNORE_TEXT)


def _lock_staged(deployment: Deployment, plan: LockPlan, upgrade: bool, upgrade_packages: Sequence[str],
                 stream: bool, seed: bool, seed_lock: Path | None = None) -> Written:
    """Lock a copy beside the folder; only a successful, audited lock replaces the committed one."""
    profile = plan.profile
    remove_stale_staging(deployment.lock_dir, profile.name)  # we hold the profile's lock: a killed run's
    with staging_dir(deployment.lock_dir, profile.name) as staged:
        written = _write_lock(deployment, plan, staged, upgrade, upgrade_packages, stream, seed, seed_lock)
        replace_dir(staged, plan.folder.path)
    remember_new_lock(deployment, written.plan, written.unhashed)
    return written


def _unhashed_notes(unhashed: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"no sha256 in the lock for {item} (sync will refuse it without --allow-unhashed)"
                 for item in unhashed)


def _write_lock(deployment: Deployment, plan: LockPlan, staged: Path, upgrade: bool, upgrade_packages: Sequence[str],
                stream: bool, seed: bool, seed_lock: Path | None = None) -> Written:
    """uv locks `staged` (seeded with the committed lock), audited, fingerprinted, with its torch guard."""
    from envbuild.lock.settle import settle_lock
    from envbuild.torch.companions import refuse_misplaced, refuse_unlisted
    from envbuild.torch.family import refuse_unpaired
    from envbuild.torch.variants import groups_for
    from envbuild.uv import guard
    from envbuild.uv.audit import audit_texts, require_clean

    profile = plan.profile
    if upgrade and (plan.fingerprint.settled or plan.fingerprint.bounds or plan.fingerprint.companions):
        # a full re-resolve starts afresh
        plan = plan_lock(deployment, profile, settled=Settled(), cutoff=plan.fingerprint.cutoff or None)
    if seed_lock is not None and seed_lock.is_file():  # made and audited moments ago, for these requirements
        shutil.copyfile(seed_lock, staged / "uv.lock")
    elif seed:  # the previous lock is uv's starting point: re-locking keeps versions unless asked
        shutil.copyfile(plan.folder.uv_lock, staged / "uv.lock")
    lock_text, summary, locked = _uv_lock(deployment, plan, staged, upgrade, upgrade_packages, stream)
    groups = groups_for(deployment.config.variant_groups, deployment.config.source)

    def relock(settled: LockPlan) -> LockFile:  # seeded by the first result: only what is settled moves
        nonlocal lock_text, summary, locked
        lock_text, summary, locked = _uv_lock(deployment, settled, staged, False, (), stream)
        return locked

    # One provider per variant group in the whole resolution, each torch-bound package at torch's minor:
    # settled (and locked again), or no lock.
    plan, settled = settle_lock(deployment, plan, locked, groups, relock)
    refuse_misplaced(locked, profile, deployment.indexes(profile).torch, plan.merged.result)
    refuse_unlisted(locked, profile, plan.merged.result)
    refuse_unpaired(locked, profile, plan.merged.result)  # torchaudio only beside a torch of its minor
    report = audit_texts(plan.pyproject, lock_text, profile, folder=staged,
                         indexes=deployment.indexes(profile)[:3], pytorch_bases=deployment.pytorch_bases(),
                         variant_groups=groups, lock=locked)
    require_clean(report, allow_unhashed=True)  # the index may omit hashes: said below, refused at sync
    unhashed = tuple(a.describe() for a in report.unhashed)
    fingerprint = plan.fingerprint.with_lock(lock_text, _today())
    atomic_write(staged / plan.folder.fingerprint_path.name, fingerprint.to_json())
    guard.write_constraints(staged, profile, locked)  # the torch guard, from the lock just made
    return Written(plan, lock_text, summary, unhashed, settled)


def _uv_lock(deployment: Deployment, plan: LockPlan, staged: Path, upgrade: bool, upgrade_packages: Sequence[str],
             stream: bool) -> tuple[str, str, LockFile]:
    """One `uv lock` of the plan's pyproject in `staged`: the lock's text, uv's summary and the parsed lock."""
    from envbuild.pkgs.uvlock import parse_uv_lock

    atomic_write(staged / "pyproject.toml", plan.pyproject)
    try:
        summary = deployment.uv.lock(staged, upgrade=upgrade, upgrade_packages=upgrade_packages, stream=stream,
                                     env_set=_mirror_env(deployment), env_unset=_unset_env(plan))
    except IndexUnreachableError as exc:
        raise _with_network_advice(exc, deployment, plan.profile) from None
    except ResolveError as exc:  # uv names the generated project: say which inputs (and nodes) asked
        from envbuild.lock.blame import name_asking_inputs

        raise name_asking_inputs(exc, plan.merged.result) from None
    lock_text = (staged / "uv.lock").read_text(encoding="utf-8")
    return lock_text, summary, parse_uv_lock(lock_text, staged / "uv.lock")


def _mirror_env(deployment: Deployment) -> dict[str, str]:
    """uv's own settings for a lock made through a mirror (mode "lock")."""
    from envbuild.settings.mirrors import uv_environment

    return uv_environment(deployment.mirrors) if deployment.mirrors.locks_through else {}


def _unset_env(plan: LockPlan) -> tuple[str, ...]:
    """A lock made through a PyPI mirror names it in the pyproject; uv's own default-index settings would
    silently win over that, so they are dropped for this run."""
    return DEFAULT_INDEX_ENV if plan.fingerprint.default_index else ()


def _with_network_advice(exc: IndexUnreachableError, deployment: Deployment,
                         profile: TorchProfile) -> IndexUnreachableError:
    """An index that cannot be reached: the ways around it that this deployment has, as exact commands."""
    ways = []
    pypi = deployment.catalogue.profiles.get(f"{profile.name}-pypi") if profile.index_url else None
    if pypi is not None:
        ways.append(f"take torch from PyPI instead: `envbuild lock --profile {profile.name} --torch-source pypi` "
                    f"(locks {pypi.name}, Linux x86_64)")
    if profile.index_url and not deployment.mirrors.pytorch:
        ways.append("lock through a PyTorch mirror: `envbuild lock --profile "
                    f"{profile.name} --mirror https://mirror.sjtu.edu.cn/pytorch-wheels` (or [mirrors] pytorch "
                    "in envbuild.toml, ENVBUILD_PYTORCH_MIRROR)")
    if not deployment.mirrors.pypi:
        ways.append("for PyPI itself: [mirrors] pypi in envbuild.toml (or ENVBUILD_PYPI_MIRROR / --pypi-mirror)")
    advice = "; or ".join(ways)
    exc.hint = f"{exc.hint}; {advice}" if exc.hint and advice else (exc.hint or advice or None)
    return exc


def _refreshed(plan: LockPlan) -> str | None:
    """The fingerprint to record now that only comments or formatting changed (None: it is as recorded,
    byte for byte)."""
    recorded = plan.folder.read_fingerprint()
    if recorded is None:
        return None
    text = plan.fingerprint._replace(uv_lock_sha256=recorded.uv_lock_sha256, extra=recorded.extra).to_json()
    try:
        same = plan.folder.fingerprint_path.read_text(encoding="utf-8") == text
    except OSError:
        same = False
    return None if same else text


def _refresh_fingerprint(plan: LockPlan) -> bool:
    """Only comments or formatting changed: remember the new bytes so the next run is a fast no-op.
    True when the file was written."""
    text = _refreshed(plan)
    if text is not None:
        atomic_write(plan.folder.fingerprint_path, text)
    return text is not None


def _up_to_date(folder: LockFolder, started: float) -> LockResult:
    recorded = folder.read_fingerprint()
    packages = count_locked_packages(folder.uv_lock.read_text(encoding="utf-8"))
    warnings = recorded.warnings if recorded else ()
    return LockResult(profile=folder.profile, status="up-to-date", folder=folder.path, packages=packages, reasons=(),
                      seconds=time.perf_counter() - started, warnings=warnings)


class LockEvent(NamedTuple):
    """Progress of one profile in `lock --all`, reported as it happens (from worker threads)."""

    profile: str
    kind: str  # "started" | "waiting" | "done" | "failed"
    result: LockResult | None = None
    error: EnvbuildError | None = None


def lock_many(
    deployment: Deployment, profiles: Sequence[TorchProfile], *, jobs: int, on_event: Callable[[LockEvent], None],
    upgrade: bool = False, upgrade_packages: Sequence[str] = (),
) -> list[LockEvent]:
    """Lock several profiles at once (uv is I/O bound), each independently: one failure stops no other."""
    from concurrent.futures import ThreadPoolExecutor

    def one(profile: TorchProfile) -> LockEvent:
        on_event(LockEvent(profile.name, "started"))
        try:
            result = lock_profile(deployment, profile, upgrade=upgrade, upgrade_packages=upgrade_packages,
                                  stream=False, on_wait=lambda: on_event(LockEvent(profile.name, "waiting")))
            event = LockEvent(profile.name, "done", result=result)
        except EnvbuildError as exc:
            event = LockEvent(profile.name, "failed", error=exc)
        on_event(event)
        return event

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(profiles)))) as pool:
        return list(pool.map(one, profiles))


def refresh_locks_readme(deployment: Deployment, *, changed: bool = True) -> Path | None:
    """locks/README.md, rewritten only when what it says changed. `changed=False` (every lock was
    a no-op) skips even reading the locks, unless the README is missing: that is the no-op's cost."""
    path = deployment.lock_dir / "README.md"
    if not changed and path.is_file():
        return path
    from envbuild.uv.locks_readme import lock_folders, render_locks_readme, summarize

    folders = lock_folders(deployment.lock_dir)
    if not folders:
        return None
    catalogue = deployment.catalogue
    text = render_locks_readme(summarize(f, catalogue.profiles.get(f.profile)) for f in folders)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write(path, text)
    return path


def _today() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


class StagedLock(NamedTuple):
    """A lock made and audited in a staging folder, not yet swapped in (`update` installs and checks it first)."""

    folder: LockFolder  # <lock dir>/.<profile>.staging-*/<profile>/
    deployment: Deployment  # the same deployment with the staging folder as its lock folder: sync installs from it
    plan: LockPlan  # the plan for the committed folder, which commit_staged replaces
    lock_text: str
    summary: str
    unhashed: tuple[str, ...]
    settled: tuple[str, ...] = ()  # variant groups settled by this lock, said

    @property
    def warnings(self) -> tuple[str, ...]:
        return (*self.plan.fingerprint.warnings, *self.settled, *_unhashed_notes(self.unhashed))


@contextlib.contextmanager
def staged_lock(deployment: Deployment, profile: TorchProfile, *, upgrade: bool = False,
                upgrade_packages: Sequence[str] = (), stream: bool = True,
                on_wait: Callable[[], None] | None = None, move_cutoff: bool = False) -> Iterator[StagedLock]:
    """Lock into a staging folder and hand it over without swapping it in; `commit_staged` swaps it in.
    The profile's write lock is held for the whole block (no other lock of the profile meanwhile); a
    block left without a commit leaves the committed lock as it was, and the staged one is removed.
    `move_cutoff` (or an upgrade): the cooldown's cutoff moves to now minus the span (`update`)."""
    import dataclasses

    moving = move_cutoff or upgrade or bool(upgrade_packages)
    plan = plan_lock(deployment, profile, cutoff=moved_cutoff(deployment, profile) if moving else None)
    require_owned_lock_dir(deployment)
    ignore_scratch_files(deployment.lock_dir)
    with exclusive_lock(deployment.lock_dir / f".{profile.name}.lock", timeout=deployment.lock_timeout,
                        on_wait=on_wait):
        found = assess(deployment, profile, full=True, plan=plan)
        seed = found.state != "missing" and found.report is not None and not found.report.tampering
        remove_stale_staging(deployment.lock_dir, profile.name)
        with staging_dir(deployment.lock_dir, profile.name) as root:
            folder = LockFolder(root, profile.name)
            folder.path.mkdir()
            written = _write_lock(deployment, plan, folder.path, upgrade, upgrade_packages, stream, seed)
            remember_new_lock(deployment, written.plan._replace(folder=folder), written.unhashed)
            staged = dataclasses.replace(deployment, config=deployment.config._replace(lock_dir=root))
            yield StagedLock(folder, staged, written.plan, written.lock_text, written.summary, written.unhashed,
                             written.settled)


def commit_staged(deployment: Deployment, staged: StagedLock) -> None:
    """Swap a staged lock in for the committed one (inside `staged_lock`'s block)."""
    replace_dir(staged.folder.path, staged.plan.folder.path)
    remember_new_lock(deployment, staged.plan, staged.unhashed)
