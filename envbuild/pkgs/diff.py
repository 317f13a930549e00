"""What differs between two committed profile locks: packages, versions, local labels, indexes.

Teams keep one lock per GPU profile and want the differences to be the torch build and nothing
they did not expect; this compares two uv.lock files as uv wrote them (no resolving, no network).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from envbuild.pkgs.uvlock import LockFile, read_uv_lock

# Change kinds, in display order.
VERSION, LOCAL, INDEX = "version", "local", "index"
_LABELS = {VERSION: "version", LOCAL: "local label", INDEX: "index"}


@dataclass(frozen=True)
class Side:
    """One package in one lock: its versions (several when uv forked by platform) and sources."""

    versions: tuple[str, ...]
    sources: tuple[str, ...]


@dataclass(frozen=True)
class PackageDiff:
    name: str
    a: Side | None  # None: only in B
    b: Side | None  # None: only in A
    changes: tuple[str, ...]  # VERSION / LOCAL / INDEX; empty when only on one side


@dataclass(frozen=True)
class LockDiff:
    a_name: str
    b_name: str
    differences: tuple[PackageDiff, ...]
    same: int  # packages identical in both

    def to_json(self) -> str:
        """Stable: sorted keys and packages, no paths or times."""
        def side(s: Side | None) -> dict[str, list[str]] | None:
            return None if s is None else {"versions": list(s.versions), "sources": list(s.sources)}

        data = {
            "a": self.a_name, "b": self.b_name, "same": self.same,
            "differences": [{"name": d.name, "status": _status(d), "changes": list(d.changes),
                             "a": side(d.a), "b": side(d.b)} for d in self.differences],
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _status(d: PackageDiff) -> str:
    return "only-a" if d.b is None else "only-b" if d.a is None else "changed"


def _sides(lock: LockFile) -> dict[str, Side]:
    grouped: dict[str, list[tuple[str, str]]] = {}
    for package in lock.packages:
        if not package.is_root:  # the generated project is named after its profile: never comparable
            grouped.setdefault(package.name, []).append((package.version, package.source_label()))
    return {name: Side(tuple(sorted({v for v, _ in entries}, key=_version_key)),
                       tuple(sorted({s for _, s in entries})))
            for name, entries in grouped.items()}


def _version_key(text: str) -> tuple[int, Version | str]:
    try:
        return 0, Version(text)
    except InvalidVersion:
        return 1, text


def _public(text: str) -> str:
    try:
        return Version(text).public
    except InvalidVersion:
        return text.split("+", 1)[0]


def _changes(a: Side, b: Side) -> tuple[str, ...]:
    changes = []
    if a.versions != b.versions:
        same_public = sorted(_public(v) for v in a.versions) == sorted(_public(v) for v in b.versions)
        changes.append(LOCAL if same_public else VERSION)
    if a.sources != b.sources:
        changes.append(INDEX)
    return tuple(changes)


def diff_locks(a: LockFile, b: LockFile, a_name: str, b_name: str) -> LockDiff:
    left, right = _sides(a), _sides(b)
    differences, same = [], 0
    for name in sorted(set(left) | set(right)):
        sa, sb = left.get(name), right.get(name)
        if sa is not None and sb is not None:
            changes = _changes(sa, sb)
            if not changes:
                same += 1
                continue
            differences.append(PackageDiff(name, sa, sb, changes))
        else:
            differences.append(PackageDiff(name, sa, sb, ()))
    return LockDiff(a_name, b_name, tuple(differences), same)


def diff_folders(a: Path, b: Path) -> LockDiff:
    """Compare `<a>/uv.lock` with `<b>/uv.lock`, named by their folders."""
    return diff_locks(read_uv_lock(a / "uv.lock"), read_uv_lock(b / "uv.lock"), a.name, b.name)


def render_table(diff: LockDiff) -> str:
    """An aligned table, then the index of each package whose index differs."""
    total = diff.same + len(diff.differences)
    if not diff.differences:
        return f"{diff.a_name} and {diff.b_name}: all {total} packages are the same\n"
    rows = [("package", diff.a_name, diff.b_name, "differs")]
    for d in diff.differences:
        what = (", ".join(_LABELS[c] for c in d.changes) if d.changes
                else f"only in {diff.a_name if d.b is None else diff.b_name}")
        rows.append((d.name, _cell(d.a), _cell(d.b), what))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{diff.a_name} vs {diff.b_name}: {len(diff.differences)} of {total} packages differ", ""]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    moved = [d for d in diff.differences if INDEX in d.changes]
    if moved:
        lines += ["", "indexes:"]
        for d in moved:
            assert d.a is not None and d.b is not None
            lines.append(f"  {d.name}: {', '.join(d.a.sources)} → {', '.join(d.b.sources)}")
    return "\n".join(lines) + "\n"


def _cell(side: Side | None) -> str:
    return "-" if side is None else ", ".join(side.versions)
