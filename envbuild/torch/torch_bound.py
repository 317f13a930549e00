"""Packages built for one torch minor that declare no torch requirement (triton-windows): uv takes their
newest release whatever torch the lock holds, so a lock can pair torch 2.7 with a Triton built for 2.8.

The table is data (envbuild/data/torch_bound.toml, with its source). After a lock, `needed_bounds` reads
the locked torch and each such package; one at another minor than the table's gets a constraint that
holds it there (`triton-windows>=3.3,<3.4`) and the profile is locked again (envbuild.lock.settle). The
constraint is recorded in the fingerprint (`bounds`) and rendered from it, so the pyproject stays
reproducible; a recorded one is used only if the table gives it for a torch minor the profile allows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from envbuild.core.errors import ConflictError

if TYPE_CHECKING:
    from envbuild.pkgs.merging import MergeResult
    from envbuild.pkgs.uvlock import LockFile
    from envbuild.torch.profile import TorchProfile

_DATA = "envbuild/data/torch_bound.toml"


class BoundRule(NamedTuple):
    package: str
    minors: Mapping[str, str]  # torch minor -> the package's minor built for it
    source: str


@functools.lru_cache(maxsize=1)
def bound_rules() -> tuple[BoundRule, ...]:
    import importlib.resources

    from envbuild.core.tomlfile import parse_toml

    text = (importlib.resources.files("envbuild") / "data" / "torch_bound.toml").read_text(encoding="utf-8")
    data = parse_toml(text, _DATA)
    return tuple(BoundRule(name, dict(table["torch"]), str(table["source"]))
                 for name, table in sorted(data["packages"].items()))


def bound_for(minor: str) -> str:
    """The constraint that holds a package at one minor: `3.3` -> `>=3.3,<3.4`."""
    major, _, rest = minor.partition(".")
    return f">={minor},<{major}.{int(rest) + 1}"


def minor_of(version: str) -> str:
    from packaging.version import Version

    return ".".join(str(part) for part in (Version(version).release + (0,))[:2])


class Bound(NamedTuple):
    """A package the lock holds at another minor than its torch needs."""

    package: str
    locked: str  # the version uv took
    torch: str  # the locked torch's minor
    minor: str  # the package's minor built for it

    @property
    def specifier(self) -> str:
        return bound_for(self.minor)


def needed_bounds(lock: LockFile) -> list[Bound]:
    """Each table package the lock holds at a minor its torch does not take (torch minors the table has
    no row for are left to `unchecked`)."""
    torch = _torch_minors(lock)
    needed = []
    for rule in bound_rules():
        locked = sorted({p.version for p in lock.packages if p.name == rule.package})
        known = [t for t in torch if t in rule.minors]
        if not locked or not known:
            continue
        wanted = sorted({rule.minors[t] for t in known})
        if len(wanted) > 1:
            raise ConflictError(rule.package, [f"the lock holds torch {', '.join(known)}, which need {rule.package} "
                                               f"{' and '.join(wanted)}: one environment installs one"],
                                hint="lock one torch minor per profile (narrow the profile's torch range)")
        for version in locked:
            if minor_of(version) != wanted[0]:
                needed.append(Bound(rule.package, version, known[0], wanted[0]))
                break
    return needed


def unchecked(lock: LockFile) -> list[str]:
    """A table package locked with a torch minor the table has no row for (a torch newer than its source
    lists): said with every lock, not refused, since nothing says which build fits and uv's choice may."""
    torch = _torch_minors(lock)
    notes = []
    for rule in bound_rules():
        locked = sorted({p.version for p in lock.packages if p.name == rule.package})
        unknown = [t for t in torch if t not in rule.minors]
        if locked and unknown:
            notes.append(f"{rule.package} {', '.join(locked)} is locked with torch {', '.join(unknown)}, which "
                         f"envbuild's table of the {rule.package} minor each torch needs has no row for: not "
                         f"checked (see {rule.source.split(',')[0]}; pin {rule.package} in a requirements "
                         "file if its table names another minor)")
    return notes


def _torch_minors(lock: LockFile) -> list[str]:
    return sorted({minor_of(p.version) for p in lock.packages if p.name == "torch"})


def refuse_unbound(bounds: list[Bound]) -> None:
    """The lock made with the constraints still pairs a package with another torch: never committed."""
    if bounds:
        bound = bounds[0]
        raise ConflictError(bound.package, [
            f"{bound.package} {bound.locked} is locked with torch {bound.torch}, which needs {bound.package} "
            f"{bound.minor}, even with the constraint {bound.package}{bound.specifier}"],
            hint=f"check that the index serves a {bound.package} {bound.minor} wheel for the profile's platforms")


def audit_problems(lock: LockFile) -> list[str]:
    """For the audit: a lock envbuild would not have written (a package of the table at another minor
    than its torch needs)."""
    try:
        found = needed_bounds(lock)
    except ConflictError as exc:
        return [f"uv.lock: {exc.details[0]} (envbuild refuses such a lock)"]
    return [f"uv.lock holds {b.package} {b.locked} with torch {b.torch}, which needs {b.package} {b.minor} (envbuild "
            "never writes such a lock)" for b in found]


def describe(bound: Bound) -> str:
    return (f"held {bound.package} at {bound.minor} for torch {bound.torch} (uv took {bound.locked}, built for "
            f"another torch; the table: envbuild/data/torch_bound.toml)")


def check_recorded(recorded: Mapping[str, str], profile: TorchProfile) -> tuple[dict[str, str], tuple[str, ...]]:
    """The recorded constraints to render with, and why any other is not one envbuild could have made: a
    package of the table, at the minor the table gives for a torch minor the profile's torch allows."""
    from envbuild.core.text import quoted
    from envbuild.pkgs.lockdir import FINGERPRINT_NAME

    rules = {r.package: r for r in bound_rules()}
    usable: dict[str, str] = {}
    problems: list[str] = []
    for package, specifier in sorted(recorded.items()):
        rule = rules.get(package)
        allowed = sorted({bound_for(m) for t, m in rule.minors.items() if _allows(profile, t)}) if rule else []
        if specifier in allowed:
            usable[package] = specifier
        else:
            problems.append(f"{FINGERPRINT_NAME} bounds {quoted(package)} to {quoted(specifier)}, which envbuild "
                            f"never writes for profile {profile.name}"
                            + (f" (it writes {' or '.join(allowed)})" if allowed else ""))
    return usable, tuple(problems)


def _allows(profile: TorchProfile, torch_minor: str) -> bool:
    """Does the profile's torch requirement take some release of this minor?"""
    torch = next((p for p in profile.packages if p.name == "torch"), None)
    if torch is None:
        return False
    return any(torch.specifier.contains(f"{torch_minor}.{patch}", prereleases=True) for patch in range(20))


def with_bounds(result: MergeResult, bounds: Mapping[str, str], where: str) -> MergeResult:
    """The merged constraints with each recorded bound added (uv intersects it with any input's)."""
    if not bounds:
        return result
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    from envbuild.pkgs.merging import MergedRequirement, MergeResult
    from envbuild.pkgs.requirements import Origin, SourcedRequirement

    added = []
    for package, specifier in bounds.items():
        text = f"{package}{specifier}"
        origin = Origin(where, 0, f"envbuild: {package} for the locked torch")
        added.append(MergedRequirement(package, frozenset(), SpecifierSet(specifier), None, None,
                                       (SourcedRequirement(Requirement(text), origin, text),)))
    constraints = sorted((*result.constraints, *added), key=lambda r: (r.name, str(r.marker or "")))
    return MergeResult(result.requirements, tuple(constraints))
