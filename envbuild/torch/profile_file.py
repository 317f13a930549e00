"""Reading one profile file (`profiles/<name>.toml`) into a `TorchProfile`, refusing what a lock must not take.

A profile routes packages to an index that is written into committed locks, so reading one is
where a bad file stops: unknown keys, a schema from another envbuild, a name that is not the file's,
an index URL with credentials, a package outside the torch family pinned to the PyTorch index.
Kept apart from the model (`profiles`): most code takes a profile as a value and never reads a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from envbuild.core.errors import ConfigError
from envbuild.core.tomlfile import check_keys, expect, expect_str_list, load_toml
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
             "local-version", "index", "packages", "platforms", "pypi", "companions"}


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
    pypi_companions = _pypi_companions(pypi.pop("companions", None), bool(pypi), path)
    if "torch" not in {p.name for p in packages}:
        raise ConfigError(path, "`[packages]` must include torch")
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
        pypi_packages=pinned_packages(pypi, "pypi", path),
        companions=companions,
        companion_indexes=companion_indexes,
        pypi_companions=pypi_companions,
    )


def _companions(value: Any, has_index: bool,
                path: Path) -> tuple[tuple[PinnedPackage, ...], tuple[CompanionIndex, ...]]:
    """Most profiles have none: a no-op lock (which loads the profile) then never imports companions."""
    if value is None:
        return (), ()
    from envbuild.torch.companions import companions_table

    return companions_table(value, has_index, path)


def _pypi_companions(value: Any, has_pypi: bool, path: Path) -> tuple[PinnedPackage, ...]:
    if value is None:
        return ()
    from envbuild.torch.companions import pypi_companions_table

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
