"""Companion packages: extensions compiled against one torch and one CUDA (xformers, flash-attn, ...).

A wheel built for another torch fails to import or crashes, and asking uv for one either moves torch
(refused: the profile owns it) or brings a build for another CUDA. So: a profile lists in
`[companions]` the ones its own PyTorch index carries, and an input asking for one gets it from there,
at the version whose torch requirement matches the profile's torch (uv picks it: torch is pinned).
An input asking for one no configured index has for this torch fails before uv, saying what a wheel
would need and where prebuilt ones are published. The rules, with sources: data/companions.toml.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.core.text import quoted
from envbuild.torch.companion_data import PYPI, PYTORCH_INDEX, Companion, companion_table
from envbuild.torch.profile import canonical_name
from envbuild.torch.profile_file import profile_requirements

if TYPE_CHECKING:
    from envbuild.pkgs.merging import MergeResult
    from envbuild.pkgs.requirements import SourcedRequirement
    from envbuild.pkgs.uvlock import LockFile
    from envbuild.torch.profile import PinnedPackage, TorchProfile



def asked_companions(profile: TorchProfile, inputs: Iterable[SourcedRequirement]) -> tuple[PinnedPackage, ...]:
    """The profile's companions some input asks for by name (a URL line is the user's own wheel)."""
    asked = {canonical_name(i.requirement.name) for i in inputs if not i.requirement.url}
    return tuple(c for c in profile.companions if c.name in asked)


def companion_requirements(profile: TorchProfile, project_dir: Path,
                           inputs: Sequence[SourcedRequirement]) -> list[SourcedRequirement]:
    """The profile's bounds for the companions asked, as requirements pointing at the profile's lines:
    merged with the inputs' asks, so a node wanting a version the profile's torch has no build of is a
    conflict named before uv."""
    return profile_requirements(profile, project_dir, packages=asked_companions(profile, inputs))


def guard_companions(inputs: Iterable[SourcedRequirement], profile: TorchProfile) -> None:
    """Refuse, before uv, an input asking for a torch-bound package no configured index has for this torch."""
    from envbuild.core.errors import RequirementFileError

    table, listed = companion_table(), {c.name for c in profile.companions}
    for item in inputs:
        name = canonical_name(item.requirement.name)
        known = table.get(name)
        if known is None or known.wheels == PYPI or name in listed or item.requirement.url:
            continue
        source = item.origin.source
        node = source.removeprefix("node ") if source.startswith("node ") else None
        raise RequirementFileError(
            item.origin.path, item.origin.line or None,
            f"`{item.text}` ({source}): {name} is compiled against one torch and CUDA, and no index of profile "
            f"{profile.name} has it for this torch: a wheel would need {wheel_needs(profile)} ({known.rule}; "
            f"{known.source})",
            hint=_way_out(known, profile, node),
        )


def wheel_needs(profile: TorchProfile) -> str:
    """What a matching wheel must be built for: the profile's torch and accelerator."""
    torch = next((p.specifier_text for p in profile.packages if p.name == "torch"), "")
    build = {"cuda": f"CUDA {profile.accelerator_version}", "rocm": f"ROCm {profile.accelerator_version}"}.get(
        profile.accelerator, profile.accelerator.upper() if profile.accelerator != "cpu" else "the CPU")
    return f"torch{torch} built for {build}" + (f" ({variant(profile)})" if variant(profile) else "")


def variant(profile: TorchProfile) -> str | None:
    """The local-version label of the profile's torch builds (cu126, rocm6.3), as wheel names carry it."""
    return profile.local_version


def _way_out(known: Companion, profile: TorchProfile, node: str | None) -> str:
    ways = []
    if known.wheels == PYTORCH_INDEX:
        ways.append(f"choose a profile that lists {known.name} in [companions] (see `envbuild profiles`), or add "
                    f'`[companions] {known.name} = ">=..."` to a profile of your own whose index carries it')
    if known.prebuilt:
        where = known.prebuilt.replace("{variant}", variant(profile) or "cpu").replace("{torch}", "<torch version>")
        ways.append(f"add an index of wheels built for {wheel_needs(profile)} (prebuilt ones: {where}) to a profile "
                    f'of your own: `[companions] {known.name} = {{ version = ">=...", index = "<URL>" }}` '
                    '(`format = "flat"` for a page of wheel links)')
    if node:
        from envbuild.pkgs.requirements import exclude_node_hint

        ways.append(exclude_node_hint(node))
    return "; or ".join(ways)


class Misplaced(NamedTuple):
    """One of the profile's companions that a dependency brought, not as the profile takes it."""

    name: str
    version: str
    where: str  # the index it came from
    chain: tuple[str, ...]  # the project's direct requirement first, the companion last
    why: str

    def describe(self, profile: TorchProfile, merged: MergeResult) -> str:
        """One line for the lock command, node first."""
        return (f"asked for {self.name} directly, as profile {profile.name} takes it ({_chain(self, merged)} "
                f"{self.why}; uv's sources apply to direct requirements only)")


def misplaced(lock: LockFile, profile: TorchProfile, index_url: str | None) -> list[Misplaced]:
    """The profile's companions in the lock from another index than the profile's, or outside its bound:
    only a dependency asked for them (uv's sources and envbuild's bound apply to direct requirements), so
    asking for them directly puts them where the profile takes them (envbuild.lock.settle)."""
    from packaging.version import InvalidVersion, Version

    from envbuild.torch.variants import chain_to

    listed = {c.name: c for c in profile.companions}
    found = []
    for package in lock.packages:
        companion = listed.get(package.name)
        if companion is None or package.registry is None:  # a URL or path wheel is the user's own
            continue
        own = profile.companion_index(package.name)
        expected = own.url if own else index_url
        try:
            inside = companion.specifier.contains(Version(package.version), prereleases=True)
        except InvalidVersion:
            inside = False
        if expected is not None and package.registry != expected.rstrip("/"):
            why = f"took {package.name} {package.version} from {package.source_label()}"
        elif not inside:
            why = f"took {package.name} {package.version}, outside the profile's {companion.as_written()}"
        else:
            continue
        found.append(Misplaced(package.name, package.version, package.source_label(),
                               chain_to(lock, package.name), why))
    return found


def _chain(item: Misplaced, merged: MergeResult) -> str:
    from envbuild.torch.variants import reach

    return reach(item.chain, merged)


def refuse_misplaced(lock: LockFile, profile: TorchProfile, index_url: str | None, merged: MergeResult) -> None:
    """After envbuild asked for them directly, a companion still not where the profile takes it: no lock."""
    from envbuild.core.errors import ConflictError

    found = misplaced(lock, profile, index_url)
    if found:
        item = found[0]
        raise ConflictError(item.name, [f"{_chain(item, merged)} {item.why}, even asked for directly"],
                            hint=f"check that profile {profile.name}'s index serves {item.name} within "
                                 f"{next(c.as_written() for c in profile.companions if c.name == item.name)} "
                                 "for its torch")


def unlisted(lock: LockFile, profile: TorchProfile) -> list[tuple[str, str, tuple[str, ...]]]:
    """Torch-bound packages a dependency brought that the profile does not take (its guard only sees the
    inputs' own lines): from PyPI, built for whatever torch and CUDA its release was."""
    from envbuild.torch.variants import chain_to

    table, listed = companion_table(), {c.name for c in profile.companions}
    return [(p.name, p.version, chain_to(lock, p.name)) for p in lock.packages
            if p.registry is not None and p.name not in listed
            and (known := table.get(p.name)) is not None and known.wheels != PYPI]


def refuse_unlisted(lock: LockFile, profile: TorchProfile, merged: MergeResult) -> None:
    from envbuild.core.errors import ConflictError
    from envbuild.torch.variants import askers_of, reach

    found = unlisted(lock, profile)
    if not found:
        return
    name, version, chain = found[0]
    known = companion_table()[name]
    node = askers_of(chain[0], merged)
    node_name = node.removeprefix("node ") if node.startswith("node ") and "," not in node else None
    raise ConflictError(name, [
        reach(chain, merged) + f" brings {name} {version}, compiled against "
        f"one torch and CUDA, and no index of profile {profile.name} has it for this torch: a wheel would need "
        f"{wheel_needs(profile)} ({known.rule}; {known.source})"], hint=_way_out(known, profile, node_name))


def check_recorded(recorded: Sequence[str], profile: TorchProfile,
                   merged: MergeResult) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The recorded companions to ask for directly, and why any other is not one envbuild could have asked
    for: a companion the profile lists (one the inputs now ask for themselves is moot, left out)."""
    from envbuild.pkgs.lockdir import FINGERPRINT_NAME

    listed, direct = {c.name for c in profile.companions}, merged.names()
    usable = tuple(sorted({n for n in recorded if n in listed and n not in direct}))
    problems = tuple(f"{FINGERPRINT_NAME} asks for {quoted(n)} as a companion, which profile {profile.name} does "
                     f"not list (it lists {', '.join(sorted(listed)) or 'none'})" for n in recorded if n not in listed)
    return usable, problems


def with_asked(result: MergeResult, names: Sequence[str], profile: TorchProfile, project_dir: Path) -> MergeResult:
    """The merged requirements with these companions asked for directly, at the profile's bound and
    pointing at its line (the render then routes them to the profile's index)."""
    if not names:
        return result
    import dataclasses

    from envbuild.pkgs.merging import merge

    added = [dataclasses.replace(item, origin=dataclasses.replace(
                 item.origin, source=f"envbuild: {item.requirement.name} as profile {profile.name} takes it "
                                     "(a dependency asks)"))
             for item in profile_requirements(profile, project_dir,
                                              packages=tuple(c for c in profile.companions if c.name in names))]
    return merge([*(o for r in result.requirements for o in r.origins), *added],
                 [o for c in result.constraints for o in c.origins])
