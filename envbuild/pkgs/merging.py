"""Merge requirements from many files into one set, per (name, marker), independent of order.

Specifiers are intersected and extras united; when they cannot all hold (`numpy<2` from ComfyUI,
`numpy>=2` from a node) the merge stops before uv runs and names both lines, with the way out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import combinations

from packaging.markers import Marker
from packaging.specifiers import Specifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from envbuild.core.errors import ConflictError
from envbuild.pkgs.requirements import NODE_SOURCE_PREFIX, SourcedRequirement, exclude_node_hint


@dataclass(frozen=True)
class MergedRequirement:
    """Every input for one (name, marker), combined into one requirement."""

    name: str
    extras: frozenset[str]
    specifier: SpecifierSet
    marker: Marker | None
    url: str | None
    origins: tuple[SourcedRequirement, ...]

    def pep508(self) -> str:
        """Stable PEP 508 text. PEP 508 allows a URL or specifiers, not both: a URL wins, and
        the specifiers stay in `specifier` (their origins in `origins`) for reporting."""
        head = self.name + (f"[{','.join(sorted(self.extras))}]" if self.extras else "")
        if self.url is not None:
            return f"{head} @ {self.url}" + (f" ; {self.marker}" if self.marker else "")
        head += ",".join(sorted(str(spec) for spec in self.specifier))
        return head + (f"; {self.marker}" if self.marker else "")


@dataclass(frozen=True)
class MergeResult:
    """Merged requirements and constraints, each sorted by (name, marker)."""

    requirements: tuple[MergedRequirement, ...]
    constraints: tuple[MergedRequirement, ...]

    def names(self) -> frozenset[str]:
        return frozenset(merged.name for merged in self.requirements)


def merge(
    requirements: Iterable[SourcedRequirement], constraints: Iterable[SourcedRequirement] = ()
) -> MergeResult:
    """Merge per (name, marker), independent of input order.

    Entries with different markers stay apart and are not evaluated: uv combines them per
    environment. A constraint must leave a version for the requirement it constrains.
    """
    merged, merged_constraints = _merge_groups(requirements), _merge_groups(constraints)
    by_key = {(m.name, str(m.marker or "")): m for m in merged}
    for constraint in merged_constraints:
        requirement = by_key.get((constraint.name, str(constraint.marker or "")))
        if requirement is not None:
            _check_group(requirement.name, [*requirement.origins, *constraint.origins],
                         constraint.origins)
    return MergeResult(merged, merged_constraints)


def _merge_groups(items: Iterable[SourcedRequirement]) -> tuple[MergedRequirement, ...]:
    groups: dict[tuple[str, str], list[SourcedRequirement]] = {}
    for item in items:
        key = (canonicalize_name(item.requirement.name), str(item.requirement.marker or ""))
        groups.setdefault(key, []).append(item)
    return tuple(_merge_group(key[0], groups[key]) for key in sorted(groups))


def _merge_group(name: str, members: list[SourcedRequirement]) -> MergedRequirement:
    specifier = _check_group(name, members, ())
    url = min((m.requirement.url for m in members if m.requirement.url), default=None)
    extras = frozenset(canonicalize_name(e) for m in members for e in m.requirement.extras)
    return MergedRequirement(name, extras, specifier, members[0].requirement.marker, url,
                             tuple(members))


def _check_group(name: str, members: list[SourcedRequirement],
                 constraints: tuple[SourcedRequirement, ...]) -> SpecifierSet:
    """Intersect the members' specifiers; raise ConflictError when they cannot all hold."""
    specifier = combine_specifiers(m.requirement.specifier for m in members)
    if not specifiers_satisfiable(specifier):
        raise _conflict(name, _culprits(members), constraints, "relax one of them")
    with_url = [m for m in members if m.requirement.url]
    if len({_url_identity(m.requirement.url or "") for m in with_url}) > 1:
        raise _conflict(name, with_url, constraints, "point them at the same URL")
    return specifier


def combine_specifiers(sets: Iterable[SpecifierSet]) -> SpecifierSet:
    """Intersect specifier sets with stable text: sorted, equal specifiers written once."""
    chosen: list[Specifier] = []
    for spec in sorted((spec for specifier in sets for spec in specifier), key=str):
        if spec not in chosen:
            chosen.append(spec)
    return SpecifierSet(",".join(str(spec) for spec in chosen))


def _culprits(members: list[SourcedRequirement]) -> list[SourcedRequirement]:
    """The smallest explanation: one self-contradicting line, else a clashing pair, else all."""
    for member in members:
        if not specifiers_satisfiable(member.requirement.specifier):
            return [member]
    for first, second in combinations(members, 2):
        both = [first.requirement.specifier, second.requirement.specifier]
        if not specifiers_satisfiable(combine_specifiers(both)):
            return [first, second]
    return list(members)


def _conflict(name: str, culprits: list[SourcedRequirement],
              constraints: tuple[SourcedRequirement, ...], advice: str) -> ConflictError:
    """Name each culprit line; suggest --exclude-node when a custom node is among them."""
    details = [
        f"{m.text} from {m.origin}" + (" (constraint)" if any(m is c for c in constraints) else "")
        for m in culprits
    ]
    nodes = sorted({m.origin.source.removeprefix(NODE_SOURCE_PREFIX) for m in culprits
                    if m.origin.source.startswith(NODE_SOURCE_PREFIX)})
    if nodes:
        advice += f", or {exclude_node_hint(*nodes)}"
    return ConflictError(name, details, hint=advice)


def _url_identity(url: str) -> str:
    """Two URLs name the same source when they differ only in an `#egg=` fragment."""
    base, _, fragment = url.partition("#")
    kept = [part for part in fragment.split("&") if part and not part.startswith("egg=")]
    return base + ("#" + "&".join(kept) if kept else "")


_BIG = 99999


def specifiers_satisfiable(specifier: SpecifierSet) -> bool:
    """Whether some version meets every specifier, decided offline.

    Candidates sit at and just around every boundary the specifiers name. A final version is
    required unless a specifier names a pre-release (uv's default). `===` compares strings,
    not versions, so a set containing it counts as satisfiable.
    """
    specs = list(specifier)
    if any(spec.operator == "===" for spec in specs):
        return True
    allow_pre = any(_boundary(spec).is_prerelease for spec in specs)
    width = max((len(_boundary(spec).release) for spec in specs), default=1) + 2
    return any(
        specifier.contains(candidate, prereleases=True)
        for candidate in _candidates(specs, width)
        if allow_pre or not candidate.is_prerelease
    )


def _boundary(spec: Specifier) -> Version:
    return Version(spec.version.removesuffix(".*"))


def _candidates(specs: list[Specifier], width: int) -> Iterator[Version]:
    """Every boundary (a prefix `1.2.*` bounds at 1.2 and 1.3), and versions next to it."""
    yield from (Version("0"), Version(str(_BIG)))
    for spec in specs:
        points = [_boundary(spec)]
        if spec.version.endswith(".*") or spec.operator == "~=":
            prefix = points[0].release[: -1 if spec.operator == "~=" else None]
            points.append(_version(points[0].epoch, (*prefix[:-1], prefix[-1] + 1)))
        for point in points:
            yield point
            yield from _neighbours(point, width)


def _neighbours(v: Version, width: int) -> Iterator[Version]:
    """Versions just above and below `v`: 1.24 -> 1.24.0.0.1, 1.24.post1, 1.23.99999..."""
    yield _version(v.epoch, v.release + (0,) * (width - len(v.release)) + (1,))
    yield _version(v.epoch, v.release)
    yield _version(v.epoch, v.release, v.pre, (v.post or 0) + 1)
    if v.dev is not None:
        yield _version(v.epoch, v.release, v.pre, v.post, v.dev + 1)
    else:
        yield _version(v.epoch, v.release, v.pre, v.post, 0)
    if v.pre is not None and v.pre[1] > 0:
        yield _version(v.epoch, v.release, (v.pre[0], v.pre[1] - 1))
    nonzero = [index for index, part in enumerate(v.release) if part]
    if nonzero:
        last = nonzero[-1]
        lower = (*v.release[:last], v.release[last] - 1) + (_BIG,) * (width - last)
        yield _version(v.epoch, lower)
    elif v.epoch:
        yield _version(v.epoch - 1, (_BIG,))


def _version(epoch: int, release: tuple[int, ...], pre: tuple[str, int] | None = None,
             post: int | None = None, dev: int | None = None) -> Version:
    text = f"{epoch}!" + ".".join(str(part) for part in release)
    text += f"{pre[0]}{pre[1]}" if pre else ""
    text += f".post{post}" if post is not None else ""
    return Version(text + (f".dev{dev}" if dev is not None else ""))
