"""What envbuild settled after a lock and recorded in the fingerprint, used again only when envbuild
itself could have decided it: one table, a row per kind of recorded choice.

A lock folder's fingerprint (`envbuild-lock.json`) is an untrusted file. Each kind of choice it records
has a check (is this a choice envbuild could have made for this profile and these inputs?), a way to
render it into the merged requirements, and the header line the pyproject shows for it. A fourth kind is
one more row of `KINDS` (and one field of `Settled`/`Fingerprint`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from envbuild.core.text import quoted
from envbuild.pkgs.lockdir import FINGERPRINT_NAME
from envbuild.torch import companions, torch_bound

if TYPE_CHECKING:
    from packaging.requirements import Requirement

    from envbuild.pkgs.merging import MergeResult
    from envbuild.torch.profile import TorchProfile
    from envbuild.torch.variants import VariantGroup


class Settled(NamedTuple):
    """What envbuild settled after a lock, as recorded in the fingerprint: variant groups (module -> member
    kept, envbuild.lock.settle) and torch-bound constraints (package -> specifier, envbuild.torch.torch_bound)."""

    groups: Mapping[str, str] = MappingProxyType({})
    bounds: Mapping[str, str] = MappingProxyType({})
    companions: tuple[str, ...] = ()  # the profile's companions a dependency brought, asked directly

    def __bool__(self) -> bool:
        return bool(self.groups or self.bounds or self.companions)


class Context(NamedTuple):
    """What a recorded choice is checked against and rendered into."""

    profile: TorchProfile
    groups: Sequence[VariantGroup]
    merged: MergeResult
    where: str  # the fingerprint's path as shown
    project_dir: Path


class Kind(NamedTuple):
    """One kind of recorded choice: `Settled`'s field, its check, its render and its header lines."""

    field: str
    check: Callable[[Any, Context], tuple[Any, tuple[str, ...]]]
    apply: Callable[[MergeResult, Any, Context], MergeResult]
    notes: Callable[[Any], Iterable[str]]


KINDS: tuple[Kind, ...] = (
    Kind("groups",
         lambda recorded, c: check_recorded(recorded, c.groups, c.profile, c.merged),
         lambda result, kept, c: with_settlements(result, kept, c.where),
         lambda kept: (f"Settled by envbuild (recorded in {FINGERPRINT_NAME}): the `{module}` module from {text}."
                       for module, text in sorted(kept.items()))),
    Kind("bounds",
         lambda recorded, c: torch_bound.check_recorded(recorded, c.profile),
         lambda result, bounds, c: torch_bound.with_bounds(result, bounds, c.where),
         lambda bounds: (f"Held by envbuild (recorded in {FINGERPRINT_NAME}): {package}{specifier}, for the "
                         "locked torch." for package, specifier in sorted(bounds.items()))),
    Kind("companions",
         lambda recorded, c: companions.check_recorded(recorded, c.profile, c.merged),
         lambda result, names, c: companions.with_asked(result, names, c.profile, c.project_dir),
         lambda names: (f"Asked by envbuild (recorded in {FINGERPRINT_NAME}): {name}, a dependency's, as the "
                        "profile takes it." for name in sorted(names))),
)


def apply_recorded(settled: Settled, context: Context) -> tuple[MergeResult, Settled, tuple[str, ...]]:
    """The merged requirements with every usable recorded choice, the choices used, and why any other
    is not one envbuild could have made."""
    result, used, problems = context.merged, dict[str, Any](), list[str]()
    for kind in KINDS:
        usable, refused = kind.check(getattr(settled, kind.field), context)
        used[kind.field] = usable
        problems.extend(refused)
    for kind in KINDS:
        result = kind.apply(result, used[kind.field], context)
    return result, Settled(**used), tuple(problems)


def header_notes(settled: Settled) -> tuple[str, ...]:
    """The pyproject's header says which requirement or constraint no input wrote (nothing when none)."""
    return tuple(note for kind in KINDS for note in kind.notes(getattr(settled, kind.field)))


def origin_source(module: str) -> str:
    """What `merge --explain` and the refusals name as the asker of a settled requirement."""
    return f"envbuild: settles the {module} module"


def check_recorded(recorded: Mapping[str, str], groups: Iterable[VariantGroup], profile: TorchProfile,
                   merged: MergeResult) -> tuple[dict[str, str], tuple[str, ...]]:
    """The recorded choices to render with, and why any other is not one envbuild could have made.

    A choice for a group the inputs now settle themselves (a direct requirement names a member) is moot:
    left out without complaint, as the pyproject changes with the inputs anyway."""
    by_module = {g.module: g for g in groups}
    direct = merged.names()
    usable: dict[str, str] = {}
    problems: list[str] = []
    for module, text in sorted(recorded.items()):
        group = by_module.get(module)
        said = f"{FINGERPRINT_NAME} settles {quoted(module)} on {quoted(text)}"
        requirement = parse_settled(text)
        kept = requirement.name if requirement is not None else text
        if group is None:
            problems.append(f"{said}, but {quoted(module)} is no variant group of this deployment")
        elif requirement is None:
            problems.append(f"{said}, which is not a member's name with at most a version specifier (envbuild "
                            "records no URL, marker or extras)")
        elif kept not in group.members:
            problems.append(f"{said}, which is no member of that group ({', '.join(sorted(group.members))})")
        elif kept not in group.choosable(profile):
            problems.append(f"{said}, which envbuild never keeps for profile {profile.name} (it keeps "
                            f"{' or '.join(sorted(group.choosable(profile)))})")
        elif not group.members & direct:
            usable[module] = kept + str(requirement.specifier)
    return usable, tuple(problems)


def parse_settled(text: str) -> Requirement | None:
    """A recorded settlement as a requirement: a name and at most a version specifier (older locks
    recorded the bare name); None for anything else (a URL, a marker, extras, not PEP 508)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        return None
    if requirement.url or requirement.marker is not None or requirement.extras:
        return None
    return requirement


def with_settlements(result: MergeResult, settled: Mapping[str, str], where: str) -> MergeResult:
    """The merged requirements with each kept member added as a direct requirement, with the bounds the
    dependencies put on the group's members (uv chooses the version within them). `settled` holds
    checked values (`check_recorded`)."""
    if not settled:
        return result
    from packaging.requirements import Requirement

    from envbuild.pkgs.merging import MergedRequirement, MergeResult
    from envbuild.pkgs.requirements import Origin, SourcedRequirement

    added = []
    for module, text in settled.items():
        requirement = Requirement(text)
        added.append(MergedRequirement(requirement.name, frozenset(), requirement.specifier, None, None,
                                       (SourcedRequirement(requirement, Origin(where, 0, origin_source(module)),
                                                           text),)))
    requirements = sorted((*result.requirements, *added), key=lambda r: (r.name, str(r.marker or "")))
    return MergeResult(tuple(requirements), result.constraints)
