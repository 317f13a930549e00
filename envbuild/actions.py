"""Use cases: plan, lock and sync one profile. Values in, result values out; no printing.

The order matters for safety: everything that can be checked without uv (parsing, merging,
rendering, conflicts, torch pins) is checked before uv runs, and a lock is written into its
folder only after `uv lock` has succeeded on a staged copy.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from envbuild.config import Config
from envbuild.errors import EnvbuildError, LockIntegrityError, StaleLockError, UsageError, UvError, VerifyError
from envbuild.fsio import atomic_write, exclusive_lock, remove_stale_staging, replace_dir, staging_dir
from envbuild.inputs import (
    MergedInputs,
    collect_inputs,
    display_input,
    merge_inputs,
    normalized_digest,
    profile_display_path,
)
from envbuild.lockdir import (
    Fingerprint,
    LockFolder,
    count_locked_packages,
    file_digest,
    sha256_text,
    stale_reasons,
    unchanged_since_lock,
)
from envbuild.profiles import ProfileCatalogue, TorchProfile, load_catalogue
from envbuild.render import RENDER_VERSION, UV_REQUIRED_VERSION, RenderInput, render_pyproject

if TYPE_CHECKING:
    from envbuild.audit import AuditReport
    from envbuild.mirrors import Mirrors
    from envbuild.torchcheck import TorchBuild
    from envbuild.uv import Uv

UvFactory = Callable[[], "Uv"]
AUTO = "auto"  # --cuda auto / --profile auto: let GPU detection choose
LISTED_IN = "envbuild.toml `lock.profiles`"  # where a default profile name comes from
DEFAULT_INDEX_ENV = ("UV_DEFAULT_INDEX", "UV_INDEX_URL")
LOCK_TIMEOUT_ENV = "ENVBUILD_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 900.0  # a real ComfyUI lock takes seconds; a cold one on a slow mirror, minutes


class LockPlan(NamedTuple):
    """Everything a lock needs, computed without uv."""

    profile: TorchProfile
    merged: MergedInputs
    pyproject: str
    fingerprint: Fingerprint
    folder: LockFolder
    mirror_env: Mapping[str, str] = MappingProxyType({})  # uv settings for a run through a mirror


class LockResult(NamedTuple):
    profile: str
    status: str  # "locked" | "up-to-date"
    folder: Path
    packages: int
    reasons: tuple[str, ...]  # why it was (re)locked
    uv_summary: str
    seconds: float
    warnings: tuple[str, ...] = ()  # lines skipped or ignored, nodes left out: never silent


class SyncResult(NamedTuple):
    profile: str
    venv: Path
    torch: TorchBuild | None
    seconds: float
    notes: tuple[str, ...] = ()  # e.g. packages an exact sync removed


def catalogue_for(config: Config) -> ProfileCatalogue:
    return load_catalogue(config.profiles_dirs)


def plan_lock(config: Config, profile: TorchProfile, environ: Mapping[str, str] | None = None) -> LockPlan:
    profile.validate()
    config.validate()
    merged = merge_inputs(config, profile)
    base = _expected_fingerprint(config, profile, environ)
    inputs = {display_input(config, item.path): "" for item in merged.collected.files}
    inputs.update(_input_digests(merged, config))
    input_paths = [*inputs, profile_display_path(profile, config)]
    pyproject = render_pyproject(RenderInput(
        merged=merged.result, profile=profile, requires_python=config.requires_python,
        index_url=base.index_url, input_paths=input_paths, default_index=base.default_index,
        index_format=base.extra.get("index-format", "simple"),
    ))
    raw = {display_input(config, path): file_digest(path) or "" for path in merged.files_read}
    fingerprint = base._replace(
        pyproject_sha256=sha256_text(pyproject), inputs=inputs, raw_inputs=raw,
        roots=tuple(display_input(config, item.path) for item in merged.collected.files),
        warnings=input_warnings(merged),
    )
    from envbuild.mirrors import uv_environment

    mirrors = mirrors_for(config, environ)
    mirror_env = uv_environment(mirrors) if mirrors.locks_through else {}
    return LockPlan(profile, merged, pyproject, fingerprint, LockFolder(config.lock_dir, profile.name), mirror_env)


def _expected_fingerprint(config: Config, profile: TorchProfile, environ: Mapping[str, str] | None) -> Fingerprint:
    """What a current lock must have recorded, as far as it is known without parsing any input."""
    env = os.environ if environ is None else environ
    index_url, default_index, index_format = lock_indexes(config, profile, env)
    from envbuild.gitsrc import resolved_commits

    # Which ComfyUI (and Manager) a lock belongs to: a checkout that moved makes the lock stale.
    extra = {f"{name}-commit": sha for name, sha in resolved_commits(config, env).items()}
    if index_format != "simple":
        extra["index-format"] = index_format
    return Fingerprint(
        profile=profile.name, render_version=RENDER_VERSION, uv_required_version=UV_REQUIRED_VERSION,
        torch_source=profile.torch_source, index_url=index_url, profile_sha256=_profile_digest(profile),
        pyproject_sha256="", inputs={}, default_index=default_index, extra=extra,
        requires_python=config.requires_python,
    )


def mirrors_for(config: Config, environ: Mapping[str, str] | None = None) -> Mirrors:
    from envbuild.mirrors import resolve_mirrors

    env = os.environ if environ is None else environ
    return resolve_mirrors(config.mirrors, config.source, env, config.mirror_flags)


def lock_indexes(config: Config, profile: TorchProfile, env: Mapping[str, str]) -> tuple[str | None, str | None, str]:
    """The torch index, the default index and the torch index's format a lock is made against.

    Only a mirror in mode "lock" changes them: in mode "install" locks stay canonical.
    """
    index_url = profile.resolved_index_url(env)
    mirrors = mirrors_for(config, env)
    if not mirrors.locks_through:
        return index_url, None, "simple"
    from envbuild.mirrors import mirrored_index

    if index_url is not None and mirrors.pytorch:
        index_url = mirrored_index(index_url, mirrors, env)
        return index_url, mirrors.pypi, mirrors.pytorch_layout.replace("tree", "simple")
    return index_url, mirrors.pypi, "simple"


def is_unchanged(config: Config, profile: TorchProfile, environ: Mapping[str, str] | None = None) -> bool:
    """The cheap answer first: True means current without parsing; False means "plan and compare"."""
    roots = [display_input(config, item.path) for item in collect_inputs(config).files]
    folder = LockFolder(config.lock_dir, profile.name)
    return unchanged_since_lock(folder, config.project_dir, roots, _expected_fingerprint(config, profile, environ))


def _profile_digest(profile: TorchProfile) -> str:
    return sha256_text("\n".join(profile.digest_parts()))


def _input_digests(merged: MergedInputs, config: Config) -> dict[str, str]:
    """Per file, a digest of the requirement lines it contributed (comments do not count)."""
    texts: dict[str, list[str]] = {display_input(config, path): [] for path in merged.files_read}
    for group in (merged.result.requirements, merged.result.constraints):
        for requirement in group:
            for item in requirement.origins:
                if item.origin.path in texts:
                    texts[item.origin.path].append(item.text)
    return {path: normalized_digest(sorted(lines)) for path, lines in texts.items()}


def lock_profile(
    config: Config, profile: TorchProfile, *, uv_factory: UvFactory | None = None, upgrade: bool = False,
    upgrade_packages: Sequence[str] = (), stream: bool = True, environ: Mapping[str, str] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> LockResult:
    started = time.perf_counter()
    upgrading = bool(upgrade or upgrade_packages)
    if not upgrading and is_unchanged(config, profile, environ):
        return _up_to_date(LockFolder(config.lock_dir, profile.name), started)
    env = os.environ if environ is None else environ
    timeout = _lock_timeout(env)
    plan = plan_lock(config, profile, environ)  # every input error surfaces before anything is written
    _ignore_scratch_files(config.lock_dir)
    # One writer per profile folder: a second run waits, then finds the lock current (or re-locks).
    with exclusive_lock(config.lock_dir / f".{profile.name}.lock", timeout=timeout, on_wait=on_wait):
        reasons = stale_reasons(plan.folder, plan.pyproject, plan.fingerprint)
        if not reasons and not upgrading:
            _refresh_fingerprint(plan)
            return _up_to_date(plan.folder, started)
        lock_text, summary, unhashed = _lock_staged(config, plan, _uv(uv_factory), upgrade, upgrade_packages,
                                                    stream, environ)
    if upgrading:
        reasons = [*reasons, "upgrade requested"]
    return LockResult(profile.name, "locked", plan.folder.path, count_locked_packages(lock_text),
                      tuple(reasons), summary, time.perf_counter() - started, (*plan.fingerprint.warnings, *unhashed))


def _lock_timeout(env: Mapping[str, str]) -> float:
    """How long to wait for another envbuild locking the same profile (ENVBUILD_LOCK_TIMEOUT, seconds)."""
    raw = env.get(LOCK_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:  # also refuses NaN
        raise UsageError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds",
                         hint=f"e.g. {LOCK_TIMEOUT_ENV}=600, or unset it (default {DEFAULT_LOCK_TIMEOUT:g} s)")
    return seconds


def _ignore_scratch_files(lock_dir: Path) -> None:
    """locks/ is committed; envbuild's lock files and staging folders in it must never be."""
    ignore = lock_dir / ".gitignore"
    if not ignore.exists():
        atomic_write(ignore, "# envbuild's scratch files (per-profile write locks, staged locks)\n.*\n!.gitignore\n")


def _lock_staged(config: Config, plan: LockPlan, uv: Uv, upgrade: bool, upgrade_packages: Sequence[str],
                 stream: bool, environ: Mapping[str, str] | None) -> tuple[str, str, tuple[str, ...]]:
    """Lock a copy beside the folder; only a successful, audited lock replaces the committed one."""
    from envbuild.audit import audit_texts, require_clean

    remove_stale_staging(config.lock_dir, plan.profile.name)  # we hold the profile's lock: a killed run's
    with staging_dir(config.lock_dir, plan.profile.name) as staged:
        atomic_write(staged / "pyproject.toml", plan.pyproject)
        if _trusted_previous_lock(plan.folder):
            # The previous lock is uv's starting point: re-locking keeps versions unless asked.
            import shutil

            shutil.copyfile(plan.folder.uv_lock, staged / "uv.lock")
        env_set, env_unset = _uv_lock_environment(plan)
        summary = uv.lock(staged, upgrade=upgrade, upgrade_packages=upgrade_packages, stream=stream,
                          env_set=env_set, env_unset=env_unset)
        lock_text = (staged / "uv.lock").read_text(encoding="utf-8")
        env = os.environ if environ is None else environ
        report = audit_texts(plan.pyproject, lock_text, plan.profile, folder=staged, environ=env,
                             indexes=lock_indexes(config, plan.profile, env))
        require_clean(report, allow_unhashed=True)  # the index may omit hashes: said below, refused at sync
        unhashed = tuple(f"no sha256 in the lock for {a.describe()} (sync will refuse it without --allow-unhashed)"
                         for a in report.unhashed)
        fingerprint = plan.fingerprint.with_lock(lock_text, _today())._replace(
            audited=True, unhashed=tuple(a.describe() for a in report.unhashed))
        atomic_write(staged / plan.folder.fingerprint_path.name, fingerprint.to_json())
        from envbuild import guard  # the torch guard's constraints.txt, from the lock just made

        guard.write_constraints(staged, plan.profile, lock_text)
        replace_dir(staged, plan.folder.path)
    return lock_text, summary, unhashed


def _trusted_previous_lock(folder: LockFolder) -> bool:
    """Only a uv.lock exactly as envbuild recorded it may seed the next lock: uv keeps a lock that still
    fits as it is, so a hand-edited hash or URL would otherwise be blessed into the new lock."""
    recorded = folder.read_fingerprint()
    return (recorded is not None and bool(recorded.uv_lock_sha256)
            and recorded.uv_lock_sha256 == file_digest(folder.uv_lock))


def _uv_lock_environment(plan: LockPlan) -> tuple[dict[str, str], tuple[str, ...]]:
    """A lock made through a PyPI mirror names it in the pyproject; uv's own default-index settings
    would silently win over that, so they are dropped for this run."""
    unset = DEFAULT_INDEX_ENV if plan.fingerprint.default_index else ()
    return dict(plan.mirror_env), unset


def own_index_env(folder: LockFolder) -> tuple[str, ...]:
    """uv variables to drop for a lock that names its own default index (made through a mirror)."""
    recorded = folder.read_fingerprint()
    return DEFAULT_INDEX_ENV if recorded is not None and recorded.default_index else ()


def _refresh_fingerprint(plan: LockPlan) -> None:
    """Only comments or formatting changed: remember the new bytes so the next run is a fast no-op.

    uv.lock and pyproject.toml are the bytes audited before, so the audit's verdict carries over."""
    recorded = plan.folder.read_fingerprint()
    if recorded is None:
        return
    refreshed = plan.fingerprint._replace(uv_lock_sha256=recorded.uv_lock_sha256, extra=recorded.extra,
                        audited=recorded.audited, unhashed=recorded.unhashed)
    if refreshed != recorded:
        atomic_write(plan.folder.fingerprint_path, refreshed.to_json())


def _up_to_date(folder: LockFolder, started: float) -> LockResult:
    recorded = folder.read_fingerprint()
    packages = count_locked_packages(folder.uv_lock.read_text(encoding="utf-8"))
    warnings = recorded.warnings if recorded else ()
    return LockResult(folder.profile, "up-to-date", folder.path, packages, (), "", time.perf_counter() - started,
                      warnings)


class LockEvent(NamedTuple):
    """Progress of one profile in `lock --all`, reported as it happens (from worker threads)."""

    profile: str
    kind: str  # "started" | "waiting" | "done" | "failed"
    result: LockResult | None = None
    error: EnvbuildError | None = None


def lock_many(
    config: Config, profiles: Sequence[TorchProfile], *, jobs: int, on_event: Callable[[LockEvent], None],
    upgrade: bool = False, upgrade_packages: Sequence[str] = (), environ: Mapping[str, str] | None = None,
) -> list[LockEvent]:
    """Lock several profiles at once (uv is I/O bound), each independently: one failure stops no other."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    found: list[Uv] = []
    finding = threading.Lock()

    def shared_uv() -> Uv:
        """Looked up once, and only if some profile needs it (finding uv is not thread-safe)."""
        with finding:
            if not found:
                found.append(_uv(None))
            return found[0]

    def one(profile: TorchProfile) -> LockEvent:
        on_event(LockEvent(profile.name, "started"))
        try:
            result = lock_profile(config, profile, upgrade=upgrade, upgrade_packages=upgrade_packages, stream=False,
                                  environ=environ, uv_factory=shared_uv,
                                  on_wait=lambda: on_event(LockEvent(profile.name, "waiting")))
            event = LockEvent(profile.name, "done", result=result)
        except EnvbuildError as exc:
            event = LockEvent(profile.name, "failed", error=exc)
        on_event(event)
        return event

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(profiles)))) as pool:
        return list(pool.map(one, profiles))


def input_warnings(merged: MergedInputs) -> tuple[str, ...]:
    """What the inputs asked for that will not be in the lock, one line each."""
    lines = [f"{w.origin}: {w.message}" for w in merged.warnings]
    lines.extend(f"custom node skipped: {skipped}" for skipped in merged.collected.skipped_nodes)
    return tuple(lines)


def check_profile(config: Config, profile: TorchProfile, environ: Mapping[str, str] | None = None) -> list[str]:
    """Offline: why the committed lock would change if locked now (empty: current). No uv, no network."""
    if is_unchanged(config, profile, environ):
        return []
    plan = plan_lock(config, profile, environ)
    return stale_reasons(plan.folder, plan.pyproject, plan.fingerprint)


def _today() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def _uv(factory: UvFactory | None) -> Uv:
    if factory is not None:
        return factory()
    from envbuild.uv import get_uv

    return get_uv()


def default_venv(config: Config) -> Path:
    """Beside the ComfyUI checkout, not inside it: `uv sync`/`uv run` in the checkout would sync
    ComfyUI's own dependency-less pyproject and empty a venv kept there."""
    if config.comfyui is not None:
        return config.comfyui.parent / ".venv"
    return config.project_dir / ".venv"


def sync_profile(
    config: Config, profile: TorchProfile, venv: Path, *, verify: bool = True, inexact: bool = False,
    python: str | None = None, uv_factory: UvFactory | None = None, stream: bool = True,
    environ: Mapping[str, str] | None = None, allow_unhashed: bool = False,
    before_install: Callable[[], None] | None = None,
) -> SyncResult:
    """`before_install`: called once the lock passed every check, just before uv starts (the CLI starts
    its GPU fit check there, so it runs while uv works instead of before it)."""
    started = time.perf_counter()
    folder = LockFolder(config.lock_dir, profile.name)
    if not folder.exists():
        raise StaleLockError(
            f"no lock for profile {profile.name} at {folder.path}",
            hint=f"run `envbuild lock --profile {profile.name}` (on a machine that can reach the index) and commit it",
        )
    _refuse_stale(config, profile, folder, environ)
    _require_trusted(config, profile, folder, environ, allow_unhashed)
    uv = _uv(uv_factory)
    venv = venv.absolute()
    mirrors = mirrors_for(config, environ)
    if before_install is not None:
        before_install()
    if mirrors.installs_through:
        output = sync_through_mirror(uv, folder, venv, mirrors, environ, inexact=inexact, python=python,
                                     stream=stream)
    else:
        try:
            output = uv.sync(folder.path, venv, inexact=inexact, python=python, stream=stream,
                             env_unset=own_index_env(folder))
        except UvError as exc:
            raise (_hash_mismatch(exc, folder.uv_lock.read_text(encoding="utf-8"), "the index")
                   or _partly_changed(exc, venv)) from None
    build = verify_venv(venv, profile) if verify else None
    from envbuild.uv import describe_removals

    return SyncResult(profile.name, venv, build, time.perf_counter() - started, tuple(describe_removals(output)))


def sync_through_mirror(uv: Uv, folder: LockFolder, venv: Path, mirrors: Mirrors,
                        environ: Mapping[str, str] | None, *, inexact: bool, python: str | None,
                        stream: bool) -> str:
    """Install a canonical lock through a mirror, every artifact checked against the lock's sha256.

    uv cannot do this alone (`--frozen` ignores mirror settings, `UV_INDEX` overrides break
    `--locked`): so the canonical lock is first proven current, then a copy whose URLs point at the
    mirror, hashes untouched, is installed with `--frozen`. A mirror that serves other bytes fails
    uv's hash check before anything is installed.
    """
    import logging
    import tempfile

    from envbuild.mirrors import install_rules, rewrite_lock_text, uv_environment

    env = os.environ if environ is None else environ
    for line in mirrors.describe():
        logging.getLogger("envbuild.mirrors").info(line)
    uv.lock(folder.path, check=True, offline=True, stream=False)  # the canonical lock matches its pyproject
    lock_text = folder.uv_lock.read_text(encoding="utf-8")
    rules = install_rules(lock_text, mirrors, env)
    with tempfile.TemporaryDirectory(prefix="envbuild-mirror-") as scratch:
        copy = Path(scratch)
        (copy / "uv.lock").write_text(rewrite_lock_text(lock_text, rules), encoding="utf-8")
        pyproject = folder.pyproject.read_text(encoding="utf-8")
        (copy / "pyproject.toml").write_text(rewrite_lock_text(pyproject, rules), encoding="utf-8")
        rewritten = (copy / "uv.lock").read_text(encoding="utf-8")
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
    block = re.search(rf'name = "{re.escape(name)}"\nversion = "{re.escape(version)}"\n(.*?)(?:\n\n|\Z)',
                      lock_text, re.S)
    urls = re.findall(r'url = "([^"]+)"', block.group(1)) if block else []
    where = f" from {urls[0]}" if len(urls) == 1 else ""
    return LockIntegrityError(
        f"hash mismatch for {name}=={version}{where}: the lock says {expected}, {server} served {computed}; "
        "nothing was installed",
        hint=f"{server} holds other bytes than the ones locked (stale or tampered): "
             + ("use another mirror" if server == "the mirror" else "do not install from it until it serves "
                                                                "the locked files again"),
    )


_CHANGED_VENV = r"^\s*(?:Uninstalled|Installed) \d+ packages? in"


def _partly_changed(exc: UvError, venv: Path) -> UvError:
    """uv can fail an install (a malformed wheel) after it removed or replaced packages: say the venv is
    incomplete now, instead of letting the user think the old one still stands."""
    if re.search(_CHANGED_VENV, exc.uv_message, re.M):
        note = (f"uv had already changed {venv} when it failed, so it is incomplete now: fix the cause and run "
                "`envbuild sync` again")
        exc.hint = f"{note}; {exc.hint}" if exc.hint else note
    return exc


def _require_trusted(config: Config, profile: TorchProfile, folder: LockFolder,
                     environ: Mapping[str, str] | None, allow_unhashed: bool) -> None:
    """The lock's audit: reused from lock time when the files are byte-for-byte what envbuild audited
    and wrote (parsing a large uv.lock costs more than uv's whole no-op sync), else run now."""
    env = os.environ if environ is None else environ
    recorded = folder.read_fingerprint()
    if recorded is not None and recorded.audited and _untouched(folder, recorded) \
            and (recorded.index_url, recorded.default_index) == lock_indexes(config, profile, env)[:2]:
        if recorded.unhashed and not allow_unhashed:
            raise LockIntegrityError(
                f"the lock for profile {profile.name} ({folder.path}) cannot be trusted:\n"
                + "\n".join(f"  - no sha256: {item}" for item in recorded.unhashed),
                hint="the index served these files without a sha256; pass --allow-unhashed to accept them anyway")
        return
    from envbuild.audit import require_clean

    require_clean(audit_folder(config, profile, environ), allow_unhashed=allow_unhashed)


def _untouched(folder: LockFolder, recorded: Fingerprint) -> bool:
    try:
        return (sha256_text(folder.pyproject.read_bytes()) == recorded.pyproject_sha256
                and sha256_text(folder.uv_lock.read_bytes()) == recorded.uv_lock_sha256)
    except OSError:
        return False


def audit_folder(config: Config, profile: TorchProfile, environ: Mapping[str, str] | None = None) -> AuditReport:
    """Hashes and hand-edits of a committed lock, judged against what this deployment would lock."""
    from envbuild.audit import audit_lock

    env = os.environ if environ is None else environ
    return audit_lock(LockFolder(config.lock_dir, profile.name), profile, env,
                      indexes=lock_indexes(config, profile, env))


def refresh_locks_readme(config: Config, *, changed: bool = True) -> Path | None:
    """locks/README.md, rewritten only when what it says changed. `changed=False` (every lock was
    a no-op) skips even reading the locks, unless the README is missing: that is the no-op's cost."""
    path = config.lock_dir / "README.md"
    if not changed and path.is_file():
        return path
    from envbuild.locks_readme import lock_folders, render_locks_readme, summarize

    folders = lock_folders(config.lock_dir)
    if not folders:
        return None
    catalogue = catalogue_for(config)
    text = render_locks_readme(summarize(f, catalogue.profiles.get(f.profile)) for f in folders)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write(path, text)
    return path


def _refuse_stale(config: Config, profile: TorchProfile, folder: LockFolder,
                  environ: Mapping[str, str] | None) -> None:
    """With the inputs at hand, a lock that no longer matches them is refused, saying why."""
    if config.comfyui is None or not (config.comfyui / "requirements.txt").is_file():
        return
    reasons = check_profile(config, profile, environ)
    if reasons:
        raise StaleLockError(
            f"the lock for profile {profile.name} is out of date: " + "; ".join(reasons),
            hint=f"run `envbuild lock --profile {profile.name}` and commit locks/{profile.name}/",
        )


def verify_venv(venv: Path, profile: TorchProfile) -> TorchBuild:
    from envbuild.torchcheck import inspect_torch, mismatches

    build = inspect_torch(venv)
    if build is None:
        raise VerifyError(f"torch is not installed in {venv}", hint="the lock should contain torch; re-run sync")
    problems = mismatches(build, profile, torch_source=profile.torch_source)
    if problems:
        raise VerifyError("the environment does not match the profile:\n  - " + "\n  - ".join(problems),
                          hint=f"re-lock with `envbuild lock --profile {profile.name}`, then sync again")
    return build


def select_profile(catalogue: ProfileCatalogue, config: Config, *, profile: str | None,
                   cuda: str | None) -> TorchProfile:
    """--profile, or --cuda, or the first profile named in envbuild.toml; --torch-source pypi (or
    `[lock] torch-source`) then turns an index profile into its PyPI-sourced variant."""
    if profile and cuda:
        raise UsageError("give either --profile or --cuda, not both")
    source = config.torch_source
    if AUTO in (profile, cuda):
        from envbuild.fitting import candidates, choose_or_explain

        return choose_or_explain(candidates(catalogue, source))
    if profile:
        return catalogue.with_source(catalogue.get(profile), source)
    if cuda:
        return catalogue.with_source(catalogue.for_cuda(cuda), source)
    if config.profiles:
        return catalogue.with_source(catalogue.get(config.profiles[0], listed_in=LISTED_IN), source)
    committed = committed_profiles(config)
    raise UsageError(
        "no profile given",
        hint="pass --profile NAME or --cuda VERSION, or list profiles under [lock] in envbuild.toml"
        + (f" (committed locks: {', '.join(committed)})" if committed else ""),
    )


def committed_profiles(config: Config) -> list[str]:
    if not config.lock_dir.is_dir():
        return []
    # Dot folders are envbuild's staging copies (one a killed run left behind), never a profile.
    return sorted(p.parent.name for p in config.lock_dir.glob("*/uv.lock") if not p.parent.name.startswith("."))
