"""The version bounds dependencies put on a variant group's members, carried over to the member kept.

When envbuild settles a group (envbuild.lock.settle), the overrides drop every other member from every
dependency, and with them the bounds those dependencies wrote (insightface's `opencv-python>=4.8`): the
member kept must still meet them, so its direct requirement carries the intersection of every bound any
locked package puts on any member. uv.lock records which packages depend on a member, not with which
specifier, so each asker's Requires-Dist is read from the index the lock says it came from (PEP 658
metadata or range reads of the wheel, cached like `profiles update`'s reads, a mirror included).

Which lines count: a Requires-Dist naming a member, without an `extra ==` clause or under an extra the
lock installs the asker with (uv.lock records a package's extras only when the resolution uses them).
Environment clauses (platform, Python) are not evaluated: the kept member is one unconditional
requirement for every environment of the lock, uv recorded the edge because some line holds there, and a
bound from a line meant for another platform can only narrow the member's versions, never let one in that
an asker refuses; should that leave no version, the refusal shows each line with its marker.

Metadata that cannot be read (index down, none served, a path, git or URL source) does not fail the
lock: the member is kept with the bounds that were read, and the lock's line names the askers not read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from envbuild.core.errors import ConflictError

if TYPE_CHECKING:

    from envbuild.core.http.indexclient import IndexClient
    from envbuild.pkgs.uvlock import LockedPackage, LockFile

_EXTRA = re.compile(r"""\bextra\s*==\s*["']([^"']+)["']""")


class Asked(NamedTuple):
    """One Requires-Dist line of a locked package that bounds a member of the group."""

    asker: str  # "insightface 0.7.3"
    line: str  # "opencv-python>=4.8" (with its marker, if any)
    specifier: SpecifierSet


class MemberBounds(NamedTuple):
    """What the askers of a group's members said, and which of them could not be read."""

    asked: tuple[Asked, ...]  # lines with a specifier only: a bare name bounds nothing
    unread: tuple[str, ...]  # "facetool 1.0 (why)"

    @property
    def specifier(self) -> SpecifierSet:
        from envbuild.pkgs.merging import combine_specifiers

        return combine_specifiers(a.specifier for a in self.asked)

    def requirement(self, kept: str) -> str:
        """The kept member's direct requirement: `opencv-python-headless<5,>=4.8`, or its bare name."""
        return kept + str(self.specifier)


def askers(lock: LockFile, members: frozenset[str]) -> list[LockedPackage]:
    """Every locked package (not the project, not a member) with an edge to a member, in lock order."""
    return [p for p in lock.packages
            if not p.is_root and p.name not in members and any(d.name in members for d in p.dependencies)]


def read_bounds(client: IndexClient, lock: LockFile, members: frozenset[str]) -> MemberBounds:
    """Each asker's lines naming a member, read in parallel; an unreadable asker is named, not fatal."""
    from envbuild.core.http.errors import IndexReadError

    found = askers(lock, members)
    texts = client.map(lambda package: requires_dist(client, package), found)
    asked: list[Asked] = []
    unread: list[str] = []
    for package, text in zip(found, texts, strict=True):
        label = f"{package.name} {package.version}"
        if isinstance(text, IndexReadError):  # a source that is no index is named by the package alone
            unread.append(f"{label} ({text.reason if text.url == label else text})")
            continue
        asked.extend(Asked(label, str(req), req.specifier) for req in member_lines(text, members, extras(package))
                     if str(req.specifier))
    return MemberBounds(tuple(asked), tuple(unread))


def extras(package: LockedPackage) -> frozenset[str]:
    """The extras the lock installs a package with (uv.lock lists only the extras the resolution uses)."""
    return frozenset(canonicalize_name(d.group.removeprefix("extra:")) for d in package.dependencies
                     if d.group is not None and d.group.startswith("extra:"))


def member_lines(lines: Iterable[str], members: frozenset[str], active: frozenset[str]) -> list[Requirement]:
    """The Requires-Dist lines naming a member that the lock's install of the asker takes (see the module)."""
    taken = []
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) not in members or req.url:
            continue
        named = {canonicalize_name(x) for x in _EXTRA.findall(str(req.marker or ""))}
        if not named or named & active:
            taken.append(req)
    return taken


def requires_dist(client: IndexClient, package: LockedPackage) -> list[str]:
    """A locked package's Requires-Dist, from the index the lock names for it."""
    from email.parser import BytesParser

    from envbuild.core.http.errors import IndexReadError

    where = f"{package.name} {package.version}"
    if package.registry is None:
        raise IndexReadError(where, f"a {package.source_kind} source, not an index: its metadata is not read")
    page = client.project_page(package.registry, package.name)
    if not page.found:
        raise IndexReadError(page.url, "the index has no such project")
    locked = {(f.filename or (f.url or "").rsplit("/", 1)[-1]) for f in package.wheels}
    files = [f for f in page.files if _version_of(f.filename) == package.version]
    wheels = [f for f in files if f.filename.endswith(".whl")]
    choice = next((f for f in wheels if f.filename in locked), None) or next(iter(wheels), None) \
        or next((f for f in files if f.metadata_url), None)
    if choice is None:
        raise IndexReadError(page.url, f"no wheel (nor metadata) of {package.version} to read")
    try:
        message = BytesParser().parsebytes(client.metadata(choice), headersonly=True)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexReadError(choice.url, f"unreadable metadata ({exc})") from None
    return [str(line) for line in message.get_all("Requires-Dist") or []]


def _version_of(filename: str) -> str | None:
    """The normalized version a distribution file's name says (None: not a wheel or sdist name)."""
    from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename
    from packaging.version import InvalidVersion

    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def refuse_disjoint(module: str, kept: str, bounds: MemberBounds, reach: Callable[[str], str]) -> None:
    """No version of the member kept meets every asker's bound: no second lock, each asker named with the
    way the project reaches it (`reach`: package name -> "node A → insightface")."""
    from envbuild.pkgs.merging import specifiers_satisfiable

    if specifiers_satisfiable(bounds.specifier):
        return
    raise ConflictError(f"the `{module}` module", [
        f"{a.asker} → {a.line} (through {reach(a.asker.split(' ')[0])})" for a in bounds.asked],
        hint=f"envbuild keeps {kept} for every dependency that asks for a `{module}` build, and no version of it "
             "meets all these bounds; leave out a node that brings one of them (--exclude-node), or pin a "
             "version of one asker that fits in a requirements file of the deployment (e.g. one in [lock] "
             "extra-requirements)")
