"""`update`: new refs and/or upgraded packages, as one transaction.

Move the ComfyUI/Manager checkouts to the new refs, lock into staging (the cooldown's cutoff moved to
now), install the staged lock as a new generation, run ComfyUI's quick test in it, and only when all of
that passed swap the lock in, switch the venv path and pin the refs in envbuild.toml. Anything failing
leaves the committed lock, the venv path, envbuild.toml and the checkouts as they were (the checkouts
are moved back to their commits); the built generation is kept (a fixed node needs no reinstall) and
pruned like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.core.errors import EnvbuildError, UsageError
from envbuild.deploy.deployment import Deployment
from envbuild.torch.profile import TorchProfile

if TYPE_CHECKING:
    from envbuild.env.check import CheckResult
    from envbuild.pkgs.diff import LockDiff

_SECTIONS = {"comfyui": "ComfyUI", "manager": "ComfyUI-Manager"}


class _AfterCommit(UsageError):
    """Failed after the lock was swapped in: "nothing was changed" would be false."""


class UpdateResult(NamedTuple):
    profile: str
    status: str  # "updated" | "unchanged" | "dry-run" | "check-failed"
    diff: LockDiff | None  # committed lock -> updated lock (None: no committed lock yet)
    generation: Path | None
    check: CheckResult | None
    said: tuple[str, ...] = ()  # the switch, envbuild.toml changes, checkouts moved
    warnings: tuple[str, ...] = ()


def update(deployment: Deployment, profile: TorchProfile, venv: Path, *, refs: Mapping[str, str],
           upgrade: bool = False, upgrade_packages: Sequence[str] = (), check: bool = True, dry_run: bool = False,
           stream: bool = True, progress: Callable[[str], None] = lambda _: None) -> UpdateResult:
    """`refs`: section ("comfyui", "manager") -> the ref to move to."""
    from envbuild.env import generations

    if not generations.supported() and not dry_run:
        raise UsageError("`envbuild update` needs venv generations, which are POSIX only",
                         hint="on Windows: `envbuild lock --upgrade`, then `envbuild sync --check`")
    from envbuild.core.fsio import exclusive_lock

    venv = venv.absolute()
    if "manager" in refs:  # before any git or uv work, as for [manager] ref in envbuild.toml
        from envbuild.settings.config import refuse_pip_manager_ref

        refuse_pip_manager_ref(refs["manager"], "--manager-ref")
    if not refs and not upgrade and not upgrade_packages and not dry_run and _in_place(deployment, profile, venv):
        # Nothing asked to move and nothing changed: no re-lock, no new generation, no quick test.
        return UpdateResult(profile.name, "unchanged", None, generations.current(venv), None,
                            ("nothing to update: the lock is current and the venv holds it (--upgrade allows newer "
                             "packages; --comfyui-ref/--manager-ref move the checkouts)",))
    try:
        # One update of a deployment at a time: checkouts move only under this lock, and its journal says
        # where they were, so a killed update is undone by the next command (`recover_interrupted`).
        from envbuild.lock.pipeline import ignore_scratch_files

        ignore_scratch_files(deployment.lock_dir)
        with exclusive_lock(_update_lock(deployment), timeout=deployment.lock_timeout,
                            on_wait=lambda: progress("waiting for another envbuild update of this deployment")):
            for line in recover_interrupted(deployment, locked=True):
                progress(line)
            with _moved_checkouts(deployment, refs, stream, progress) as moved:
                return _update_locked(deployment, profile, venv, refs, moved, upgrade, upgrade_packages, check,
                                      dry_run, stream, progress)
    except EnvbuildError as exc:
        if not isinstance(exc, _AfterCommit):
            kept = ("nothing was changed: the committed lock, the venv path, envbuild.toml and the checkouts are "
                    "as they were")
            exc.hint = f"{exc.hint}; {kept}" if exc.hint else kept
        raise


def _in_place(deployment: Deployment, profile: TorchProfile, venv: Path) -> bool:
    """The committed lock is current and the venv path points at the generation built from it."""
    from envbuild.env import generations
    from envbuild.lock.trust import CURRENT, UNHASHED, assess

    if assess(deployment, profile).state not in (CURRENT, UNHASHED):
        return False
    now = generations.current(venv)
    folder = deployment.folder(profile)
    return now is not None and now == generations.generation_path(venv, profile.name, generations.lock_digest(folder))


def _update_locked(deployment: Deployment, profile: TorchProfile, venv: Path, refs: Mapping[str, str],
                   moved: list[str], upgrade: bool, upgrade_packages: Sequence[str], check: bool, dry_run: bool,
                   stream: bool, progress: Callable[[str], None]) -> UpdateResult:
    from envbuild.env.switch import switch_to
    from envbuild.env.sync import sync_profile
    from envbuild.lock.pipeline import commit_staged, staged_lock

    with staged_lock(deployment, profile, upgrade=upgrade, upgrade_packages=upgrade_packages,
                     stream=stream, move_cutoff=True) as staged:  # an update brings the cooldown's cutoff to now
        diff = _diff(deployment, profile, staged.folder.path)
        if dry_run:
            return UpdateResult(profile.name, "dry-run", diff, None, None, tuple(moved), staged.warnings)
        progress(f"installing the updated lock as a new generation beside {venv}")
        synced = sync_profile(staged.deployment, profile, venv, stream=stream, switch=False)
        generation = synced.generation
        assert generation is not None  # generations are supported (checked above)
        result = None
        if check:
            from envbuild.env.check import run_check

            progress(f"running ComfyUI's quick test in {generation}")
            result = run_check(staged.deployment, profile, generation)
            if not result.ok:
                return UpdateResult(profile.name, "check-failed", diff, generation, result, tuple(moved),
                                    staged.warnings)
        commit_staged(deployment, staged)
        try:
            said = [*moved, *switch_to(deployment, venv, generation)]
            if refs:
                from envbuild.deploy.config_edit import persist_refs

                said += persist_refs(deployment, refs)
        except OSError as exc:  # after the lock was swapped in: say exactly where it stopped
            moved.clear()
            raise _AfterCommit(f"the updated lock is in {deployment.display(staged.plan.folder.path)}, but "
                               f"{exc.filename or venv} could not be written: {exc.strerror or exc}",
                               hint=f"fix that, then `envbuild sync --profile {profile.name}` switches {venv}"
                                    + (" and set the new refs in envbuild.toml" if refs else "")) from None
    moved.clear()  # everything passed: the checkouts stay where they are now
    unchanged = diff is not None and not diff.differences and not refs
    return UpdateResult(profile.name, "unchanged" if unchanged else "updated", diff, generation, result,
                        tuple(said), staged.warnings)


@contextmanager
def _moved_checkouts(deployment: Deployment, refs: Mapping[str, str], stream: bool,
                     progress: Callable[[str], None]) -> Iterator[list[str]]:
    """Move each checkout to its new ref; on the way out, move back those still listed (the caller
    clears the list once everything passed)."""
    from envbuild.comfy.git import fetch_source, git_sources
    from envbuild.settings.config import GitSource
    from envbuild.settings.pins import read_head

    config = deployment.config
    sources = {name: (source, path) for name, source, path in git_sources(config)}
    moved: list[str] = []
    back: list[tuple[str, GitSource, Path]] = []
    journal: list[dict[str, str]] = []
    try:
        for section, ref in refs.items():
            name = _SECTIONS[section]
            if name not in sources:
                raise UsageError(f"--{section}-ref needs [{section}] git and ref in envbuild.toml",
                                 hint=f"add [{section}] git = \"<repository URL>\" and ref, then `envbuild fetch`")
            source, path = sources[name]
            before = read_head(path)
            if before is not None:  # written before the checkout moves: a kill after it is undone next time
                journal.append({"name": name, "url": source.url, "path": str(path), "commit": before})
                _write_journal(deployment, journal)
            result = fetch_source(name, GitSource(source.url, ref), path, project_dir=config.project_dir,
                                  environ=deployment.env, stream=stream)
            if before is not None and result.commit != before:
                back.append((name, GitSource(source.url, before), path))
                moved.append(f"{name}: {config.display(path)} moved from {before[:12]} to {ref} "
                             f"({result.commit[:12]})")
                progress(moved[-1])
        yield moved
    finally:
        stuck = False
        if moved:  # not everything passed (or a dry run): the checkouts go back to their commits
            for name, source, path in reversed(back):
                try:
                    fetch_source(name, source, path, project_dir=config.project_dir, environ=deployment.env)
                except EnvbuildError as exc:
                    progress(f"could not move {name} back to {source.ref[:12]}: {exc}")
                    stuck = True  # the journal stays: the next command tries again, and says so
        if not stuck:
            _journal(deployment).unlink(missing_ok=True)


def _journal(deployment: Deployment) -> Path:
    from envbuild.pkgs.lockdir import UPDATE_JOURNAL

    return deployment.lock_dir / UPDATE_JOURNAL


def _update_lock(deployment: Deployment) -> Path:
    from envbuild.pkgs.lockdir import UPDATE_LOCK

    return deployment.lock_dir / UPDATE_LOCK


def _write_journal(deployment: Deployment, entries: list[dict[str, str]]) -> None:
    import json
    import time

    from envbuild.core.fsio import atomic_write

    atomic_write(_journal(deployment), json.dumps({"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                   "checkouts": entries}, indent=2) + "\n")


def recover_interrupted(deployment: Deployment, *, locked: bool = False) -> list[str]:
    """An `update` killed while its checkouts were moved (its journal is still there, and no update holds
    the deployment's update lock): move them back to the commits the journal records, then drop it. What
    was done, in lines to show; nothing when there is no journal (one stat on every command)."""
    path = _journal(deployment)
    if not path.exists():
        return []
    if not locked:
        from envbuild.core.errors import LockBusyError
        from envbuild.core.fsio import exclusive_lock

        try:
            with exclusive_lock(_update_lock(deployment), timeout=0):
                return recover_interrupted(deployment, locked=True)
        except LockBusyError:
            return []  # an update is running: its journal is live, not left behind
    return _undo(deployment, path)


def _undo(deployment: Deployment, path: Path) -> list[str]:
    import json

    from envbuild.comfy.git import fetch_source
    from envbuild.core.safeio import read_regular_file
    from envbuild.settings.config import GitSource
    from envbuild.settings.pins import FULL_SHA, read_head

    try:
        data = json.loads(read_regular_file(path, 1024 * 1024))
        entries = [(str(e["name"]), str(e["url"]), Path(e["path"]), str(e["commit"])) for e in data["checkouts"]]
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return [f"an unreadable journal of an interrupted `envbuild update` ({path}) was removed; check that "
                "the ComfyUI and Manager checkouts are at the commits envbuild.toml names (`envbuild fetch`)"]
    said = []
    known = {str(p) for _, _, p in _sources(deployment)}
    for name, url, checkout, commit in entries:
        if str(checkout) not in known or not FULL_SHA.fullmatch(commit):
            continue  # the journal is envbuild's scratch file, but only its own checkouts are moved back
        if read_head(checkout) == commit:
            continue
        fetch_source(name, GitSource(url, commit), checkout, project_dir=deployment.config.project_dir,
                     environ=deployment.env)
        said.append(f"an interrupted `envbuild update` (started {data.get('started', '?')}) was undone: {name} "
                    f"moved back to {commit[:12]}, as envbuild.toml and the committed lock have it")
    path.unlink(missing_ok=True)
    return said


def _sources(deployment: Deployment) -> list[tuple[str, object, Path]]:
    from envbuild.comfy.git import git_sources

    return [(name, source, checkout) for name, source, checkout in git_sources(deployment.config)]


def _diff(deployment: Deployment, profile: TorchProfile, staged: Path) -> LockDiff | None:
    from envbuild.pkgs.diff import diff_locks
    from envbuild.pkgs.uvlock import read_uv_lock

    committed = deployment.folder(profile)
    if not committed.exists():
        return None
    return diff_locks(read_uv_lock(committed.uv_lock), read_uv_lock(staged / "uv.lock"), "committed", "updated")
