"""Mirrors: where download.pytorch.org (or PyPI) cannot be reached, fetch the same bytes elsewhere.

Two ways to use a mirror:
- mode "lock": the generated pyproject names the mirror, so the lock is made through it and
  records its URLs (fine for a team that shares the mirror: set it in envbuild.toml);
- mode "install": locks stay canonical; `sync` installs a rewritten copy of the lock whose
  artifact URLs point at the mirror while every sha256 stays the lock's, so uv refuses any byte
  the mirror serves that the lock did not hash (set it per machine: environment or user file).

Settings come from flags, then the environment, then envbuild.toml, then the per-user file
(platformdirs' user config dir); each remembers where it came from, for `-v` and `doctor`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from envbuild.core.errors import ConfigError
from envbuild.core.tomlfile import check_keys, expect, load_toml
from envbuild.torch.profile import CANONICAL_PYTORCH_BASE, PYPI_SIMPLE
from envbuild.uv import names as uv_names

if TYPE_CHECKING:
    from envbuild.pkgs.uvlock import LockFile

# Since 2026 download.pytorch.org's pages link many files from this second host (docs/mirrors.md).
PYTORCH_FILES_HOSTS = ("https://download-r2.pytorch.org/whl",)
PYPI_FILES = "https://files.pythonhosted.org/packages"
LAYOUTS = ("tree", "flat")
MODES = ("lock", "install")
KEYS = {"pytorch", "pytorch-layout", "pypi", "pypi-files", "mode", "timeout"}
ENV = {
    "pytorch": "ENVBUILD_PYTORCH_MIRROR", "pytorch-layout": "ENVBUILD_PYTORCH_MIRROR_LAYOUT",
    "pypi": "ENVBUILD_PYPI_MIRROR", "pypi-files": "ENVBUILD_PYPI_MIRROR_FILES",
    "mode": "ENVBUILD_MIRROR_MODE", "timeout": "ENVBUILD_MIRROR_TIMEOUT",
}
USER_CONFIG_ENV = "ENVBUILD_USER_CONFIG"  # a file path; tests and containers point it elsewhere
TEAM_SOURCE = "envbuild.toml"


class Mirrors(NamedTuple):
    pytorch: str | None = None  # replaces the canonical PyTorch base (…/whl)
    pytorch_layout: str = "tree"  # "flat": one page of wheel links per variant
    pypi: str | None = None  # a simple-API URL for everything but the torch family
    pypi_files: str | None = None  # where that mirror keeps files (default: <pypi>/../packages)
    mode: str = "install"
    timeout: float | None = None  # seconds, for uv's HTTP requests through the mirror
    origins: Mapping[str, str] = MappingProxyType({})  # key -> "flag", "ENV_VAR", path

    @property
    def any(self) -> bool:
        return bool(self.pytorch or self.pypi)

    @property
    def locks_through(self) -> bool:
        return self.any and self.mode == "lock"

    @property
    def installs_through(self) -> bool:
        return self.any and self.mode == "install"

    def describe(self) -> list[str]:
        lines = []
        for key, value in (("pytorch", self.pytorch), ("pytorch-layout", self.pytorch_layout if self.pytorch else None),
                           ("pypi", self.pypi), ("pypi-files", self.files_root() if self.pypi else None),
                           ("mode", self.mode if self.any else None), ("timeout", self.timeout)):
            if value is not None:
                lines.append(f"mirror {key} = {value} (from {self.origins.get(key, 'default')})")
        return lines

    def files_root(self) -> str | None:
        if self.pypi_files:
            return self.pypi_files.rstrip("/")
        if self.pypi and self.pypi.rstrip("/").endswith("/simple"):
            return self.pypi.rstrip("/")[: -len("/simple")] + "/packages"
        return None


def user_config_path(environ: Mapping[str, str]) -> Path:
    """ENVBUILD_USER_CONFIG, else `config.toml` in platformdirs' user config dir for envbuild."""
    override = environ.get(USER_CONFIG_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_config_dir("envbuild")) / "config.toml"


def resolve_mirrors(team: Mapping[str, Any], team_path: Path | None, environ: Mapping[str, str],
                    flags: Mapping[str, Any] | None = None) -> Mirrors:
    """Per key: flag, then environment, then envbuild.toml's [mirrors], then the per-user file."""
    user_path = user_config_path(environ)
    user = _read_user_file(user_path)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    layers = [("flag", flags or {}), ("env", {k: environ[v] for k, v in ENV.items() if environ.get(v)}),
              (str(team_path or TEAM_SOURCE), team), (str(user_path), user)]
    for key in sorted(KEYS):
        for origin, layer in layers:
            if layer.get(key) not in (None, ""):
                values[key] = layer[key]
                origins[key] = ENV[key] if origin == "env" else origin
                break
    return _build(values, origins, team_path)


def _build(values: dict[str, Any], origins: dict[str, str], team_path: Path | None) -> Mirrors:
    layout = str(values.get("pytorch-layout", "tree"))
    if layout not in LAYOUTS:
        raise ConfigError(origins.get("pytorch-layout"),
                          f"`pytorch-layout`: mirror layout `{layout}` is not one of: tree, flat")
    mode = values.get("mode")
    if mode is None:
        # A mirror the team committed locks through it; one from this machine only installs through it.
        team_origin = str(team_path or TEAM_SOURCE)
        mode = "lock" if team_origin in (origins.get("pytorch"), origins.get("pypi")) else "install"
    if mode not in MODES:
        raise ConfigError(origins.get("mode"), f"`mode`: mirror mode `{mode}` is not one of: lock, install")
    timeout = values.get("timeout")
    try:
        seconds = float(timeout) if timeout is not None else None
    except (TypeError, ValueError):
        seconds = float("nan")
    if seconds is not None and not seconds > 0:  # also refuses NaN
        raise ConfigError(origins.get("timeout"),
                          f"mirror timeout must be a number of seconds above 0, not {timeout!r}")
    _refuse_conflicts(values, origins, str(mode))
    for key in ("pytorch", "pypi", "pypi-files"):
        url = values.get(key)
        if url is not None and not re.match(r"^(https?|file)://", str(url)):
            raise ConfigError(origins.get(key), f"mirror `{key}` must be an http(s) URL, not {url!r}")
    return Mirrors(
        pytorch=_strip(values.get("pytorch")), pytorch_layout=layout, pypi=_strip(values.get("pypi")),
        pypi_files=_strip(values.get("pypi-files")), mode=str(mode), timeout=seconds, origins=origins,
    )


def _refuse_conflicts(values: Mapping[str, Any], origins: Mapping[str, str], mode: str) -> None:
    """Settings that describe a mirror nobody set would be silently ignored; credentials in a URL the lock
    records would be committed."""
    for key, needs in (("pytorch-layout", "pytorch"), ("pypi-files", "pypi")):
        if values.get(key) not in (None, "") and not values.get(needs):
            raise ConfigError(origins.get(key), f"`{key}` is set, but no `{needs}` mirror is: it would be ignored",
                              hint=f"set the `{needs}` mirror URL too, or remove `{key}`")
    for key in ("pytorch", "pypi", "pypi-files"):
        url = str(values.get(key) or "")
        if mode == "lock" and "@" in url.partition("://")[2].split("/", 1)[0]:
            raise ConfigError(origins.get(key), f"mirror `{key}` carries a user name or password, and in mode "
                              "\"lock\" the mirror's URL is written into locks/, which are committed",
                              hint="give the URL without them and the credentials to uv (UV_INDEX_<NAME>_USERNAME/"
                                   "PASSWORD, or a .netrc), or use mode \"install\"")


def _strip(value: Any) -> str | None:
    return str(value).rstrip("/") if value else None


def _read_user_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = load_toml(path)
    check_keys(data, {"mirrors"}, "", path)
    table = expect(data.get("mirrors", {}), dict, "mirrors", path)
    check_keys(table, KEYS, "mirrors.", path)
    return dict(table)


def validate_team_table(table: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """envbuild.toml's [mirrors]: the same keys as the per-user file."""
    check_keys(table, KEYS, "mirrors.", path)
    for key in ("pytorch", "pytorch-layout", "pypi", "pypi-files", "mode"):
        if key in table:
            expect(table[key], str, f"mirrors.{key}", path)
    if "timeout" in table:
        expect(table["timeout"], (int, float), "mirrors.timeout", path)
    return dict(table)


def mirrored_index(url: str, mirrors: Mirrors, base: str) -> str:
    """A profile index URL as the mirror serves it (same path below the canonical `base`)."""
    if mirrors.pytorch and url.startswith(base + "/"):
        return mirrors.pytorch + url[len(base):]
    return url


def uv_environment(mirrors: Mirrors) -> dict[str, str]:
    """What uv's own settings must say for a run through the mirror."""
    env = {}
    if mirrors.timeout is not None:
        env[uv_names.HTTP_TIMEOUT] = f"{mirrors.timeout:g}"
    return env


def rewrite_lock_text(text: str, rules: list[tuple[str, str]]) -> str:
    """Point every URL under a canonical prefix at the mirror; hashes, names and versions stay. The
    longest prefix wins (as in the image's data/image/mirror.py, which must give the same bytes)."""
    ordered = sorted(rules, key=lambda rule: -len(rule[0]))

    def swap(match: re.Match[str]) -> str:
        url = match.group(1)
        for old, new in ordered:
            if url == old or url.startswith(old + "/"):
                return f'"{new}{url[len(old):]}"'
        return match.group(0)

    return re.sub(r'"((?:https?|file)://[^"]+)"', swap, text)


def install_rules(lock: LockFile, mirrors: Mirrors, base: str) -> list[tuple[str, str]]:
    """Canonical prefix → mirror prefix, for the registries this lock actually names (`base`: the
    canonical PyTorch base the lock's URLs start with)."""
    rules: list[tuple[str, str]] = []
    if mirrors.pytorch:
        rules.append((base, mirrors.pytorch))
        if base == CANONICAL_PYTORCH_BASE:
            rules.extend((host, mirrors.pytorch) for host in PYTORCH_FILES_HOSTS)
    if mirrors.pypi:
        for registry in sorted(r for r in lock.registries() if not r.startswith(base + "/") and r != base):
            rules.append((registry.rstrip("/"), mirrors.pypi))
            if registry.rstrip("/") == PYPI_SIMPLE and mirrors.files_root():
                rules.append((PYPI_FILES, str(mirrors.files_root())))
    return sorted(rules, key=lambda rule: -len(rule[0]))  # longest prefix first

