"""Variant groups: distributions that install the same import module (opencv's four `cv2` builds,
onnxruntime's), of which one environment may hold only one.

The groups are data (envbuild/data/variant_groups.toml, a source for each), extended or replaced by a
deployment's `[lock] variant-groups`. The rule holds for the whole resolution, not only the lines the
inputs wrote: the member kept is a direct requirement (merge_rules renames the others), and every other
member is dropped from every dependency's requirements with a uv override whose marker never holds.
The overrides follow from the inputs alone, so the rendered pyproject stays reproducible.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from envbuild.core.errors import ConfigError
from envbuild.torch.profile import canonical_name

if TYPE_CHECKING:
    from envbuild.pkgs.merging import MergeResult
    from envbuild.pkgs.uvlock import LockFile
    from envbuild.torch.profile import TorchProfile

# uv's documented way to drop a requirement: an override whose marker no environment satisfies.
NEVER = 'sys_platform == "never"'
_DATA = "envbuild/data/variant_groups.toml"


class ChoiceRule(NamedTuple):
    """Keep `keep` when every condition given holds."""

    keep: str
    why: str
    asked_any: frozenset[str] = frozenset()
    accelerator: str | None = None

    def applies(self, asked: Iterable[str], profile: TorchProfile) -> bool:
        if self.asked_any and not self.asked_any & set(asked):
            return False
        return self.accelerator is None or self.accelerator == profile.accelerator


class VariantGroup(NamedTuple):
    module: str
    members: frozenset[str]
    rules: tuple[ChoiceRule, ...]
    source: str

    def choose(self, asked: Iterable[str], profile: TorchProfile) -> tuple[str, str]:
        """The member to keep and why: the same for the same inputs and profile, always."""
        asked = set(asked)
        for rule in self.rules:
            if rule.applies(asked, profile):
                return rule.keep, rule.why
        return sorted(asked or self.members)[0], "the first asked for, by name"

    def choosable(self, profile: TorchProfile) -> frozenset[str]:
        """Every member `choose` can return for this profile, whatever was asked: a choice recorded in a
        lock folder (an untrusted file) is one envbuild could have made only if it is among these."""
        found: set[str] = set()
        for rule in self.rules:
            if rule.accelerator is not None and rule.accelerator != profile.accelerator:
                continue
            found.add(rule.keep)
            if not rule.asked_any:  # applies to every ask: no later rule (nor the fallback) is reached
                return frozenset(found)
        return frozenset(found | self.members)


@functools.lru_cache(maxsize=1)
def builtin_groups() -> tuple[VariantGroup, ...]:
    import importlib.resources

    from envbuild.core.tomlfile import parse_toml

    text = (importlib.resources.files("envbuild") / "data" / "variant_groups.toml").read_text(encoding="utf-8")
    data = parse_toml(text, _DATA)
    return tuple(_group(module, table) for module, table in sorted(data["groups"].items()))


def _group(module: str, table: Mapping[str, Any]) -> VariantGroup:
    members = frozenset(canonical_name(m) for m in table["members"])
    rules = tuple(ChoiceRule(keep=canonical_name(r["keep"]), why=str(r["why"]),
                             asked_any=frozenset(canonical_name(m) for m in r.get("asked-any", ())),
                             accelerator=r.get("accelerator")) for r in table["choose"])
    return VariantGroup(module, members, rules, str(table["source"]))


def deployment_group(module: str, members: Sequence[str]) -> VariantGroup:
    """A deployment's own group: the first member listed is the one kept."""
    names = tuple(dict.fromkeys(canonical_name(m) for m in members))
    return VariantGroup(module, frozenset(names),
                        (ChoiceRule(names[0], "listed first in [lock] variant-groups of envbuild.toml"),),
                        "the deployment's envbuild.toml")


def groups_for(own: Mapping[str, Sequence[str]], source: Path | None = None) -> tuple[VariantGroup, ...]:
    """The built-in groups with the deployment's: one of the same module replaces the built-in one. A
    distribution in two groups would make the choice depend on order, so it is refused."""
    groups = {g.module: g for g in builtin_groups()}
    groups.update((module, deployment_group(module, members)) for module, members in own.items())
    owner: dict[str, str] = {}
    for group in groups.values():
        for member in sorted(group.members):
            if member in owner:
                raise ConfigError(source or "envbuild.toml",
                                  f"`lock.variant-groups`: {member} is in group `{owner[member]}` and in "
                                  f"`{group.module}`; a distribution installs one module",
                                  hint="list it in one group only (a group named like a built-in one replaces it)")
            owner[member] = group.module
    return tuple(groups[m] for m in sorted(groups))


def overrides(merged: MergeResult, groups: Iterable[VariantGroup]) -> tuple[str, ...]:
    """For each group with a member among the direct requirements (after merge_rules kept one), drop every
    other member from every dependency: no package the lock resolves can bring a second provider."""
    # Only an unconditional direct requirement stands in for every dependency's ask in every environment.
    direct = {r.name for r in merged.requirements if r.url is None and r.marker is None}
    dropped: set[str] = set()
    for group in groups:
        kept = group.members & direct
        if len(kept) == 1:
            dropped |= group.members - kept
    return tuple(f"{name}; {NEVER}" for name in sorted(dropped))


def is_rendered_override(text: str, groups: Iterable[VariantGroup], direct: Iterable[str]) -> bool:
    """True for exactly what `overrides` renders: a bare name of a group member whose group has another
    member among the direct requirements, under the marker that never holds. Anything else (a version,
    a URL, a package outside the groups) would change what uv installs, and envbuild never writes it."""
    from packaging.markers import Marker
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(text)
    except InvalidRequirement:
        return False
    if req.url or req.extras or str(req.specifier) or req.marker is None or str(req.marker) != str(Marker(NEVER)):
        return False
    name, asked = canonical_name(req.name), {canonical_name(d) for d in direct}
    return any(name in g.members and (g.members - {name}) & asked for g in groups)


class Provider(NamedTuple):
    """One member of a group found in a lock, and how the project reaches it."""

    member: str
    chain: tuple[str, ...]  # root's direct requirement first, the member last


def second_providers(lock: LockFile, groups: Iterable[VariantGroup]) -> list[tuple[VariantGroup, list[Provider]]]:
    """Groups with more than one member in the lock, each member with a shortest path from the project."""
    locked = {p.name for p in lock.packages if not p.is_root}
    found = []
    for group in groups:
        present = sorted(group.members & locked)
        if len(present) > 1:
            found.append((group, [Provider(m, chain_to(lock, m)) for m in present]))
    return found


def chain_to(lock: LockFile, target: str) -> tuple[str, ...]:
    """Breadth-first from the root project: the first path found is a shortest one, and stable."""
    edges: dict[str, list[str]] = {}
    for package in lock.packages:
        edges.setdefault(package.name, []).extend(d.name for d in package.dependencies)
    roots = [p.name for p in lock.packages if p.is_root]
    paths: dict[str, tuple[str, ...]] = {}
    queue: list[tuple[str, ...]] = [(d,) for r in roots for d in sorted(set(edges.get(r, ())))]
    while queue:
        path = queue.pop(0)
        if path[-1] in paths:
            continue
        paths[path[-1]] = path
        if path[-1] == target:
            return path
        queue.extend((*path, d) for d in sorted(set(edges.get(path[-1], ()))) if d not in paths)
    return (target,)


def askers_of(name: str, merged: MergeResult) -> str:
    """The inputs that ask for a direct requirement (`node A, node B`); "the project" for anything else."""
    sources = {item.origin.source for r in merged.requirements if r.name == name for item in r.origins}
    return ", ".join(sorted(sources)) or "the project"


def reach(chain: Sequence[str], merged: MergeResult) -> str:
    """How the project reaches a locked package, its asker first: `node A → insightface → opencv-python`."""
    return " → ".join([askers_of(chain[0], merged), *chain])


def refuse_second_providers(found: list[tuple[VariantGroup, list[Provider]]], merged: MergeResult,
                            profile: TorchProfile) -> None:
    """The lock holds two members of a group that no direct requirement settles (each came through a
    dependency): name every chain, node first, and the one line that settles it."""
    from envbuild.core.errors import ConflictError

    if not found:
        return
    group, providers = found[0]
    keep, why = group.choose({p.member for p in providers}, profile)
    raise ConflictError(f"the `{group.module}` module", [
        reach(p.chain, merged) + f" (installs `{group.module}`)"
        for p in providers
    ], hint=f"these overwrite each other's files; ask for {keep} ({why}) in a requirements file of the "
            "deployment (e.g. one listed in [lock] extra-requirements): envbuild then drops the others from every "
            "dependency")
