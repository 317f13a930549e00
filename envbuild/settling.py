"""Settling a variant group the inputs leave open, instead of refusing the lock.

When two members of a group (envbuild.variants) reach the lock only through dependencies, no direct
requirement says which one to keep, so the overrides that drop the others are not rendered. envbuild
then keeps one by the group's own rule, adds it as a direct requirement (which makes
`variants.overrides` drop every other member from every dependency) and locks again.

The choice is recorded in the lock folder's fingerprint (`settled`) and the plan renders with it, so the
pyproject stays reproducible from what is committed: re-locking keeps earlier choices (as uv keeps
earlier versions) and `lock --upgrade` starts without them. The fingerprint is an untrusted file, so a
recorded choice is used only when envbuild itself could have made it (`check_recorded`); any other makes
the lock "edited".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from envbuild.lockdir import FINGERPRINT_NAME

if TYPE_CHECKING:
    from envbuild.deployment import Deployment
    from envbuild.merging import MergeResult
    from envbuild.planning import LockPlan
    from envbuild.profiles import TorchProfile
    from envbuild.uvlock import LockFile
    from envbuild.variants import Provider, VariantGroup


def origin_source(module: str) -> str:
    """What `merge --explain` and the refusals name as the asker of a settled requirement."""
    return f"envbuild: settles the {module} module"


class Settlement(NamedTuple):
    """One group settled after a lock: the member kept, why, and the providers it replaces."""

    module: str
    kept: str
    why: str
    dropped: tuple[Provider, ...]


def settle(found: Iterable[tuple[VariantGroup, list[Provider]]], profile: TorchProfile) -> list[Settlement]:
    """For each group with several members in a lock, the member its own rule keeps for these members."""
    settled = []
    for group, providers in found:
        kept, why = group.choose({p.member for p in providers}, profile)
        settled.append(Settlement(group.module, kept, why, tuple(p for p in providers if p.member != kept)))
    return settled


def check_recorded(recorded: Mapping[str, str], groups: Iterable[VariantGroup], profile: TorchProfile,
                   merged: MergeResult) -> tuple[dict[str, str], tuple[str, ...]]:
    """The recorded choices to render with, and why any other is not one envbuild could have made.

    A choice for a group the inputs now settle themselves (a direct requirement names a member) is moot:
    left out without complaint, as the pyproject changes with the inputs anyway."""
    by_module = {g.module: g for g in groups}
    direct = merged.names()
    usable: dict[str, str] = {}
    problems: list[str] = []
    for module, kept in sorted(recorded.items()):
        group = by_module.get(module)
        said = f"{FINGERPRINT_NAME} settles {quoted(module)} on {quoted(kept)}"
        if group is None:
            problems.append(f"{said}, but {quoted(module)} is no variant group of this deployment")
        elif kept not in group.members:
            problems.append(f"{said}, which is no member of that group ({', '.join(sorted(group.members))})")
        elif kept not in group.choosable(profile):
            problems.append(f"{said}, which envbuild never keeps for profile {profile.name} (it keeps "
                            f"{' or '.join(sorted(group.choosable(profile)))})")
        elif not group.members & direct:
            usable[module] = kept
    return usable, tuple(problems)


def quoted(text: str) -> str:
    """A value read from an untrusted file, shown escaped and short."""
    shown = json.dumps(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def with_settlements(result: MergeResult, settled: Mapping[str, str], where: str) -> MergeResult:
    """The merged requirements with each kept member added as a direct requirement, without a version
    (uv chooses it, as it did for the dependency that asked for a variant)."""
    if not settled:
        return result
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    from envbuild.merging import MergedRequirement, MergeResult
    from envbuild.requirements import Origin, SourcedRequirement

    added = [MergedRequirement(kept, frozenset(), SpecifierSet(), None, None,
                               (SourcedRequirement(Requirement(kept), Origin(where, 0, origin_source(module)), kept),))
             for module, kept in settled.items()]
    requirements = sorted((*result.requirements, *added), key=lambda r: (r.name, str(r.marker or "")))
    return MergeResult(tuple(requirements), result.constraints)


def header_notes(settled: Mapping[str, str], bounds: Mapping[str, str],
                 companions: Sequence[str] = ()) -> tuple[str, ...]:
    """The pyproject's header says which requirement or constraint no input wrote (nothing when none)."""
    return (*(f"Settled by envbuild (recorded in {FINGERPRINT_NAME}): the `{module}` module from {kept}."
              for module, kept in sorted(settled.items())),
            *(f"Held by envbuild (recorded in {FINGERPRINT_NAME}): {package}{specifier}, for the locked torch."
              for package, specifier in sorted(bounds.items())),
            *(f"Asked by envbuild (recorded in {FINGERPRINT_NAME}): {name}, a dependency's, as the profile takes it."
              for name in sorted(companions)))


def describe(settlement: Settlement, merged: MergeResult) -> str:
    """One line for the lock command: what was kept, why, and each chain it replaced, node first."""
    askers = {r.name: ", ".join(sorted({item.origin.source for item in r.origins})) for r in merged.requirements}
    dropped = "; ".join(f"{p.member} (" + " → ".join([askers.get(p.chain[0], "the project"), *p.chain]) + ")"
                        for p in settlement.dropped)
    return (f"settled the `{settlement.module}` module: kept {settlement.kept} ({settlement.why})"
            + (f"; dropped {dropped}" if dropped else ""))


def settle_lock(deployment: Deployment, plan: LockPlan, locked: LockFile, groups: Sequence[VariantGroup],
                relock: Callable[[LockPlan], LockFile]) -> tuple[LockPlan, tuple[str, ...]]:
    """After the first `uv lock`: settle what the lock leaves open (two providers of a module, a package
    built for another torch), re-plan with it and `relock` once; refuse if the second lock still has it.
    Nothing to settle: the plan as it was and no second uv run."""
    from envbuild import companions, torch_bound
    from envbuild.planning import Settled, plan_lock
    from envbuild.variants import refuse_second_providers, second_providers

    profile = plan.profile
    found = second_providers(locked, groups)
    bounds = torch_bound.needed_bounds(locked)
    misplaced = companions.misplaced(locked, profile, deployment.indexes(profile).torch)
    if not found and not bounds and not misplaced:
        return plan, tuple(torch_bound.unchecked(locked))
    settlements = settle(found, profile)
    recorded = plan.fingerprint
    settled = plan_lock(deployment, profile, settled=Settled(
        {**recorded.settled, **{s.module: s.kept for s in settlements}},
        {**recorded.bounds, **{b.package: b.specifier for b in bounds}},
        tuple(sorted({*recorded.companions, *(m.name for m in misplaced)}))))
    taken = [s for s in settlements if settled.fingerprint.settled.get(s.module) == s.kept]
    if len(taken) < len(settlements) and not bounds:  # an input asks for a member under a marker: not ours
        refuse_second_providers(found, plan.merged.result, profile)
    locked = relock(settled)
    refuse_second_providers(second_providers(locked, groups), settled.merged.result, profile)
    torch_bound.refuse_unbound(torch_bound.needed_bounds(locked))
    return settled, (*(describe(s, plan.merged.result) for s in taken), *map(torch_bound.describe, bounds),
                     *(m.describe(profile, plan.merged.result) for m in misplaced), *torch_bound.unchecked(locked))
