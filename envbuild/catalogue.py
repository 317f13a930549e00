"""`envbuild profiles update`: keep each profile's torch-family bounds true to what its index serves.

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

import datetime
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from envbuild.config import Config
from envbuild.deployment import pytorch_base
from envbuild.errors import UsageError
from envbuild.fsio import atomic_write
from envbuild.indexclient import IndexClient, IndexReadError, Page
from envbuild.profile_catalogue import ProfileCatalogue, builtin_profiles_dir
from envbuild.profiles import (
    PYPI_SIMPLE,
    PinnedPackage,
    TorchProfile,
    rebase_pytorch_url,
)
from envbuild.releases import (
    FAMILY,
    Metadata,
    Need,
    Releases,
    cuda_of,
    environment,
    lowest_python,
    marker_platforms,
    newest_set,
    public_spec,
    releases,
    scan,
)
from envbuild.runner import redact
from envbuild.tomlfile import load_toml

STAMP = "# envbuild profiles update:"


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
class UpdateReport:
    tables: tuple[TableReport, ...]
    unreadable: tuple[tuple[str, str], ...]  # (URL, reason) for every answer that could not be had
    old_texts: Mapping[Path, str]
    new_texts: Mapping[Path, str]  # only the files that change

    def diff(self, config: Config) -> str:
        parts: list[str] = []
        for path, new in self.new_texts.items():
            name = config.display(path)
            parts.extend(difflib.unified_diff(self.old_texts[path].splitlines(keepends=True),
                                              new.splitlines(keepends=True), f"a/{name}", f"b/{name}"))
        return "".join(parts)


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
    def cuda(self) -> str | None:
        return self.profile.accelerator_version if self.table == "pypi" else None

    @property
    def stable_index(self) -> bool:
        return self.table == "packages" and self.profile.index_url is not None and not self.profile.prerelease


def default_index(environ: Mapping[str, str]) -> str:
    from envbuild.deployment import uv_default_index

    return (uv_default_index(environ) or PYPI_SIMPLE).rstrip("/")


def select_targets(catalogue: ProfileCatalogue, names: Sequence[str], python: tuple[int, int],
                   environ: Mapping[str, str]) -> list[Target]:
    """`cu126` is its [packages] table, `cu126-pypi` its [pypi] table; no names: every table."""
    chosen = [catalogue.get(n) for n in names] or [
        p for p in (catalogue.get(n) for n in catalogue.names()) if p.base is None]
    targets = []
    for profile in chosen:
        base = catalogue.get(profile.base) if profile.base else profile
        tables = ["pypi"] if profile.base else ["packages"] + (["pypi"] if base.pypi_packages and not names else [])
        for table in tables:
            source = base.pypi_variant() if table == "pypi" else base
            if source is None:  # a [pypi] table without an [index]: the profile is PyPI's already
                continue
            index = (rebase_pytorch_url(base.index_url, pytorch_base(environ))
                     if table == "packages" and base.index_url else None)
            # Companions from the profile's own index only: one with a prebuilt-wheel index of its own is the user's.
            companions = tuple(c for c in source.companions
                               if source.companion_index(c.name) is None) if table == "packages" else ()
            targets.append(Target(base, source.name, table, index or default_index(environ),
                                  (*source.packages, *companions),
                                  marker_platforms(source.required_environments or source.environments, python),
                                  frozenset(c.name for c in companions)))
    return targets


class _Table:
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


def _floor(table: _Table, name: str, parts: list[str]) -> tuple[list[str], str | None]:
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


def _pypi_ceiling(table: _Table, name: str, parts: list[str]) -> tuple[list[str], str | None]:
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


def _index_ceiling(table: _Table, name: str, parts: list[str], newest: Mapping[str, Version],
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


def _decide(table: _Table, raw: Mapping[str, str], reference: tuple[int, int] | None) -> TableReport:
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
    if final is None:
        wanted = ", ".join(f"{n}{','.join(parts[n])}" for n in family)
        return replace(base, notes=tuple(notes), error=f"no mutually compatible set of releases within {wanted}")
    builds = _companion_builds(table, parts, final["torch"], notes)
    changes = tuple(Change(n, raw[n], ",".join(parts[n]), "; ".join(reasons[n]),
                           "companions" if n in target.companions else None)
                    for n in table.rel if ",".join(parts[n]) != raw[n])
    final = {**final, **builds}
    order = sorted(table.rel, key=lambda n: (FAMILY.index(n) if n in FAMILY else len(FAMILY), n))
    newest = {n: str(final[n]) for n in order if n in final}
    return replace(base, notes=tuple(notes), newest=newest, changes=changes)


def _companion_builds(table: _Table, parts: Mapping[str, list[str]], torch: Version,
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


def _left_out_notes(table: _Table, final: Mapping[str, Version]) -> list[str]:
    notes = []
    if "torch" in final and table.ok_torch and table.ok_torch[-1] > final["torch"]:
        notes.append(f"torch {table.ok_torch[-1]} counts, but no compatible set includes it (the newest "
                     f"torchvision/torchaudio that count pin an older torch)")
    for name, rel in table.rel.items():
        seen = rel.newest_seen()
        if seen is not None and name in final and seen > final[name] and not table.counts(name, seen):
            notes.append(f"{name} {seen} left out: {table.why(name, seen)}")
    return notes


def _raw_specs(target: Target) -> dict[str, str]:
    document = load_toml(target.profile.path)
    data: dict[str, Any] = dict(document.get(target.table, {}))
    if target.companions:
        data.update(document.get("companions", {}))
    result: dict[str, str] = {}
    for key, value in data.items():
        text = value.get("version", "") if isinstance(value, dict) else value
        result[canonicalize_name(key)] = str(text)
    return result


def update_profiles(config: Config, catalogue: ProfileCatalogue, names: Sequence[str], client: IndexClient, *,
                    environ: Mapping[str, str], today: str | None = None) -> UpdateReport:
    """Read every selected table's index, decide its bounds, and propose the new file texts. `environ`:
    the deployment's environment (ENVBUILD_PYTORCH_INDEX, UV_DEFAULT_INDEX)."""
    env = environ
    python = lowest_python(config.requires_python)
    targets = select_targets(catalogue, names, python, env)
    keys = sorted({(t.index_url, p.name) for t in targets for p in t.packages})
    pages = dict(zip(keys, client.map(lambda key: client.project_page(*key), keys), strict=True))
    meta = Metadata(client)
    tables = [_Table(t, pages, python, meta) for t in targets]
    tops = [(t.ok_torch[-1].major, t.ok_torch[-1].minor) for t in tables if t.target.stable_index and t.ok_torch]
    reference = max(tops) if len(tops) > 1 else None
    reports = tuple(_decide(t, _raw_specs(t.target), reference) for t in tables)
    failed = [e for e in pages.values() if isinstance(e, IndexReadError)] + meta.errors + client.warnings
    unreadable = [(e.url, e.reason) for e in failed]
    new, old = proposed_texts(reports, today or datetime.date.today().isoformat())
    return UpdateReport(reports, tuple(dict.fromkeys(unreadable)), old, new)


def proposed_texts(reports: Sequence[TableReport], today: str) -> tuple[dict[Path, str], dict[Path, str]]:
    """Bounds changed through tomlkit (comments and layout kept); the stamp line under the table
    header is refreshed when a bound or the newest set changed (no churn from the date alone)."""
    old: dict[Path, str] = {}
    new: dict[Path, str] = {}
    for report in reports:
        if report.error or not report.newest:
            continue
        old.setdefault(report.path, report.path.read_text(encoding="utf-8"))
        text = new.get(report.path, old[report.path])
        for change in report.changes:
            text = replace_spec(text, change.table or report.table, change.package, change.new)
        newest = ", ".join(f"{k} {v}" for k, v in report.newest.items())
        line = f"{STAMP} read {report.index_url} on {today}; newest compatible set: {newest}"
        if report.changes or not _stamped(text, report.table).endswith(f"newest compatible set: {newest}"):
            text = stamp(text, report.table, line)
        new[report.path] = text
    changed = {p: t for p, t in new.items() if t != old[p]}
    return changed, {p: old[p] for p in changed}


def replace_spec(text: str, table: str, package: str, new: str) -> str:
    import tomlkit

    doc = tomlkit.parse(text)
    section: Any = doc[table]
    key = next(k for k in section if canonicalize_name(k) == package)
    if isinstance(section[key], dict):
        section[key]["version"] = new
    else:
        section[key] = new
    return tomlkit.dumps(doc)


def _stamped(text: str, table: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.strip() == f"[{table}]" and lines[i + 1].startswith(STAMP):
            return lines[i + 1]
    return ""


def stamp(text: str, table: str, line: str) -> str:
    """Put (or replace) the stamp line right under the table's header."""
    lines = text.splitlines(keepends=True)
    for i, current in enumerate(lines):
        if current.strip() == f"[{table}]":
            if i + 1 < len(lines) and lines[i + 1].startswith(STAMP):
                lines[i + 1] = line + "\n"
            else:
                lines.insert(i + 1, line + "\n")
            break
    return "".join(lines)


def write_updates(report: UpdateReport) -> list[Path]:
    """Write the proposed files (atomically); never into an installed envbuild's own profiles."""
    packaged = builtin_profiles_dir()
    for path in report.new_texts:
        if packaged.name == "_profiles" and packaged.resolve() in path.resolve().parents:
            raise UsageError(f"{path} is a built-in profile inside the installed envbuild",
                             hint="copy it into your deployment's profiles/ folder and update that copy")
    for path, text in report.new_texts.items():
        atomic_write(path, text)
    return list(report.new_texts)


__all__ = ["Change", "TableReport", "UpdateReport", "update_profiles", "write_updates"]
