"""Can a committed lock be trusted? Every artifact hashed, and indexes and sources as the profile says.

A lock is what a fresh machine installs from, so two things must hold before anyone builds from it:
every file uv may download carries a sha256 (the PyTorch index has served files without one), and
the lock folder still routes the torch family, and only it, to the profile's index (a hand edit
that drops `explicit = true` or a source reopens the dependency confusion the profile closes).
Offline and without uv: this reads `pyproject.toml`, `uv.lock` and `envbuild-lock.json` only.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from packaging.markers import InvalidMarker, Marker
from packaging.utils import canonicalize_name

from envbuild.errors import ConfigError, LockIntegrityError, StaleLockError
from envbuild.lockdir import LockFolder, sha256_text
from envbuild.profiles import CANONICAL_PYTORCH_BASE, TorchProfile
from envbuild.tomlfile import parse_toml
from envbuild.uvlock import Dependency, LockedPackage, LockFile, parse_uv_lock
from envbuild.variants import VariantGroup, builtin_groups

_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
# Settings that change where packages come from; envbuild never writes them.
_REDIRECTING_KEYS = ("index-url", "extra-index-url", "find-links", "no-index", "index-strategy",
                     "no-sources")
# Platform variables whose `==`/`!=` atoms decide whether two markers can hold together.
_PLATFORM_VARS = frozenset({"sys_platform", "platform_machine", "platform_system", "os_name",
                            "implementation_name", "platform_python_implementation"})
_MAX_TERMS = 256


@dataclass(frozen=True)
class Artifact:
    """A file (or source tree) uv may install, and the hash the lock records for it, if any."""

    package: str
    version: str
    kind: str  # "wheel", "sdist", "git", "source tree" or "package" (nothing recorded at all)
    location: str  # URL or path
    hash: str | None  # what the lock records: None, or a digest that is not sha256

    @property
    def filename(self) -> str:
        return unquote(self.location.rstrip("/").rsplit("/", 1)[-1])

    def describe(self) -> str:
        why = "no hash" if self.hash is None else f"hash is not sha256 ({self.hash.split(':', 1)[0]})"
        return f"{self.package} {self.version}: {self.kind} {self.filename} ({why}; {self.location})"


@dataclass(frozen=True)
class AuditReport:
    profile: str
    folder: Path
    unhashed: tuple[Artifact, ...]
    tampering: tuple[str, ...]
    packages: int  # packages audited (the root project and out-of-scope packages not counted)
    artifacts: int  # artifacts audited
    skipped: tuple[str, ...]  # "name version" of packages no profile environment can install

    def clean(self, allow_unhashed: bool = False) -> bool:
        return not self.tampering and (allow_unhashed or not self.unhashed)


# -- which packages the profile's environments can install -------------------------------------

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


def _in_scope(lock: LockFile, environments: Sequence[str]) -> list[bool]:
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


# -- hashes ---------------------------------------------------------------------------------------

def package_artifacts(package: LockedPackage) -> list[Artifact]:
    """Every installable thing the lock records for a package (none for the root project)."""
    if "virtual" in package.source:
        return []  # the generated project itself: nothing is installed from it
    if "git" in package.source:
        return [Artifact(package.name, package.version, "git", package.source["git"], None)]
    for kind in ("editable", "directory"):
        if kind in package.source:
            return [Artifact(package.name, package.version, "source tree", package.source[kind], None)]
    fallback = package.source_label()
    found = [Artifact(package.name, package.version, f.kind, f.location or fallback, f.hash) for f in package.files]
    return found or [Artifact(package.name, package.version, "package", fallback, None)]


def _hashed(artifact: Artifact) -> bool:
    return artifact.hash is not None and bool(_SHA256.match(artifact.hash))


# -- edits away from the profile -----------------------------------------------------------------

def _table(value: object) -> dict[str, Any]:
    """A TOML table, or empty when a hand edit put something else there (the checks then name what is missing)."""
    return value if isinstance(value, dict) else {}


def _norm(url: object) -> str:
    return str(url).rstrip("/")


def _index_problems(uv: Mapping[str, Any], profile: TorchProfile, expected: str | None,
                    default_index: str | None = None, index_format: str = "simple") -> list[str]:
    entries = [e for e in (uv.get("index") or []) if isinstance(e, dict)]
    # A lock made through a PyPI mirror names it, exactly as envbuild renders it: that entry is expected.
    entries = [e for e in entries if not (default_index and e == {"name": "pypi-mirror", "url": default_index,
                                                                   "default": True})]
    # A companion's own prebuilt-wheel index, exactly as the profile names it (rendered when a node asks).
    companion_entries = [{"name": c.index_name, "url": c.url, "explicit": True,
                          **({"format": "flat"} if c.format == "flat" else {})} for c in profile.companion_indexes]
    entries = [e for e in entries if e not in companion_entries]
    if expected is None:
        return [f"[[tool.uv.index]] `{e.get('name')}` ({e.get('url')}) is present, but profile {profile.name} "
                "takes torch from the default index and names no index" for e in entries]
    problems = [f"[[tool.uv.index]] `{e.get('name')}` ({e.get('url')}) was added: profile {profile.name} names "
                f"only `{profile.index_name}`" for e in entries if e.get("name") != profile.index_name]
    ours = [e for e in entries if e.get("name") == profile.index_name]
    if not ours:
        problems.append(f"[[tool.uv.index]] `{profile.index_name}` (profile {profile.name}'s index) is missing")
    for entry in ours:
        if _norm(entry.get("url")) != _norm(expected):
            problems.append(f"index `{profile.index_name}` points at {entry.get('url')}, but this deployment locks "
                            f"profile {profile.name} against {expected}")
        if entry.get("explicit") is not True:
            problems.append(f"index `{profile.index_name}` is not `explicit = true`: packages outside the torch "
                            "family could come from it")
        allowed = {"name", "url", "explicit"} | ({"format"} if index_format == "flat" else set())
        problems.extend(f"index `{profile.index_name}` has `{key}`, which envbuild never writes"
                        for key in sorted(set(entry) - allowed))
        if index_format == "flat" and entry.get("format") != "flat":
            problems.append(f"index `{profile.index_name}` should be `format = \"flat\"` (a flat mirror)")
    return problems


def _source_problems(uv: Mapping[str, Any], profile: TorchProfile) -> list[str]:
    sources = {str(canonicalize_name(k)): v for k, v in _table(uv.get("sources")).items()}
    if profile.index_name is None:
        return [f"[tool.uv.sources] pins {name}; profile {profile.name} takes every package from the default index"
                for name in sorted(sources)]
    companions = {c.name: c for c in profile.companions}
    problems = [f"[tool.uv.sources] pins {name}, which is not in profile {profile.name}'s torch family or companions"
                for name in sorted(set(sources) - profile.package_names() - set(companions))]
    for name in sorted(set(sources) & set(companions)):  # present only when an input asks for it
        own = profile.companion_index(name)
        wanted = {"index": own.index_name if own else profile.index_name, **({"marker": str(companions[name].marker)}
                                                  if companions[name].marker is not None else {})}
        if not isinstance(sources[name], dict) or _normal_source(sources[name]) != wanted:
            problems.append(f"[tool.uv.sources] {name} = {sources[name]!r}; profile {profile.name} says {wanted!r}")
    for package in profile.packages:
        expected: dict[str, str] = {"index": profile.index_name}
        if package.marker is not None:
            expected["marker"] = str(package.marker)
        got = sources.get(package.name)
        if got is None:
            problems.append(f"{package.name} is no longer pinned to index `{profile.index_name}` "
                            "in [tool.uv.sources]")
        elif not isinstance(got, dict) or _normal_source(got) != expected:
            problems.append(f"[tool.uv.sources] {package.name} = {got!r}; profile {profile.name} says {expected!r}")
    return problems


def _normal_source(source: Mapping[str, Any]) -> dict[str, str]:
    result = {k: str(v) for k, v in source.items()}
    if "marker" in result:
        try:
            result["marker"] = str(Marker(result["marker"]))
        except InvalidMarker:
            pass
    return result


def _override_problems(uv: Mapping[str, Any], pyproject: Mapping[str, Any],
                       groups: Sequence[VariantGroup]) -> list[str]:
    """envbuild writes overrides only to drop the other members of a variant group (envbuild.variants)."""
    from envbuild.variants import is_rendered_override

    overrides = uv.get("override-dependencies", [])
    if not isinstance(overrides, list):
        return ["[tool.uv] override-dependencies is not a list (envbuild writes a list of requirements)"]
    deps = _table(pyproject.get("project")).get("dependencies") or []
    direct = [re.split(r"[\s\[;<>=!~@(]", str(d), maxsplit=1)[0] for d in deps]
    return [f"[tool.uv] override-dependencies has `{item}`, which envbuild never writes (it only drops the other "
            "members of a variant group)" for item in overrides
            if not isinstance(item, str) or not is_rendered_override(item, groups, direct)]


def _setting_problems(uv: Mapping[str, Any], profile: TorchProfile) -> list[str]:
    problems = [f"[tool.uv] sets `{key}`, which changes where packages come from (envbuild never writes it)"
                for key in _REDIRECTING_KEYS if key in uv]
    for key, wanted in (("environments", profile.environments),
                        ("required-environments", profile.required_environments)):
        got = uv.get(key, [])
        try:
            same = {str(Marker(m)) for m in got} == {str(Marker(m)) for m in wanted}
        except (InvalidMarker, TypeError):
            same = False
        if not same:
            problems.append(f"[tool.uv] {key} = {list(got)!r}, but profile {profile.name} says {list(wanted)!r}")
    return problems


def _lock_problems(lock: LockFile, profile: TorchProfile, expected: str | None, bases: Sequence[str]) -> list[str]:
    family = profile.package_names()
    companions = {c.name for c in profile.companions}
    own = {_norm(c.url): c.name for c in profile.companion_indexes}
    problems: list[str] = []
    others = defaultdict(list)
    for package in lock.packages:
        if package.is_root:
            continue
        where = package.source_label()
        if package.name in family:
            if expected is not None and (package.registry is None or package.registry != _norm(expected)):
                problems.append(f"uv.lock takes {package.name} {package.version} from {where}, not from profile "
                                f"{profile.name}'s index {expected}")
            elif expected is None and (package.registry is None or _is_pytorch_index(package.registry, bases)):
                problems.append(f"uv.lock takes {package.name} {package.version} from {where}; profile "
                                f"{profile.name} takes it from the default index")
        elif package.registry in own:  # a companion's own prebuilt-wheel index serves that companion alone
            if own[package.registry] != package.name:
                problems.append(f"uv.lock takes {package.name} {package.version} from {where}, the index profile "
                                f"{profile.name} names for {own[package.registry]} only")
        elif package.name in companions and profile.companion_index(package.name) is not None:
            problems.append(f"uv.lock takes {package.name} {package.version} from {where}, not from the index "
                            f"profile {profile.name} names for it")
        elif expected is not None and package.registry == _norm(expected) and package.name in companions:
            continue  # a companion the profile takes from its index (envbuild.companions)
        elif expected is not None and package.registry == _norm(expected):
            problems.append(f"uv.lock takes {package.name} {package.version} from the PyTorch index {where}: "
                            "only the torch family may come from it")
        elif package.registry is not None:
            others[package.registry].append(package.name)
    if len(others) > 1:
        listing = "; ".join(f"{url} ({len(names)} packages)" for url, names in sorted(others.items()))
        problems.append(f"uv.lock takes packages from several indexes besides the profile's: {listing}")
    if expected is None and len(others) == 1:
        default = next(iter(others))
        problems.extend(f"uv.lock takes {p.name} {p.version} from {p.registry}, not the default index {default}"
                        for p in lock.packages if p.name in family and p.registry not in (None, default)
                        and not _is_pytorch_index(p.registry, bases))
    return problems


def _is_pytorch_index(url: str, bases: Sequence[str]) -> bool:
    """Under one of the bases a PyTorch index of this deployment lives at (canonical, rebased, mirror)."""
    return any(base and (url == _norm(base) or url.startswith(_norm(base) + "/")) for base in bases)


def _fingerprint_problems(folder: LockFolder, pyproject_text: str, lock_text: str) -> list[str]:
    """A second line of defence: the digests envbuild recorded when it wrote the folder."""
    recorded, where = folder.read_fingerprint(), folder.fingerprint_path.name
    if recorded is None:
        return []  # missing or from another envbuild: `lock --check` reports that
    return [f"{name} differs from what {writer} wrote (digest in {where})"
            for name, writer, digest, text in (
                    ("pyproject.toml", "envbuild", recorded.pyproject_sha256, pyproject_text),
                    ("uv.lock", "`uv lock`", recorded.uv_lock_sha256, lock_text))
            if digest and digest != sha256_text(text)]


# -- the audit -------------------------------------------------------------------------------------

def audit_texts(pyproject_text: str, lock_text: str, profile: TorchProfile, *, folder: Path,
                indexes: tuple[str | None, str | None, str],
                pytorch_bases: Sequence[str] = (CANONICAL_PYTORCH_BASE,),
                variant_groups: Sequence[VariantGroup] | None = None) -> AuditReport:
    """Audit a lock given as text (pure: no files read).

    `indexes` = (torch index, default index, torch index format) the lock should name, as
    `Deployment.indexes` gives them; `pytorch_bases`: where this deployment's PyTorch indexes live;
    `variant_groups`: the deployment's (built-in ones when not given), whose overrides are expected.
    """
    lock = parse_uv_lock(lock_text, folder / "uv.lock")
    try:
        pyproject = parse_toml(pyproject_text, folder / "pyproject.toml")
    except ConfigError as exc:
        raise LockIntegrityError(str(exc), hint=f"re-run `envbuild lock --profile {profile.name}`") from None
    uv = _table(_table(pyproject.get("tool")).get("uv"))
    expected, default_index, index_format = indexes[:3]
    tampering = [*_index_problems(uv, profile, expected, default_index, index_format),
                 *_source_problems(uv, profile),
                 *_setting_problems(uv, profile), *_lock_problems(lock, profile, expected, pytorch_bases),
                 *_override_problems(uv, pyproject, builtin_groups() if variant_groups is None else variant_groups)]
    environments = (*profile.environments, *lock.supported_markers) if profile.environments else ()
    scope = _in_scope(lock, environments)
    audited = [p for p, keep in zip(lock.packages, scope, strict=True) if keep and not p.is_root]
    artifacts = [a for p in audited for a in package_artifacts(p)]
    return AuditReport(
        profile=profile.name, folder=folder, unhashed=tuple(a for a in artifacts if not _hashed(a)),
        tampering=tuple(dict.fromkeys(tampering)), packages=len(audited), artifacts=len(artifacts),
        skipped=tuple(f"{p.name} {p.version}" for p, keep in zip(lock.packages, scope, strict=True)
                      if not keep and not p.is_root),
    )


def audit_lock(folder: LockFolder, profile: TorchProfile, *, indexes: tuple[str | None, str | None, str],
               pytorch_bases: Sequence[str] = (CANONICAL_PYTORCH_BASE,),
               variant_groups: Sequence[VariantGroup] | None = None) -> AuditReport:
    """Audit a committed lock folder against its profile (through `trust`, which every command uses)."""
    if not folder.exists():
        raise StaleLockError(f"no lock for profile {profile.name} at {folder.path}",
                             hint=f"run `envbuild lock --profile {profile.name}` and commit it")
    pyproject_text = folder.pyproject.read_text(encoding="utf-8")
    lock_text = folder.uv_lock.read_text(encoding="utf-8")
    report = audit_texts(pyproject_text, lock_text, profile, folder=folder.path, indexes=indexes,
                         pytorch_bases=pytorch_bases, variant_groups=variant_groups)
    return replace(report, tampering=(*report.tampering, *_fingerprint_problems(folder, pyproject_text, lock_text)))


def require_clean(report: AuditReport, *, allow_unhashed: bool = False) -> None:
    """Raise `LockIntegrityError` naming every problem; unhashed files pass with `allow_unhashed`."""
    if report.clean(allow_unhashed):
        return
    lines = [f"edited away from the profile: {t}" for t in report.tampering]
    if not allow_unhashed:
        lines.extend(f"no sha256: {a.describe()}" for a in report.unhashed)
    hints = []
    if report.tampering:
        hints.append(f"regenerate it with `envbuild lock --profile {report.profile}` and commit it")
    if report.unhashed and not allow_unhashed:
        hints.append("the index served these files without a sha256; pass --allow-unhashed to accept them anyway")
    raise LockIntegrityError(f"the lock for profile {report.profile} ({report.folder}) cannot be trusted:\n  - "
                             + "\n  - ".join(lines), hint="; ".join(hints))
