"""Has a lock folder been edited away from its profile? The checks behind `AuditReport.tampering`.

The profile routes the torch family, and only it, to its index; a hand edit to `pyproject.toml`
or `uv.lock` (an index added, `explicit = true` dropped, a source or override envbuild never
writes, a package taken from another index) reopens the dependency confusion the profile closes.
Each check returns what it found as sentences naming the key; `audit` gathers them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.utils import canonicalize_name

from envbuild.pkgs.lockdir import LockFolder, sha256_text
from envbuild.pkgs.uvlock import LockFile
from envbuild.torch.profile import TorchProfile
from envbuild.torch.variants import VariantGroup

# Settings that change where packages come from; envbuild never writes them.
_REDIRECTING_KEYS = ("index-url", "extra-index-url", "find-links", "no-index", "index-strategy",
                     "no-sources")


def toml_table(value: object) -> dict[str, Any]:
    """A TOML table, or empty when a hand edit put something else there (the checks then name what is missing)."""
    return value if isinstance(value, dict) else {}


def _norm(url: object) -> str:
    return str(url).rstrip("/")


def index_problems(uv: Mapping[str, Any], profile: TorchProfile, expected: str | None,
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


def source_problems(uv: Mapping[str, Any], profile: TorchProfile) -> list[str]:
    sources = {str(canonicalize_name(k)): v for k, v in toml_table(uv.get("sources")).items()}
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


def override_problems(uv: Mapping[str, Any], pyproject: Mapping[str, Any],
                      groups: Sequence[VariantGroup]) -> list[str]:
    """envbuild writes overrides only to drop the other members of a variant group (envbuild.torch.variants)."""
    from envbuild.torch.variants import is_rendered_override

    overrides = uv.get("override-dependencies", [])
    if not isinstance(overrides, list):
        return ["[tool.uv] override-dependencies is not a list (envbuild writes a list of requirements)"]
    deps = toml_table(pyproject.get("project")).get("dependencies") or []
    direct = [re.split(r"[\s\[;<>=!~@(]", str(d), maxsplit=1)[0] for d in deps]
    return [f"[tool.uv] override-dependencies has `{item}`, which envbuild never writes (it only drops the other "
            "members of a variant group)" for item in overrides
            if not isinstance(item, str) or not is_rendered_override(item, groups, direct)]


def setting_problems(uv: Mapping[str, Any], profile: TorchProfile) -> list[str]:
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


# Names only PyTorch's own indexes publish: on PyPI they are placeholders or squatted (`torchtriton` was
# the 2022 dependency-confusion package). A lock may hold one only from the profile's index.
INDEX_ONLY_NAMES = frozenset({"pytorch-triton", "pytorch-triton-rocm", "pytorch-triton-xpu", "torchtriton"})


def lock_problems(lock: LockFile, profile: TorchProfile, expected: str | None, bases: Sequence[str]) -> list[str]:
    family = profile.package_names()
    companions = {c.name for c in profile.companions}
    own = {_norm(c.url): c.name for c in profile.companion_indexes}
    problems: list[str] = []
    others = defaultdict(list)
    for package in lock.packages:
        if package.is_root:
            continue
        where = package.source_label()
        if package.name in INDEX_ONLY_NAMES and package.name not in family and (
                expected is None or package.registry != _norm(expected)):
            problems.append(f"uv.lock takes {package.name} {package.version} from {where}: only PyTorch's own "
                            f"indexes publish {package.name} (a copy elsewhere is a dependency-confusion attack), "
                            f"and profile {profile.name} takes none from its index")
            continue
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
            continue  # a companion the profile takes from its index (envbuild.torch.companions)
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


def fingerprint_problems(folder: LockFolder, pyproject_text: str, lock_text: str) -> list[str]:
    """A second line of defence: the digests envbuild recorded when it wrote the folder."""
    recorded, where = folder.read_fingerprint(), folder.fingerprint_path.name
    if recorded is None:
        return []  # missing or from another envbuild: `lock --check` reports that
    return [f"{name} differs from what {writer} wrote (digest in {where})"
            for name, writer, digest, text in (
                    ("pyproject.toml", "envbuild", recorded.pyproject_sha256, pyproject_text),
                    ("uv.lock", "`uv lock`", recorded.uv_lock_sha256, lock_text))
            if digest and digest != sha256_text(text)]
