"""Reading one profile file (`profiles/<name>.toml`) into a `TorchProfile`, refusing what a lock must not take.

A profile routes packages to an index that is written into committed locks, so reading one is
where a bad file stops: unknown keys, a schema from another envbuild, a name that is not the file's,
an index URL with credentials, a package outside the torch family pinned to the PyTorch index.
Kept apart from the model (`profiles`): most code takes a profile as a value and never reads a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envbuild.pkgs.requirements import SourcedRequirement

from envbuild.core.errors import ConfigError
from envbuild.core.tomlfile import check_keys, expect, expect_str_list, load_toml
from envbuild.torch.companion_data import PYPI, companion_table, index_companions
from envbuild.torch.profile import (
    CREDENTIALS_PROBLEM,
    TORCH_FAMILY_NAMES,
    CompanionIndex,
    PinnedPackage,
    TorchProfile,
    canonical_name,
    credentials_hint,
    index_url_problem,
)

SCHEMA = 1
ACCELERATORS = ("cpu", "cuda", "rocm", "xpu", "mps")
CHANNELS = ("stable", "nightly")
_TOP_KEYS = {"schema", "name", "description", "accelerator", "accelerator-version", "channel",
             "local-version", "last-torch", "requires-python", "index", "packages", "platforms", "pypi", "companions"}
_MINOR = re.compile(r"\d+\.\d+")
# PyPI's torch is a CUDA build on Linux only (the Windows wheel is +cpu, macOS has MPS): a -pypi variant's platforms.
_NOT_PYPI_CUDA = {
    f"{system} {machine}": {"sys_platform": platform, "platform_system": name, "platform_machine": machine,
                            "os_name": "nt" if platform == "win32" else "posix", "python_version": "3.12",
                            "python_full_version": "3.12.0", "implementation_name": "cpython",
                            "platform_python_implementation": "CPython", "extra": ""}
    for system, platform, name, machine in (("Windows", "win32", "Windows", "AMD64"),
                                            ("Windows", "win32", "Windows", "ARM64"),
                                            ("macOS", "darwin", "Darwin", "arm64"),
                                            ("macOS", "darwin", "Darwin", "x86_64"))}


def load_profile(path: Path) -> TorchProfile:
    data = load_toml(path)
    check_keys(data, _TOP_KEYS, "", path)
    schema = expect(data.get("schema", SCHEMA), int, "schema", path)
    if schema != SCHEMA:
        raise ConfigError(path, f"profile schema {schema} is not supported (this envbuild reads {SCHEMA})",
                          hint="upgrade envbuild")
    name = _required_str(data, "name", path)
    if name != path.stem:
        raise ConfigError(path, f"`name = \"{name}\"` does not match the file name `{path.stem}.toml`")
    accelerator = _required_str(data, "accelerator", path)
    one_of(accelerator, ACCELERATORS, "accelerator", path)
    channel = expect(data.get("channel", "stable"), str, "channel", path)
    one_of(channel, CHANNELS, "channel", path)
    version = data.get("accelerator-version")
    if accelerator in ("cuda", "rocm") and version is None:
        raise ConfigError(path, f"`accelerator-version` is required for accelerator `{accelerator}`")
    index = expect(data.get("index", {}), dict, "index", path)
    check_keys(index, {"name", "url"}, "index.", path)
    if accelerator in ("cuda", "rocm", "xpu") and not index:
        raise ConfigError(path, f"an `{accelerator}` profile needs an `[index]` (name and url)",
                          hint="only profiles whose torch comes from PyPI (cpu on PyPI, mps) go without one")
    platforms = expect(data.get("platforms", {}), dict, "platforms", path)
    check_keys(platforms, {"environments", "required-environments"}, "platforms.", path)
    url = _required_str(index, "url", path, prefix="index.").rstrip("/") if index else None
    problem = index_url_problem(url) if url else None
    if problem:
        raise ConfigError(path, f"`index.url`: {problem}", hint=credentials_hint(index.get("name"))
                          if CREDENTIALS_PROBLEM in problem else None)
    packages = pinned_packages(expect(data.get("packages", {}), dict, "packages", path), "packages", path)
    companions, companion_indexes = _companions(data.get("companions"), bool(index), path)
    pypi = dict(expect(data.get("pypi", {}), dict, "pypi", path))
    pypi_last = pypi.pop("last-torch", None)
    pypi_python = _requires_python(pypi.pop("requires-python", None), "pypi.requires-python", path)
    pypi_platforms = expect(pypi.pop("platforms", {}), dict, "pypi.platforms", path)
    check_keys(pypi_platforms, {"environments", "required-environments"}, "pypi.platforms.", path)
    pypi_companions = _pypi_companions(pypi.pop("companions", None), bool(pypi), path)
    if "torch" not in {p.name for p in packages}:
        raise ConfigError(path, "`[packages]` must include torch")
    pypi_packages = pinned_packages(pypi, "pypi", path)
    last_torch = ended_line(data.get("last-torch"), "last-torch", packages, path)
    pypi_last_torch = ended_line(pypi_last, "pypi.last-torch", pypi_packages, path)
    pypi_environments = _pypi_platforms(pypi_platforms, "environments", path)
    pypi_required = _pypi_platforms(pypi_platforms, "required-environments", path)
    return TorchProfile(
        name=name,
        description=expect(data.get("description", ""), str, "description", path),
        accelerator=accelerator,
        accelerator_version=expect(version, str, "accelerator-version", path) if version is not None else None,
        channel=channel,
        local_version=_optional_str(data, "local-version", path),
        index_name=_required_str(index, "name", path, prefix="index.") if index else None,
        index_url=url,
        packages=packages,
        environments_as_written=tuple(
            expect_str_list(platforms.get("environments", []), "platforms.environments", path)),
        required_environments_as_written=tuple(
            expect_str_list(platforms.get("required-environments", []), "platforms.required-environments", path)),
        path=path,
        pypi_packages=pypi_packages,
        companions=companions,
        companion_indexes=companion_indexes,
        pypi_companions=pypi_companions,
        last_torch=last_torch,
        pypi_last_torch=pypi_last_torch,
        pypi_environments=pypi_environments,
        pypi_required_environments=pypi_required,
        requires_python=_requires_python(data.get("requires-python"), "requires-python", path),
        pypi_requires_python=pypi_python,
    )


_SPECIFIERS = re.compile(r"\s*(?:~=|===?|!=|<=|>=|<|>)\s*[0-9A-Za-z.*+!_-]+(?:\s*,\s*(?:~=|===?|!=|<=|>=|<|>)\s*"
                         r"[0-9A-Za-z.*+!_-]+)*\s*")


def _requires_python(value: Any, key: str, path: Path) -> str | None:
    """Its shape checked here without `packaging` (a profile loads on every no-op command: parsing it costs
    ~13 ms of imports there); `python_gap` parses it in full where it is used, naming this file."""
    if value is None:
        return None
    text = str(expect(value, str, key, path))
    if not _SPECIFIERS.fullmatch(text):
        raise ConfigError(path, f"`{key}` = {text!r} is not a version specifier such as \">=3.11\"")
    return text


def python_gap(profile: TorchProfile, deployment_python: str) -> str | None:
    """The lowest CPython the deployment's `requires-python` admits and the profile's torch has no wheel for."""
    if profile.requires_python is None:
        return None
    from envbuild.torch.profile import parse_specifier

    own = parse_specifier(profile.requires_python, "requires-python", profile.path)
    try:
        wanted = parse_specifier(deployment_python, "lock.requires-python", Path("envbuild.toml"))
    except ConfigError:
        return None
    for minor in range(6, 30):
        version = f"3.{minor}"
        if wanted.contains(f"{version}.0") and not own.contains(f"{version}.0"):
            return version
    return None


def key_line(path: Path, dotted: str) -> str:
    """`path:line` of a dotted key (`pypi.last-torch`) in a TOML file, for messages; `path` alone if not found."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return str(path)
    table, _, key = dotted.rpartition(".")
    current = ""
    for number, line in enumerate(lines, 1):
        header = re.fullmatch(r"\s*\[([^\[\]]+)\]\s*(#.*)?", line)
        if header:
            current = header.group(1).strip()
        elif current == table and re.match(rf"\s*\"?{re.escape(key)}\"?\s*=", line):
            return f"{path}:{number}"
    return str(path)


def ended_line(value: Any, key: str, packages: tuple[PinnedPackage, ...], path: Path) -> str | None:
    """`last-torch = "2.14"`: the line ended with that torch minor, so its torch bound must admit nothing newer
    (a lock would otherwise look for releases the index will never have, and detect would call it current)."""
    if value is None:
        return None
    text = str(expect(value, str, key, path))
    if not _MINOR.fullmatch(text):
        raise ConfigError(key_line(path, key), f"`{key} = \"{text}\"` is not a torch minor such as \"2.14\"",
                          hint="the newest torch minor this line was built for: major.minor, no patch")
    return text


def _check_ended(text: str | None, key: str, packages: tuple[PinnedPackage, ...], path: Path) -> None:
    torch = next((p for p in packages if p.name == "torch"), None)
    if text is None or torch is None:
        return
    major, minor = (int(part) for part in text.split("."))
    newer = next((v for m in range(minor + 1, minor + 40) for v in (f"{major}.{m}.0.dev0", f"{major}.{m}.0",
                                                                     f"{major}.{m}.9")
                  if torch.specifier.contains(v, prereleases=True)), None) or next(
        (v for v in (f"{major + 1}.0.0.dev0", f"{major + 1}.0.0") if torch.specifier.contains(v, prereleases=True)),
        None)
    if newer is not None:
        raise ConfigError(key_line(path, torch.key),
                          f"`{torch.key} = \"{torch.specifier_text}\"` admits torch {newer}, but `{key} = \"{text}\"` "
                          f"says the line ended with torch {text} ({key_line(path, key)})",
                          hint=f"bound torch below the next minor (`<{major}.{minor + 1}`), or remove `{key}` if the "
                               "line still gets new torch releases")


def check_profile(profile: TorchProfile) -> TorchProfile:
    """What a profile file says that needs `packaging` to check, checked where a lock is planned (or the
    catalogue listed) rather than on every no-op command (~15 ms of imports there): its specifiers and
    markers, an ended line's torch bound, a -pypi variant's platforms."""
    profile.validate()
    check_pypi_platforms(profile)
    if profile.base is None:
        _check_ended(profile.last_torch, "last-torch", profile.packages, profile.path)
        _check_ended(profile.pypi_last_torch, "pypi.last-torch", profile.pypi_packages, profile.path)
    else:  # a -pypi variant: its packages and last-torch are the [pypi] table's
        _check_ended(profile.last_torch, "pypi.last-torch", profile.packages, profile.path)
    return profile


_LINUX_CLAUSE = re.compile(r"""sys_platform\s*==\s*['"]linux['"]|platform_system\s*==\s*['"]Linux['"]""")
_OTHER_SYSTEMS = {"Windows AMD64": re.compile(r"win32|Windows|\bnt\b"), "macOS arm64": re.compile(r"darwin|Darwin")}


def _pypi_platforms(table: Mapping[str, Any], key: str, path: Path) -> tuple[str, ...]:
    """`[pypi.platforms]`: Linux only, where PyPI's torch wheels carry CUDA (x86_64; aarch64 from torch 2.11).
    Checked by their text here (a profile loads on every no-op command: `packaging.markers` costs ~10 ms
    there); `check_pypi_platforms` evaluates them in full where a lock is planned."""
    markers = tuple(expect_str_list(table.get(key, []), f"pypi.platforms.{key}", path))
    if markers:
        outside = sorted({name for text in markers for name, mentions in _OTHER_SYSTEMS.items()
                          if mentions.search(text)} | {"platforms other than Linux" for text in markers
                                                       if not _LINUX_CLAUSE.search(text)})
        if outside:
            raise ConfigError(key_line(path, f"pypi.platforms.{key}"),
                              f"`pypi.platforms.{key}` covers {', '.join(outside)}, where PyPI's torch is not a "
                              "CUDA build", hint="a -pypi variant covers Linux x86_64 and aarch64 only (PyPI's "
                                                 "Windows wheel is +cpu; macOS takes the mps profile)")
    return markers


def _companions(value: Any, has_index: bool,
                path: Path) -> tuple[tuple[PinnedPackage, ...], tuple[CompanionIndex, ...]]:
    """Most profiles have none: a no-op lock (which loads the profile) then never imports companions."""
    if value is None:
        return (), ()
    return companions_table(value, has_index, path)


def _pypi_companions(value: Any, has_pypi: bool, path: Path) -> tuple[PinnedPackage, ...]:
    if value is None:
        return ()
    return pypi_companions_table(value, has_pypi, path)


def pinned_packages(table: Mapping[str, Any], key: str, path: Path,
              allowed: frozenset[str] = TORCH_FAMILY_NAMES) -> tuple[PinnedPackage, ...]:
    result = []
    for raw_name, value in sorted(table.items()):
        name = canonical_name(raw_name)
        where = f"{key}.{raw_name}"
        if name not in allowed:
            raise ConfigError(path, f"`{where}`: {raw_name!r} is not a torch-family package, and only those may "
                              "be pinned to a profile's index", hint="a profile's [packages] and [pypi] tables "
                              f"name only {', '.join(sorted(TORCH_FAMILY_NAMES))}; other packages come from "
                              "the default index through the deployment's requirements")
        marker_text = None
        if isinstance(value, dict):
            check_keys(value, {"version", "marker"}, f"{where}.", path)
            spec_text = expect(value.get("version", ""), str, f"{where}.version", path)
            marker_text = value.get("marker")
            if marker_text is not None:
                expect(marker_text, str, f"{where}.marker", path)
        else:
            spec_text = expect(value, str, where, path)
        result.append(PinnedPackage(name, spec_text, marker_text or None, path, where))
    return tuple(result)


def _required_str(table: Mapping[str, Any], key: str, path: Path, prefix: str = "") -> str:
    if key not in table:
        raise ConfigError(path, f"missing required key `{prefix}{key}`")
    value = expect(table[key], str, prefix + key, path)
    if not value.strip():
        raise ConfigError(path, f"`{prefix}{key}` must not be empty")
    return str(value)


def _optional_str(table: Mapping[str, Any], key: str, path: Path) -> str | None:
    value = table.get(key)
    return None if value is None else str(expect(value, str, key, path))


def one_of(value: str, allowed: tuple[str, ...], key: str, path: Path) -> None:
    if value not in allowed:
        raise ConfigError(path, f"`{key} = \"{value}\"` is not one of: {', '.join(allowed)}")


def companions_table(value: Any, has_index: bool,
                     path: Path) -> tuple[tuple[PinnedPackage, ...], tuple[CompanionIndex, ...]]:
    """`[companions]`: a table of its own, validated apart from [packages]. Without an `index` of its own a
    companion comes from the profile's index, so only names PyTorch's indexes carry builds of are allowed
    (data/companions.toml); with one, any torch-bound package of that file that PyPI does not serve."""

    table = expect(value, dict, "companions", path)
    if not has_index:
        raise ConfigError(path, "`[companions]` needs an `[index]`: companions are locked with the profile's torch")
    known, on_index = companion_table(), index_companions()
    plain: dict[str, Any] = {}
    indexes = []
    for raw_name, entry in table.items():
        name, where = canonical_name(raw_name), f"companions.{raw_name}"
        own = isinstance(entry, dict) and "index" in entry
        allowed = {n for n, c in known.items() if c.wheels != PYPI} if own else on_index
        if name not in allowed:
            what = "a torch-bound package envbuild knows (data/companions.toml) that PyPI does not serve" if own \
                else "a package PyTorch's indexes carry builds of"
            raise ConfigError(path, f"`{where}`: {raw_name!r} is not {what}",
                              hint=f"a profile's [companions] name only {', '.join(sorted(on_index))}, or, with an "
                                   "`index` of their own (a prebuilt-wheel index), "
                                   f"{', '.join(sorted(n for n, c in known.items() if c.wheels != PYPI))}")
        if own:
            check_keys(entry, {"version", "marker", "index", "format"}, f"{where}.", path)
            url = expect(entry["index"], str, f"{where}.index", path).rstrip("/")
            problem = index_url_problem(url)
            if problem:
                raise ConfigError(path, f"`{where}.index`: {problem}")
            layout = expect(entry.get("format", "simple"), str, f"{where}.format", path)
            one_of(layout, ("simple", "flat"), f"{where}.format", path)
            indexes.append(CompanionIndex(name, url, layout))
            entry = {k: v for k, v in entry.items() if k in ("version", "marker")}
        plain[raw_name] = entry
    return pinned_packages(plain, "companions", path, frozenset(known)), tuple(sorted(indexes))


def pypi_companions_table(value: Any, has_pypi: bool, path: Path) -> tuple[PinnedPackage, ...]:
    """`[pypi.companions]`: the -pypi variant's companions, from PyPI. PyPI holds one build per release, made
    for the CUDA of PyPI's torch of the torch it pins (xformers: data/companions.toml), so the version bound is
    what keeps the build true to the variant's CUDA; no index of its own (the variant has only PyPI)."""

    table = expect(value, dict, "pypi.companions", path)
    if not has_pypi:
        raise ConfigError(path, "`[pypi.companions]` needs the [pypi] table's torch: companions are locked with it")
    on_index = index_companions()
    for raw_name, entry in table.items():
        if isinstance(entry, dict) and "index" in entry:
            raise ConfigError(path, f"`pypi.companions.{raw_name}.index`: the -pypi variant takes its companions "
                                    "from PyPI only", hint="a prebuilt-wheel index belongs in the [companions] "
                                                           "table of the profile with an [index]")
        if canonical_name(raw_name) not in on_index:
            raise ConfigError(path, f"`pypi.companions.{raw_name}`: {raw_name!r} is not a package whose PyPI "
                                    "releases are built for the CUDA of PyPI's torch",
                              hint=f"[pypi.companions] names only {', '.join(sorted(on_index))}")
    return pinned_packages(table, "pypi.companions", path, on_index)


def profile_requirements(profile: TorchProfile, project_dir: Path,
                         packages: tuple[PinnedPackage, ...] | None = None) -> list[SourcedRequirement]:
    """The profile's torch family (or the `packages` given) as requirements, each pointing at its line
    in the profile file."""
    from packaging.requirements import Requirement

    from envbuild.pkgs.requirements import Origin, SourcedRequirement

    packages = profile.packages if packages is None else packages
    try:
        text = profile.path.read_text(encoding="utf-8")
    except OSError:
        text = ""
    display = profile_display_path(profile, project_dir)
    result = []
    for package in packages:
        match = re.search(rf"^\s*{re.escape(package.name)}\s*=", text, re.M)
        line = text.count("\n", 0, match.start()) + 1 if match else 0
        req_text = package.requirement_text()
        origin = Origin(path=display, line=line, source=f"profile {profile.name}")
        result.append(SourcedRequirement(Requirement(req_text), origin, req_text))
    return result


def profile_display_path(profile: TorchProfile, project_dir: Path) -> str:
    """Built-in profiles are named by envbuild, not by where it happens to be installed."""
    try:
        return profile.path.resolve().relative_to(project_dir.resolve()).as_posix()
    except ValueError:
        return f"envbuild:profiles/{profile.path.name}"


def check_pypi_platforms(profile: TorchProfile) -> None:
    """A -pypi variant's platforms evaluated in full (planning a lock loads `packaging` anyway): none of them
    may hold where PyPI's torch is not a CUDA build."""
    if profile.base is None:
        return
    from envbuild.torch.profile import parse_marker

    for key, markers in (("environments", profile.environments_as_written),
                         ("required-environments", profile.required_environments_as_written)):
        outside = sorted(name for name, env in _NOT_PYPI_CUDA.items()
                         if any(parse_marker(t, f"pypi.platforms.{key}", profile.path).evaluate(env) for t in markers))
        if outside:
            raise ConfigError(key_line(profile.path, f"pypi.platforms.{key}"),
                              f"`pypi.platforms.{key}` covers {', '.join(outside)}, where PyPI's torch is not a "
                              "CUDA build", hint="a -pypi variant covers Linux x86_64 and aarch64 only (PyPI's "
                                                 "Windows wheel is +cpu; macOS takes the mps profile)")

