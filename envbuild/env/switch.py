"""How `sync` uses generations: which folder a lock is installed into, and the switch after it.

generations.py knows folders and links; this module adds the deployment (the lock a generation is built
from, how many to keep) and the one rule that protects a running ComfyUI: a generation it holds is
never changed under it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple

from envbuild.core.errors import EnvbuildError, UsageError
from envbuild.deploy.deployment import Deployment
from envbuild.env import generations
from envbuild.env.generations import Generation
from envbuild.torch.profile import TorchProfile


def prepare_generation(deployment: Deployment, profile: TorchProfile, venv: Path) -> Path:
    """The folder this lock is installed into: its generation (an existing one is reused: uv makes it
    exact again, a no-op when nothing changed). Where generations are off (Windows), the venv itself."""
    if not generations.supported():
        return venv
    if generations.is_foreign_link(venv):
        raise UsageError(f"{venv} is a symlink envbuild did not make (to {venv.readlink()})",
                         hint="envbuild points the venv path at its own generations: remove the link, or pass "
                              "--venv with another path")
    folder = deployment.folder(profile)
    target = generations.generation_path(venv, profile.name, generations.lock_digest(folder))
    if target.is_dir() and generations.in_use(target) and _would_change(deployment, profile, target):
        raise UsageError(f"a running ComfyUI uses {target}, and this sync would change packages under it",
                         hint="stop ComfyUI first (nothing was changed)")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Held until this envbuild exits: a concurrent sync's prune must not remove a generation being built.
    generations.hold_in_use(target)
    return target


def finish_generation(deployment: Deployment, profile: TorchProfile, venv: Path, target: Path, *,
                      switch: bool) -> list[str]:
    """Mark the generation built (keeping when it was first made), then switch to it if asked.
    Returns what was done, to be said."""
    if target == venv:
        return []
    found = generations.read_generation(target)
    if not found.complete:
        folder = deployment.folder(profile)
        root = deployment.lock_dir  # `update` installs a staged lock: name the folder it will replace
        if root.name.startswith(f".{profile.name}.staging-"):
            root = root.parent
        generations.write_generation(target, profile=profile.name, digest=target.name[len(profile.name) + 1:],
                                     lock=deployment.display(root / profile.name), folder=folder)
    return switch_to(deployment, venv, target) if switch else []


def switch_to(deployment: Deployment, venv: Path, target: Path) -> list[str]:
    """Point the venv path at `target` (adopting a real venv folder first), then remove generations
    beyond [generations] keep. Nothing to do when it already points there. Two envbuilds switching
    the same venv path take turns (its history and the prune must not interleave)."""
    if generations.current(venv) == target:
        return []
    with _switching(deployment, venv):
        return _switch_locked(deployment, venv, target)


def _switching(deployment: Deployment, venv: Path) -> AbstractContextManager[None]:
    from envbuild.core.fsio import exclusive_lock

    return exclusive_lock(generations.generations_dir(venv) / f".{venv.name}.switch.lock",
                          timeout=deployment.lock_timeout)


def _switch_locked(deployment: Deployment, venv: Path, target: Path) -> list[str]:
    said: list[str] = []
    adopted = generations.adopt(venv)
    if adopted is not None:
        said.append(f"kept the venv made before generations as {deployment.display(adopted.path)} "
                    "(`envbuild rollback` returns to it)")
    generations.switch(venv, target)
    said.append(f"{deployment.display(venv)} -> {deployment.display(target)}")
    try:
        removed = generations.prune(venv, deployment.config.keep_generations)
    except OSError as exc:  # the switch is done; an old folder that cannot be removed is only said
        return [*said, f"could not remove old generations: {exc}"]
    said += [f"removed old generation {path.name} (beyond [generations] keep = "
             f"{deployment.config.keep_generations})" for path in removed]
    return said


def _would_change(deployment: Deployment, profile: TorchProfile, target: Path) -> bool:
    from envbuild.uv.command import package_changes

    try:
        output = deployment.uv.sync(deployment.folder(profile).path, target, dry_run=True, stream=False)
    except EnvbuildError:
        return True
    installs, removals = package_changes(output)
    return bool(installs or removals)


class GenerationRow(NamedTuple):
    """One line of `envbuild generations`."""

    name: str
    profile: str | None
    digest: str | None
    created: str | None
    current: bool
    previous: bool
    in_use: bool
    complete: bool
    size: int  # bytes on disk, a file hardlinked inside the generation counted once

    def to_dict(self) -> dict[str, object]:
        return self._asdict()


def list_rows(venv: Path) -> list[GenerationRow]:
    now, before = generations.current(venv), generations.previous(venv)
    return [GenerationRow(g.name, g.profile, g.digest, g.created, g.path == now,
                          before is not None and g.path == before.path, generations.in_use(g.path), g.complete,
                          generations.size_on_disk(g.path))
            for g in generations.list_generations(venv)]


class Rollback(NamedTuple):
    left: Generation | None
    now: Generation
    lock_note: str | None  # when the committed lock is no longer the one the generation was built from


def roll_back(deployment: Deployment, venv: Path) -> Rollback:
    """Switch the venv path to its previous generation, and say whether the committed lock still matches
    it: `envbuild run` refuses an environment that does not hold the committed lock."""
    generations.require_current(venv)  # before the lock: no generations folder made for a venv without one
    with _switching(deployment, venv):
        left, now = generations.rollback(venv)
    return Rollback(left, now, _lock_note(deployment, now))


def _lock_note(deployment: Deployment, generation: Generation) -> str | None:
    if generation.profile is None or generation.digest is None:
        return None
    folder = deployment.folder(generation.profile)
    try:
        committed = generations.lock_digest(folder)
    except OSError:
        committed = None
    if committed == generation.digest:
        return None
    where = deployment.display(folder.path)
    saved = deployment.display(generation.path / generations.LOCK_COPY)
    now = f"is at {committed}" if committed else "is missing"
    said = f"the committed lock {where} {now}, this generation holds {generation.digest}"
    if committed is not None and _runs(deployment, generation):
        return (f"{said}; `envbuild run` still starts it (it holds every package the committed lock lists), and "
                "`envbuild sync` builds the committed one")
    return (f"{said}: `envbuild run` refuses it until the lock matches again (restore it from version control, "
            f"or copy uv.lock and pyproject.toml from {saved})")


def _runs(deployment: Deployment, generation: Generation) -> bool:
    """Would `envbuild run` start this generation with the committed lock? The same check run makes."""
    from envbuild.core.errors import EnvbuildError
    from envbuild.env.run import check_synced
    from envbuild.uv.command import venv_python

    if generation.profile is None:
        return False
    try:
        profile = deployment.catalogue.get(generation.profile)
        check_synced(deployment.uv, deployment.folder(profile), profile, generation.path,
                     venv_python(generation.path), generation.path)
    except EnvbuildError:
        return False
    return True


def generation_status(deployment: Deployment, venv: Path) -> tuple[str, str]:
    """For `doctor`: (pass|warn|skip, detail): is the venv path a generation envbuild made, and which."""
    if not generations.supported():
        return "skip", "generations are POSIX only: sync builds the venv in place here"
    now = generations.current(venv)
    if now is not None:
        found = generations.read_generation(now)
        before = generations.previous(venv)
        made = (found.created or "?")[:19].replace("T", " ")
        state = "" if found.complete else " (incomplete: its build was interrupted)"
        back = f"; rollback goes to {before.name}" if before is not None else ""
        return ("pass" if found.complete else "warn",
                f"{deployment.display(venv)} -> {found.describe()}, made {made} UTC{state}{back}")
    if generations.is_foreign_link(venv):
        return "warn", f"{venv} is a symlink envbuild did not make: sync refuses to replace it"
    if venv.is_dir():
        return "warn", (f"{venv} is a venv made before generations: the next `envbuild sync` keeps it as a "
                        "generation (adopted, not deleted) and switches to a new one")
    return "skip", f"no venv at {venv}"
