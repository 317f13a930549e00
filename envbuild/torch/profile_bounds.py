"""How `envbuild profiles update` decides a profile table's bounds from what its index serves.

What counts: a release with a wheel for every required platform of the profile
(`required-environments`, else `environments`) for the lowest CPython of the deployment's
`requires-python`; for torchvision/torchaudio, also the torch their metadata pins must count; for a
`[pypi]` table, torch counts only when its metadata asks for the profile's CUDA.

Policy, "make the profile true", conservative (a bound changes only where the index contradicts it):
- Floor `>=X`: kept while a counting release of X's minor line (at or above X) exists, otherwise
  raised to the lowest counting release above it (a `.dev0` floor stays a `.dev0` floor). `==X`
  is kept while X counts, else it becomes the newest counting release.
- `[pypi]` ceiling: PyPI moves torch to another CUDA from one release to the next, so the table
  always has one: `<` the next minor after the newest counting release, or `<` the first newer
  release that does not count, whichever is lower. An existing ceiling that admits the newest
  counting release and excludes that next one is kept.
- PyTorch-index ceiling: when an index stopped publishing for its build (its newest torch minor is
  older than the newest of the other stable indexes read in the same run, as cu124 did at 2.6.0),
  a table without a ceiling gets `<=` its newest compatible set. Otherwise a ceiling is the
  user's choice and is kept (a note says when newer releases exist above it).
- resolvelib picks the newest mutually compatible set inside the result; none is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from envbuild.core.http.errors import IndexReadError
from envbuild.core.http.indexclient import Page
from envbuild.core.runner import redact
from envbuild.torch.profile import PinnedPackage, TorchProfile
from envbuild.torch.releases import (
    FAMILY,
    Metadata,
    Need,
    Releases,
    cuda_of,
    environment,
    newest_set,
    public_spec,
    releases,
    scan,
)


@dataclass(frozen=True)
class Change:
    package: str
    old: str
    new: str
    reason: str
    table: str | None = None  # the profile table the bound is in, when not the report's ([companions])


@dataclass(frozen=True)
class TableReport:
    profile: str  # cu126 for its [packages] table, cu126-pypi for its [pypi] table
    table: str  # "packages" | "pypi"
    path: Path
    index_url: str  # the index read (mirror applied, credentials hidden)
    newest: Mapping[str, str] = field(default_factory=dict)  # the newest mutually compatible set
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None
    cache_age: float | None = None  # the oldest cached answer used, in seconds (None: all fresh)


@dataclass(frozen=True)
class Target:
    """One table of one profile file, and where its packages come from."""

    profile: TorchProfile
    name: str
    table: str
    index_url: str
    packages: tuple[PinnedPackage, ...]
    platforms: tuple[str, ...]
    companions: frozenset[str] = frozenset()  # among `packages`: the profile's [companions] (xformers, ...)

    @property
    def companions_table(self) -> str:
        """Where this table's companion bounds are written: [companions], or [pypi.companions]."""
        return "companions" if self.table == "packages" else f"{self.table}.companions"

    @property
    def cuda(self) -> str | None:
        return self.profile.accelerator_version if self.table == "pypi" else None

    @property
    def stable_index(self) -> bool:
        return self.table == "packages" and self.profile.index_url is not None and not self.profile.prerelease


class TableReleases:
    """What one table's index serves: which releases count, and why the others do not."""

    def __init__(self, target: Target, pages: Mapping[tuple[str, str], Page | IndexReadError],
                 python: tuple[int, int], meta: Metadata) -> None:
        self.target, self.python, self.meta = target, python, meta
        self.rel: dict[str, Releases] = {}
        self.platforms: dict[str, tuple[str, ...]] = {}
        self.notes: list[str] = []
        self.error: str | None = None
        self.ages = [0.0]
        self._needs: dict[tuple[str, Version], list[Need] | None] = {}
        self.cuda: dict[Version, str | None] = {}
        for package in target.packages:
            self._read(package, pages[(target.index_url, package.name)])
        self.ok_torch = self._torch() if self.error is None else []

    def _read(self, package: PinnedPackage, page: Page | IndexReadError) -> None:
        platforms = tuple(p for p in self.target.platforms if package.marker is None
                          or package.marker.evaluate(environment(p, self.python)))
        if not platforms:
            self.notes.append(f"{package.name}: its marker matches none of the profile's platforms; left as is")
        elif isinstance(page, IndexReadError):
            self.error = self.error or f"could not read {page.url}: {page.reason}"
        elif not page.found:
            self.error = self.error or f"{package.name} is not on {redact(self.target.index_url)}"
        else:
            self.ages.append(page.age or 0.0)
            self.platforms[package.name] = platforms
            strict = package.name in FAMILY
            local = self.target.profile.local_version if self.target.table == "packages" else None
            self.rel[package.name] = releases(page, platforms, self.python, local=local, strict_local=strict,
                                              prerelease=self.target.profile.prerelease)

    def _torch(self) -> list[Version]:
        found = sorted(self.rel["torch"].files)
        if self.target.cuda is not None:
            self.meta.prefetch([self.rel["torch"].files[v] for v in found])
            for version in found:
                requirements = self.meta.requirements(self.rel["torch"].files[version], self.env("torch"))
                self.cuda[version] = cuda_of(requirements) if requirements is not None else None
            found = [v for v in found if self.cuda[v] == self.target.cuda]
        if not found:
            what = f" built for CUDA {self.target.cuda}" if self.target.cuda else ""
            self.error = (f"no torch release{what} on {redact(self.target.index_url)} has wheels for "
                          f"{', '.join(self.platforms['torch'])} and CPython {self.python[0]}.{self.python[1]}")
        return found

    def env(self, name: str) -> dict[str, str]:
        return environment(self.platforms[name][0], self.python)

    def needs(self, name: str, version: Version) -> list[Need] | None:
        """The pins a release puts on the other packages of the table (None: unreadable metadata)."""
        key = (name, version)
        if key not in self._needs:
            dist = self.rel[name].files.get(version)
            found = None if dist is None else self.meta.requirements(dist, self.env(name))
            self._needs[key] = None if found is None else [
                Need(canonicalize_name(r.name), public_spec(r.specifier)) for r in found
                if canonicalize_name(r.name) in self.rel and canonicalize_name(r.name) != name]
        return self._needs[key]

    def counts(self, name: str, version: Version) -> bool:
        """torch: counts for this build; torchvision/torchaudio: the torch they pin counts (a release
        that pins none is built for an unknown torch, so it does not); others: a fitting wheel."""
        if name == "torch":
            return version in self.ok_torch
        if version not in self.rel[name].files:
            return False
        if name not in FAMILY and name not in self.target.companions:
            return True
        pins = [n for n in self.needs(name, version) or [] if n.name == "torch" and str(n.spec)]
        return bool(pins) and all(any(n.spec.contains(t, prereleases=True) for t in self.ok_torch) for n in pins)

    def why(self, name: str, version: Version) -> str:
        rel = self.rel[name]
        if version in rel.left_out:
            return rel.left_out[version]
        if version not in rel.files:
            return "not on the index"
        if name == "torch":
            return f"built for CUDA {self.cuda.get(version) or '(none found)'}"
        needs = self.needs(name, version)
        pin = next((n for n in needs or [] if n.name == "torch" and str(n.spec)), None)
        if needs is None:
            return "its metadata could not be read"
        return f"needs torch{pin.spec}" if pin else "its metadata pins no torch (built for an unknown torch)"

    def counting(self, name: str, versions: Sequence[Version]) -> Version | None:
        """The first counting release among `versions` (metadata fetched a batch at a time)."""
        prefetch = partial(self._prefetch, name)
        return next(scan(versions, partial(self.counts, name), prefetch), None)

    def _prefetch(self, name: str, versions: Sequence[Version]) -> None:
        if name != "torch" and (name in FAMILY or name in self.target.companions):
            self.meta.prefetch([self.rel[name].files[v] for v in versions if v in self.rel[name].files])


def _parts(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _op(part: str) -> str:
    return next(op for op in ("===", "==", "!=", "~=", ">=", "<=", ">", "<") if part.startswith(op))


def _floor(table: TableReleases, name: str, parts: list[str]) -> tuple[list[str], str | None]:
    index = next((i for i, p in enumerate(parts) if _op(p) in (">=", "==") and "*" not in p), None)
    if index is None:
        return parts, None
    operator, floor = _op(parts[index]), Version(parts[index][2:].strip())
    # A release line: torch's minor (2.7), a 0.0.x companion's patch (xformers 0.0.31).
    line = 3 if name in table.target.companions and floor.release[:2] == (0, 0) else 2
    versions = sorted(table.rel[name].files)
    if operator == "==":
        if table.counts(name, floor):
            return parts, None
        first = table.counting(name, versions[::-1])
    else:
        first = table.counting(name, [v for v in versions if v >= floor])
        if first is not None and first.release[:line] == floor.release[:line]:
            return parts, None
        first = first or table.counting(name, versions[::-1])
    if first is None:
        return parts, None
    seen = floor in table.rel[name].files or floor in table.rel[name].left_out
    why = table.why(name, floor) if seen else f"no {'.'.join(map(str, floor.release[:line]))} release counts"
    text = f"{first.major}.{first.minor}.0.dev0" if floor.dev == 0 and first.is_devrelease else str(first)
    return parts[:index] + [f"{operator}{text}"] + parts[index + 1:], f"{floor}: {why}"


def _pypi_ceiling(table: TableReleases, name: str, parts: list[str]) -> tuple[list[str], str | None]:
    versions = sorted(table.rel[name].files)
    top = table.counting(name, versions[::-1])
    if top is None or any(_op(p) in ("==", "===") for p in parts):
        return parts, None
    above = [v for v in versions if v > top]
    bound = Version(f"{top.major}.{top.minor + 1}.0")
    if above and above[0] < bound:
        bound = above[0]
    old = next((i for i, p in enumerate(parts) if _op(p) in ("<", "<=")), None)
    if old is not None:
        spec = SpecifierSet(parts[old])
        if spec.contains(top, prereleases=True) and not (above and spec.contains(above[0], prereleases=True)):
            return parts, None
    reason = f"newest release for this build: {top}" + (f"; {above[0]}: {table.why(name, above[0])}" if above else "")
    kept = [p for i, p in enumerate(parts) if i != old]
    return kept + [f"<{bound}"], reason


def _index_ceiling(table: TableReleases, name: str, parts: list[str], newest: Mapping[str, Version],
                   stopped: str | None) -> tuple[list[str], str | None]:
    has = any(_op(p) in ("<", "<=", "==", "===", "~=") for p in parts)
    if stopped and not has and name in newest:
        return parts + [f"<={newest[name]}"], stopped
    if has and not stopped:
        spec = SpecifierSet(",".join(parts))
        admitted = max((v for v in table.rel[name].files if spec.contains(v, prereleases=True)), default=None)
        newer = table.counting(name, sorted(v for v in table.rel[name].files if admitted and v > admitted)[::-1])
        if newer is not None:
            table.notes.append(f"{name}: the index serves {newer}, above the ceiling in {','.join(parts)}")
    return parts, None


def decide_bounds(table: TableReleases, raw: Mapping[str, str], reference: tuple[int, int] | None) -> TableReport:
    target = table.target
    base = TableReport(target.name, target.table, target.profile.path, redact(target.index_url),
                       notes=tuple(table.notes), error=table.error, cache_age=max(table.ages) or None)
    if table.error:
        return base
    # Companions are optional (installed only when a node asks): they never hold the torch family back.
    family = [n for n in table.rel if n not in target.companions]
    versions = {n: (table.ok_torch if n == "torch" else sorted(table.rel[n].files)) for n in family}
    parts: dict[str, list[str]] = {n: _parts(raw[n]) for n in table.rel}
    reasons: dict[str, list[str]] = {n: [] for n in table.rel}
    for name in table.rel:
        parts[name], why = _floor(table, name, parts[name])
        reasons[name] += [why] if why else []
    first = newest_set(versions, {n: SpecifierSet(",".join(parts[n])) for n in family}, table.needs, table.counts)
    top = (table.ok_torch[-1].major, table.ok_torch[-1].minor)
    stopped = (f"the index stopped at torch {table.ok_torch[-1]}; other stable indexes serve "
               f"{reference[0]}.{reference[1]}") if target.stable_index and reference and top < reference else None
    for name in family:
        if target.table == "pypi":
            parts[name], why = _pypi_ceiling(table, name, parts[name])
        else:
            parts[name], why = _index_ceiling(table, name, parts[name], first or {}, stopped)
        reasons[name] += [why] if why else []
    final = newest_set(versions, {n: SpecifierSet(",".join(parts[n])) for n in family}, table.needs, table.counts)
    notes = list(table.notes) + _left_out_notes(table, final or {})
    if stopped and target.profile.last_torch is None:  # a line that ended says so (detect, doctor, --cuda auto)
        notes.append(f"{stopped}: add `last-torch = \"{top[0]}.{top[1]}\"` to {target.profile.path.name} once "
                     "PyTorch's release matrix confirms the line ended")
    if final is None:
        wanted = ", ".join(f"{n}{','.join(parts[n])}" for n in family)
        return replace(base, notes=tuple(notes), error=f"no mutually compatible set of releases within {wanted}")
    builds = _companion_builds(table, parts, final["torch"], notes)
    changes = tuple(Change(n, raw[n], ",".join(parts[n]), "; ".join(reasons[n]),
                           target.companions_table if n in target.companions else None)
                    for n in table.rel if ",".join(parts[n]) != raw[n])
    final = {**final, **builds}
    order = sorted(table.rel, key=lambda n: (FAMILY.index(n) if n in FAMILY else len(FAMILY), n))
    newest = {n: str(final[n]) for n in order if n in final}
    return replace(base, notes=tuple(notes), newest=newest, changes=changes)


def _companion_builds(table: TableReleases, parts: Mapping[str, list[str]], torch: Version,
                      notes: list[str]) -> dict[str, Version]:
    """Per companion, its newest release within the profile's bound built for the newest torch: the one a
    lock takes (uv matches its exact torch pin), or none (a note says so)."""
    found: dict[str, Version] = {}
    for name in sorted(table.target.companions):
        spec = SpecifierSet(",".join(parts[name]))
        fits = [v for v in sorted(table.rel[name].files, reverse=True) if spec.contains(v, prereleases=True)
                and any(n.name == "torch" and n.spec.contains(torch, prereleases=True)
                        for n in table.needs(name, v) or [])]
        if fits:
            found[name] = fits[0]
        else:
            notes.append(f"{name}: no release within {','.join(parts[name]) or 'any version'} is built for "
                               f"torch {torch}; a node asking for it will not lock with that torch")
    return found


def _left_out_notes(table: TableReleases, final: Mapping[str, Version]) -> list[str]:
    notes = []
    if "torch" in final and table.ok_torch and table.ok_torch[-1] > final["torch"]:
        notes.append(f"torch {table.ok_torch[-1]} counts, but no compatible set includes it (the newest "
                     f"torchvision/torchaudio that count pin an older torch)")
    for name, rel in table.rel.items():
        seen = rel.newest_seen()
        if seen is not None and name in final and seen > final[name] and not table.counts(name, seen):
            notes.append(f"{name} {seen} left out: {table.why(name, seen)}")
    return notes
