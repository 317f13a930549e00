"""Which packages of a uv.lock a profile's environments can install, decided from markers alone.

A universal lock holds packages for every platform uv resolved for; the audit checks only what the
profile's environments can install (a macOS-only wheel is no concern of a Linux profile). Two
markers are taken as disjoint only when no environment satisfies both, so unsure means audited.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from packaging.markers import InvalidMarker, Marker

from envbuild.pkgs.uvlock import Dependency, LockedPackage, LockFile

# Platform variables whose `==`/`!=` atoms decide whether two markers can hold together.
_PLATFORM_VARS = frozenset({"sys_platform", "platform_machine", "platform_system", "os_name",
                            "implementation_name", "platform_python_implementation"})
_MAX_TERMS = 256


def _dnf(items: Sequence[Any]) -> list[frozenset[tuple[str, str, str]]] | None:
    """Disjunctive normal form over platform `==`/`!=` atoms; every other atom is dropped
    (taken as satisfiable), so two markers only ever look disjoint when they truly are."""
    groups: list[list[Any]] = [[]]
    for item in items:
        if item == "or":
            groups.append([])
        elif item != "and":
            groups[-1].append(item)
    terms_out: list[frozenset[tuple[str, str, str]]] = []
    for group in groups:
        terms: list[frozenset[tuple[str, str, str]]] = [frozenset()]
        for item in group:
            sub = _dnf(item) if isinstance(item, list) else [_atom(item)]
            if sub is None:
                return None
            terms = [t | s for t in terms for s in sub]
            if len(terms) > _MAX_TERMS:
                return None
        terms_out.extend(terms)
    return terms_out


def _atom(item: Any) -> frozenset[tuple[str, str, str]]:
    left, op, right = item
    kinds = (type(left).__name__, type(right).__name__)
    if kinds == ("Variable", "Value"):
        var, value = left.value, right.value
    elif kinds == ("Value", "Variable"):
        var, value = right.value, left.value
    else:
        return frozenset()
    if var not in _PLATFORM_VARS or op.value not in ("==", "!="):
        return frozenset()
    return frozenset({(var, op.value, value)})


def _consistent(atoms: frozenset[tuple[str, str, str]]) -> bool:
    equal: dict[str, set[str]] = defaultdict(set)
    unequal: dict[str, set[str]] = defaultdict(set)
    for var, op, value in atoms:
        (equal if op == "==" else unequal)[var].add(value)
    return all(len(values) <= 1 and not values & unequal[var] for var, values in equal.items())


def markers_disjoint(a: str, b: str) -> bool:
    """True only when no environment can satisfy both markers (unsure: False)."""
    try:
        dnf_a, dnf_b = _dnf(Marker(a)._markers), _dnf(Marker(b)._markers)
    except (InvalidMarker, AttributeError, TypeError, ValueError):
        return False
    if dnf_a is None or dnf_b is None:
        return False
    return not any(_consistent(x | y) for x in dnf_a for y in dnf_b)


def may_apply(marker: str | None, environments: Sequence[str]) -> bool:
    if not marker or not environments:
        return True
    return any(not markers_disjoint(marker, env) for env in environments)


def in_scope(lock: LockFile, environments: Sequence[str]) -> list[bool]:
    """Per package: can one of the environments install it? Walks the dependency graph from the
    root project (and from any package nothing points at: unsure, so audited), not following edges
    whose marker excludes every environment; then drops versions forked off for other platforms."""
    packages = lock.packages
    if not environments:
        return [True] * len(packages)
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, package in enumerate(packages):
        by_name[package.name].append(i)
    edges = [[(e.marker, _targets(e, by_name, packages)) for e in p.dependencies] for p in packages]
    pointed_at = {t for outgoing in edges for _, targets in outgoing for t in targets}
    queue = [i for i, p in enumerate(packages) if p.is_root or i not in pointed_at]
    seen = set(queue)
    while queue:
        for marker, targets in edges[queue.pop()]:
            if may_apply(marker, environments):
                fresh = [t for t in targets if t not in seen]
                seen.update(fresh)
                queue.extend(fresh)
    return [i in seen and _fork_applies(p, environments) for i, p in enumerate(packages)]


def _fork_applies(package: LockedPackage, environments: Sequence[str]) -> bool:
    forks = package.resolution_markers
    return not forks or any(may_apply(m, environments) for m in forks)


def _targets(edge: Dependency, by_name: Mapping[str, list[int]], packages: Sequence[LockedPackage]) -> list[int]:
    candidates = by_name.get(edge.name, [])
    exact = [i for i in candidates
             if edge.version in (None, packages[i].version) and edge.source in (None, packages[i].source)]
    return exact or list(candidates)
