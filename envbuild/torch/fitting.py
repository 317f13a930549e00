"""Which profile fits this machine: the glue between GPU detection (`gpu`) and the profiles.

`gpu` knows drivers, architectures and the rule table; this module knows which profiles are
candidates (index or PyPI torch, committed locks only for `sync`) and which torch version a
committed lock really holds, so the architecture check uses the build that will be installed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from envbuild.core.errors import DetectionError
from envbuild.pkgs.lockdir import LockFolder
from envbuild.pkgs.uvlock import first_locked_version
from envbuild.torch.catalogue import ProfileCatalogue
from envbuild.torch.gpu import Fit, Machine, Recommendation, assess, detect_machine, load_rules, recommend
from envbuild.torch.gpu.explain import ended_clause, recommendation_action, recommendation_reason
from envbuild.torch.profile import TORCH_SOURCE_PYPI, TorchProfile

_RELEASE = re.compile(r"v?(?:(\d+)!)?(\d+(?:\.\d+)*)", re.I)  # PEP 440 epoch and release, what base_version keeps


class Choice(NamedTuple):
    machine: Machine
    recommendation: Recommendation


def candidates(catalogue: ProfileCatalogue, torch_source: str | None = None) -> list[TorchProfile]:
    """Profiles `auto` may pick: by default those from PyTorch's indexes (plus mps, which has none);
    with torch_source "pypi", the PyPI-sourced variants (plus cpu and mps)."""
    result = []
    for name in catalogue.names():
        profile = catalogue.get(name)
        if profile.accelerator == "mps":
            result.append(profile)
        elif torch_source == TORCH_SOURCE_PYPI:
            if profile.base is not None or profile.accelerator == "cpu":
                result.append(profile)
        elif profile.base is None:
            result.append(profile)
    return result


def locked_torch_version(folder: LockFolder) -> str | None:
    """The torch version a committed lock installs (its first torch entry). It runs on every no-op sync,
    so it searches the text instead of parsing it (see uvlock.first_locked_version for the cost)."""
    try:
        text = folder.uv_lock.read_text(encoding="utf-8")
    except OSError:
        return None
    return first_locked_version(text, "torch")


def choose(profiles: Sequence[TorchProfile], *, environ: Mapping[str, str], include_nightly: bool = False) -> Choice:
    machine = detect_machine(env=environ)
    rec = recommend(machine, profiles, load_rules(), include_nightly=include_nightly)
    return Choice(machine, rec)


def choose_or_explain(profiles: Sequence[TorchProfile], *, environ: Mapping[str, str]) -> TorchProfile:
    """`--cuda auto`: the recommended profile, or a DetectionError that says what to do."""
    choice = choose(profiles, environ=environ)
    rec = choice.recommendation
    if rec.profile is None:
        raise DetectionError(f"no profile fits this machine: {recommendation_reason(rec)}",
                             hint=recommendation_action(rec))
    return next(p for p in profiles if p.name == rec.profile)


def ended_note(profile: TorchProfile, profiles: Sequence[TorchProfile], *, environ: Mapping[str, str]) -> str:
    """For `auto`'s choice of a line that ended: ", the last build for your GPU: torch ≤ 2.14" when no newer
    line has its kernels, else that the line ended ("" for a current line; detection runs only then)."""
    if profile.last_torch is None:
        return ""
    rec = choose(profiles, environ=environ, include_nightly=profile.channel == "nightly").recommendation
    if rec.profile == profile.name and rec.last_torch is not None:
        return ended_clause(rec)
    return f" (its line ended with torch {profile.last_torch})"


def choose_committed(catalogue: ProfileCatalogue, lock_dir: Path, committed: Sequence[str], *,
                     environ: Mapping[str, str]) -> TorchProfile:
    """`sync --profile auto`: the best profile that both fits this machine and has a committed lock."""
    locked = [catalogue.get(name) for name in committed if name in catalogue.profiles]
    if not locked:
        raise DetectionError(f"no committed locks in {lock_dir}", hint="run `envbuild lock` first (and commit locks/)")
    choice = choose(locked, environ=environ, include_nightly=True)
    rec = choice.recommendation
    if rec.profile is not None:
        return catalogue.get(rec.profile)
    would_fit = choose(candidates(catalogue), environ=environ).recommendation
    fitting = [f.profile for f in would_fit.fits if f.ok]
    raise DetectionError(
        f"none of the committed locks ({', '.join(committed)}) fits this machine: {recommendation_reason(rec)}",
        hint=(f"profiles that would fit: {', '.join(fitting)}; lock one with `envbuild lock --profile NAME`"
              if fitting else recommendation_action(rec) or "see `envbuild detect`"),
    )


def fit_of(profile: TorchProfile, folder: LockFolder | None, *, environ: Mapping[str, str]) -> tuple[Machine, Fit]:
    """Can this machine run this profile (the locked torch version, when there is a lock)?"""
    machine = detect_machine(env=environ)
    version = locked_torch_version(folder) if folder is not None else None
    return machine, assess(machine, profile, load_rules(), torch_version=_public(version))


def _public(version: str | None) -> str | None:
    """`2.7.1+cu126` → `2.7.1`, `2.9.0.dev20250801+cu128` → `2.9.0`: the rule table is keyed by release."""
    if not version:
        return None
    match = _RELEASE.match(version.strip())
    if match is None:
        return None
    epoch, release = match.groups()
    release = ".".join(str(int(part)) for part in release.split("."))
    return f"{epoch}!{release}" if epoch and int(epoch) else release
