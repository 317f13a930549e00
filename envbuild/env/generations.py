"""Venv generations: every lock's environment is a folder of its own, and the venv path is a link to one.

`sync` used to rewrite the one venv in place: a lock that turned out bad left no working environment
behind. Now a lock is installed into `<venv parent>/.envbuild-generations/<profile>-<digest>/` (the
digest: sha256 of the lock's uv.lock and pyproject.toml), and the venv path is switched to it with one
atomic rename of a symlink. The previous generation stays on disk (uv hardlinks from its cache, so a
second generation costs little), `rollback` switches back, and a generation a running ComfyUI holds
(a shared flock it keeps across exec) is never deleted.

POSIX only: Windows has no atomic replacement of a directory link (a junction must be removed before
another takes its name), so there `sync` keeps building the venv in place.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from envbuild.core.errors import UsageError
from envbuild.core.fsio import atomic_write
from envbuild.pkgs.lockdir import LockFolder

GENERATIONS_DIR = ".envbuild-generations"
META_NAME = "envbuild-generation.json"
LOCK_COPY = ".envbuild-lock"  # the uv.lock and pyproject.toml the generation was built from
_HISTORY_LIMIT = 50


def supported() -> bool:
    """Generations need a directory symlink that `os.replace` can swap atomically: POSIX."""
    return os.name == "posix"


def lock_digest(folder: LockFolder) -> str:
    """What names a generation: the bytes that decide what is installed (12 hex of sha256)."""
    digest = hashlib.sha256()
    for path in (folder.uv_lock, folder.pyproject):
        data = path.read_bytes()
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Generation:
    path: Path
    profile: str | None  # None: a venv adopted from before generations existed
    digest: str | None
    created: str | None  # ISO 8601, UTC
    lock: str | None  # the lock folder it was built from, as the deployment displays it
    complete: bool  # its build and checks finished (an interrupted build is reused by the next sync)

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        if self.profile is None:
            return f"{self.name} (a venv made before generations, adopted)"
        return f"{self.name} (lock {self.lock or self.profile} {self.digest})"


def generations_dir(venv: Path) -> Path:
    return venv.parent / GENERATIONS_DIR


def generation_path(venv: Path, profile: str, digest: str) -> Path:
    return generations_dir(venv) / f"{profile}-{digest}"


def read_generation(path: Path) -> Generation:
    try:
        meta = json.loads((path / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        return Generation(path, None, None, None, None, complete=False)
    return Generation(path, meta.get("profile"), meta.get("digest"), meta.get("created"), meta.get("lock"),
                      complete=bool(meta.get("complete")))


def write_generation(path: Path, *, profile: str | None, digest: str | None, lock: str | None,
                     folder: LockFolder | None = None) -> Generation:
    """Mark a generation complete; keep a copy of its lock, so it can be named (and restored) later."""
    created = _now()
    if folder is not None:
        for source in (folder.uv_lock, folder.pyproject):
            atomic_write(path / LOCK_COPY / source.name, source.read_bytes())
    meta = {"schema": 1, "profile": profile, "digest": digest, "lock": lock, "created": created, "complete": True}
    atomic_write(path / META_NAME, json.dumps(meta, indent=2) + "\n")
    return Generation(path, profile, digest, created, lock, complete=True)


def current(venv: Path) -> Path | None:
    """The generation the venv path points at (None: no link, or a link envbuild did not make)."""
    if not venv.is_symlink():
        return None
    target = Path(os.path.normpath(venv.parent / os.readlink(venv)))
    return target if target.parent == generations_dir(venv) else None


def is_foreign_link(venv: Path) -> bool:
    return venv.is_symlink() and current(venv) is None


def list_generations(venv: Path) -> list[Generation]:
    """Every generation beside the venv path, oldest first."""
    folder = generations_dir(venv)
    if not folder.is_dir():
        return []
    found = [read_generation(p) for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda g: (g.created or "", g.name))


def adopt(venv: Path) -> Generation | None:
    """A venv path that is a real folder (made before generations) becomes a generation: moved, never
    deleted. Its console scripts keep naming the old path, which stays valid while it is current."""
    if venv.is_symlink() or not venv.is_dir():
        return None
    if not (venv / "pyvenv.cfg").is_file():  # only a virtual environment is envbuild's to move
        raise UsageError(f"{venv} is a folder but not a virtual environment (no pyvenv.cfg): envbuild does not "
                         "move or replace it", hint="name another --venv path, or move that folder away yourself")
    import datetime

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    target = generations_dir(venv) / f"adopted-{venv.name.lstrip('.')}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(venv, target)
    generation = write_generation(target, profile=None, digest=None, lock=None)
    _append_history(venv, target.name)
    return generation


def switch(venv: Path, generation: Path) -> None:
    """Point the venv path at `generation` with one rename: a process that opens the venv sees the old
    generation or the new one, never neither. The link is relative, so the deployment can be moved."""
    if os.path.lexists(venv) and not venv.is_symlink():
        if not venv.is_dir():  # a regular file (or FIFO...) at the venv path is not envbuild's to replace
            raise UsageError(f"{venv} exists and is not a folder: envbuild does not replace it",
                             hint="name another --venv path, or move that file away yourself")
        adopt(venv)
    link = os.path.relpath(generation, venv.parent)
    temporary = venv.with_name(f".{venv.name}.switch-{os.getpid()}")
    if temporary.is_symlink():
        temporary.unlink()
    os.symlink(link, temporary, target_is_directory=True)
    try:
        os.replace(temporary, venv)
    except BaseException:
        temporary.unlink()
        raise
    _append_history(venv, generation.name)


def require_current(venv: Path) -> Path:
    now = current(venv)
    if now is None:
        raise UsageError(f"{venv} is not a generation envbuild made, so there is nothing to roll back to",
                         hint="`envbuild sync` builds generations; see `envbuild generations`")
    return now


def previous(venv: Path) -> Generation | None:
    """The generation the venv path pointed at before the current one (that still exists)."""
    now = current(venv)
    for name in reversed(_history(venv)):
        path = generations_dir(venv) / name
        if (now is None or name != now.name) and (path / META_NAME).is_file():
            return read_generation(path)
    return None


def rollback(venv: Path) -> tuple[Generation | None, Generation]:
    """Switch back to the previous generation; (from, to). A second rollback switches forth again."""
    now = require_current(venv)
    before = previous(venv)
    if before is None:
        raise UsageError(f"{venv} has no previous generation to roll back to (it is on {now.name})",
                         hint="see `envbuild generations`")
    switch(venv, before.path)
    return read_generation(now), before


def in_use(generation: Path) -> bool:
    """Does a running ComfyUI (or a sync building it) hold this generation? (a shared flock on its marker)"""
    import fcntl

    marker = _in_use_marker(generation)
    try:
        fd = os.open(marker, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


def hold_in_use(generation: Path) -> int:
    """Take a shared flock on the generation and keep its descriptor open across exec: the lock lives as
    long as the process (ComfyUI) does, and the kernel drops it when that process ends."""
    import fcntl

    fd = os.open(_in_use_marker(generation), os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.set_inheritable(fd, True)
    return fd


def prune(venv: Path, keep: int) -> list[Path]:
    """Remove generations beyond the `keep` newest; never the current or previous one of any venv link
    beside it, never one in use. Returns what was removed."""
    protected = set(_linked(venv.parent))
    for link in _links(venv.parent):
        before = previous(link)
        if before is not None:
            protected.add(before.name)
    removed: list[Path] = []
    for rank, generation in enumerate(reversed(list_generations(venv))):  # newest first
        # An adopted venv (profile None) was the user's before envbuild built any: never removed.
        if rank < keep or generation.name in protected or generation.profile is None or in_use(generation.path):
            continue
        _remove(generation.path)
        removed.append(generation.path)
    return removed


def size_on_disk(path: Path) -> int:
    """Bytes the folder's files occupy, a hardlinked file counted once (uv links from its cache, so the
    honest cost of a generation is what `du` says, not the sum of file sizes)."""
    return total_on_disk([path])


def total_on_disk(paths: Iterable[Path]) -> int:
    """Bytes several folders occupy together, each hardlinked file counted once across all of them: the
    generations of one venv share most files (uv links them from one cache), so their sizes do not add."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, files in (entry for path in paths for entry in os.walk(path)):
        for name in files:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512 if hasattr(stat, "st_blocks") else stat.st_size
    return total


def _in_use_marker(generation: Path) -> Path:
    """Beside the generation, not in it: uv refuses to build a venv into a folder that holds other files,
    and a sync holds this while it builds (a concurrent prune must not take a generation being built)."""
    return generation.with_name(f".{generation.name}.in-use")


def _links(parent: Path) -> Iterable[Path]:
    """The venv paths in `parent` that are generation links."""
    for entry in parent.iterdir():
        if entry.is_symlink() and current(entry) is not None:
            yield entry


def _linked(parent: Path) -> Iterable[str]:
    for link in _links(parent):
        target = current(link)
        if target is not None:
            yield target.name


def _history_path(venv: Path) -> Path:
    return generations_dir(venv) / f".{venv.name}.history.json"


def _history(venv: Path) -> list[str]:
    try:
        names = json.loads(_history_path(venv).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _append_history(venv: Path, name: str) -> None:
    names = [*(n for n in _history(venv)), name]
    atomic_write(_history_path(venv), json.dumps(names[-_HISTORY_LIMIT:]) + "\n")


def _remove(path: Path) -> None:
    """Rename aside first (one step), then delete: an interrupted removal never leaves a half generation
    under a name a sync would reuse."""
    import shutil

    doomed = path.with_name(f".{path.name}.removing")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    _in_use_marker(path).unlink(missing_ok=True)


def _now() -> str:
    """datetime is imported here: a no-op sync (an existing generation, already current) never needs it."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
