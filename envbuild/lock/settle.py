"""Settling a variant group the inputs leave open, instead of refusing the lock.

When two members of a group (envbuild.torch.variants) reach the lock only through dependencies, no direct
requirement says which one to keep, so the overrides that drop the others are not rendered. envbuild
then keeps one by the group's own rule, adds it as a direct requirement (which makes
`variants.overrides` drop every other member from every dependency) and locks again.

The member kept carries the version bounds the lock's packages put on any member of the group
(envbuild.torch.member_bounds): dropping a member's requirement must not drop its bound.

The choice is recorded in the lock folder's fingerprint (`settled`, the requirement as rendered:
`opencv-python-headless<5,>=4.8`, or a bare name) and the plan renders with it, so the
pyproject stays reproducible from what is committed: re-locking keeps earlier choices (as uv keeps
earlier versions) and `lock --upgrade` starts without them. The fingerprint is an untrusted file, so a
recorded choice is used only when envbuild itself could have made it (envbuild.lock.settlements); any
other makes the lock "edited".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from envbuild.lock.settlements import Settled

if TYPE_CHECKING:

    from envbuild.deploy.deployment import Deployment
    from envbuild.lock.plan import LockPlan
    from envbuild.pkgs.merging import MergeResult
    from envbuild.pkgs.uvlock import LockFile
    from envbuild.torch.member_bounds import MemberBounds
    from envbuild.torch.profile import TorchProfile
    from envbuild.torch.variants import Provider, VariantGroup


class Settlement(NamedTuple):
    """One group settled after a lock: the member kept, why, the providers it replaces, and the bounds
    the lock's packages put on the group's members (None: not read yet)."""

    module: str
    kept: str
    why: str
    dropped: tuple[Provider, ...]
    bounds: MemberBounds | None = None

    @property
    def requirement(self) -> str:
        """What is recorded and rendered: the kept member with every bound read, or its bare name."""
        return self.kept if self.bounds is None else self.bounds.requirement(self.kept)


def settle(found: Iterable[tuple[VariantGroup, list[Provider]]], profile: TorchProfile) -> list[Settlement]:
    """For each group with several members in a lock, the member its own rule keeps for these members."""
    settled = []
    for group, providers in found:
        kept, why = group.choose({p.member for p in providers}, profile)
        settled.append(Settlement(group.module, kept, why, tuple(p for p in providers if p.member != kept)))
    return settled


def describe(settlement: Settlement, merged: MergeResult) -> str:
    """One line for the lock command: what was kept with which bounds from whom, why, and each chain it
    replaced, node first."""
    from envbuild.torch.variants import reach

    dropped = "; ".join(f"{p.member} ({reach(p.chain, merged)})" for p in settlement.dropped)
    why = [settlement.why]
    if settlement.bounds is not None and settlement.bounds.asked:
        why.append("bounds from " + ", ".join(f"{a.asker} → {a.line}" for a in settlement.bounds.asked))
    if settlement.bounds is not None and settlement.bounds.unread:
        why.append("bounds not read from " + ", ".join(settlement.bounds.unread))
    return (f"settled the `{settlement.module}` module: kept {settlement.requirement} ({'; '.join(why)})"
            + (f"; dropped {dropped}" if dropped else ""))


def bounded(deployment: Deployment, locked: LockFile, found: Sequence[tuple[VariantGroup, list[Provider]]],
            settlements: Sequence[Settlement], merged: MergeResult) -> list[Settlement]:
    """Each settlement with the bounds the locked packages put on its group's members, read from their
    indexes; refused here, before a second lock, when no version of the member kept meets them all."""
    if not settlements:
        return list(settlements)
    from envbuild.torch.member_bounds import read_bounds, refuse_disjoint
    from envbuild.torch.variants import chain_to, reach

    members = {group.module: group.members for group, _ in found}

    def reached(package: str) -> str:
        return reach(chain_to(locked, package), merged)

    with deployment.index_client() as client:
        result = [s._replace(bounds=read_bounds(client, locked, members[s.module])) for s in settlements]
    for settlement in result:
        if settlement.bounds is not None:
            refuse_disjoint(settlement.module, settlement.kept, settlement.bounds, reached)
    return result


def settle_lock(deployment: Deployment, plan: LockPlan, locked: LockFile, groups: Sequence[VariantGroup],
                relock: Callable[[LockPlan], LockFile]) -> tuple[LockPlan, tuple[str, ...]]:
    """After the first `uv lock`: settle what the lock leaves open (two providers of a module, a package
    built for another torch), re-plan with it and `relock` once; refuse if the second lock still has it.
    Nothing to settle: the plan as it was and no second uv run."""
    from envbuild.lock.plan import plan_lock
    from envbuild.torch import companions, torch_bound
    from envbuild.torch.variants import refuse_second_providers, second_providers

    profile = plan.profile
    found = second_providers(locked, groups)
    bounds = torch_bound.needed_bounds(locked)
    misplaced = companions.misplaced(locked, profile, deployment.indexes(profile).torch)
    if not found and not bounds and not misplaced:
        return plan, tuple(torch_bound.unchecked(locked))
    settlements = bounded(deployment, locked, found, settle(found, profile), plan.merged.result)
    recorded = plan.fingerprint
    settled = plan_lock(deployment, profile, settled=Settled(
        {**recorded.settled, **{s.module: s.requirement for s in settlements}},
        {**recorded.bounds, **{b.package: b.specifier for b in bounds}},
        tuple(sorted({*recorded.companions, *(m.name for m in misplaced)}))),
        cutoff=recorded.cutoff or None)  # the first lock's cooldown moment (an upgrade moved it), not the folder's
    taken = [s for s in settlements if settled.fingerprint.settled.get(s.module) == s.requirement]
    if len(taken) < len(settlements) and not bounds:  # an input asks for a member under a marker: not ours
        refuse_second_providers(found, plan.merged.result, profile)
    locked = relock(settled)
    refuse_second_providers(second_providers(locked, groups), settled.merged.result, profile)
    torch_bound.refuse_unbound(torch_bound.needed_bounds(locked))
    return settled, (*(describe(s, plan.merged.result) for s in taken), *map(torch_bound.describe, bounds),
                     *(m.describe(profile, plan.merged.result) for m in misplaced), *torch_bound.unchecked(locked))
