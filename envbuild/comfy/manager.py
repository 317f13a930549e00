"""ComfyUI-Manager's `config.ini`: where this Manager version reads it, and the two keys envbuild sets.

- `use_uv = True`: the Manager installs node requirements with `python -m uv pip` instead of
  `python -m pip` (the seed write-up's `user_uv` is a typo the Manager never reads).
- `use_unified_resolver = False`: with it on (Manager v4.1+), every start re-resolves all nodes'
  requirements with `uv pip compile`, torch unpinned, and installs the result: the locked
  environment would be re-resolved behind envbuild's back at each start.

The file is the user's: every other key, comment, blank line and the order stay as they are
(configparser would drop the comments), so the edit is line based, and written atomically.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from envbuild.comfy.inputs import find_manager
from envbuild.core.errors import ConfigError
from envbuild.core.fsio import atomic_write
from envbuild.core.tomlfile import load_toml
from envbuild.settings.config import Config

SECTION = "default"
WANTED: Mapping[str, str] = {"use_uv": "True", "use_unified_resolver": "False"}
# A config.ini without a key reads as False (the Manager's get_bool ignores its default): a file
# envbuild creates also states the one default that is True, so nothing else changes behaviour.
CREATED_DEFAULTS: Mapping[str, str] = {"file_logging": "True"}

LEGACY, USER_DEFAULT, SYSTEM_USER = "manager-folder", "user/default", "user/__manager"


@dataclass(frozen=True)
class ManagerLayout:
    manager: Path
    version: str | None  # from its pyproject.toml
    kind: str  # LEGACY | USER_DEFAULT | SYSTEM_USER
    config_path: Path
    reason: str  # what in the Manager's (and core's) files decided the path
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    key: str
    old: str | None  # as the Manager reads it now; None: not set
    new: str


@dataclass(frozen=True)
class SetupResult:
    layout: ManagerLayout
    changes: tuple[Change, ...]  # empty: the file already said so (nothing written)
    created: bool


def locate(config: Config, user_directory: Path | None = None) -> ManagerLayout:
    """The Manager's folder and the config.ini its own code will read."""
    if not config.manager_enabled:
        raise ConfigError(config.source, "ComfyUI-Manager is disabled ([manager] enabled = false)")
    manager = find_manager(config)
    if manager is None:
        dirs = ", ".join(str(d) for d in config.custom_node_dirs()) or "(no custom_nodes folder configured)"
        raise ConfigError(config.source, f"ComfyUI-Manager not found (looked for comfyui-manager in {dirs})",
                          hint="set [manager] path in envbuild.toml, or clone it into custom_nodes "
                               "([manager] git/ref and `envbuild fetch`)")
    version = _manager_version(manager)
    kind, reason = _layout_kind(manager, version)
    if kind == LEGACY:
        return ManagerLayout(manager, version, kind, manager / "config.ini", reason)
    user = user_dir(config, user_directory)
    if kind == USER_DEFAULT:
        return ManagerLayout(manager, version, kind, user / "default" / "ComfyUI-Manager" / "config.ini", reason)
    return _system_user_layout(config, manager, version, reason, user)


def user_dir(config: Config, override: Path | None) -> Path:
    """ComfyUI's user directory as `envbuild run` starts it: --user-directory, else under --base-directory."""
    if override is not None:
        return override
    if config.base_directory is not None:
        return config.base_directory / "user"
    if config.comfyui is not None:
        return config.comfyui / "user"
    raise ConfigError(config.source, "cannot tell ComfyUI's user directory",
                      hint="set [comfyui] path or base-directory, or pass --user-directory")


def _layout_kind(manager: Path, version: str | None) -> tuple[str, str]:
    """Decided by the code the Manager will run; its version only when that code is not there."""
    if (manager / "comfyui_manager" / "common" / "context.py").is_file():
        return SYSTEM_USER, "comfyui_manager/common/context.py (Manager v4)"
    if (manager / "glob" / "manager_migration.py").is_file():
        return SYSTEM_USER, "glob/manager_migration.py (Manager v3.38+)"
    core = manager / "glob" / "manager_core.py"
    if core.is_file():
        if "def update_user_directory" in core.read_text(encoding="utf-8", errors="replace"):
            return USER_DEFAULT, "glob/manager_core.py has update_user_directory (Manager v3.1-3.37)"
        return LEGACY, "glob/manager_core.py predates --user-directory support (Manager before v3.1)"
    parsed = _parse_version(version)
    if parsed is None:
        raise ConfigError(manager, "cannot tell this ComfyUI-Manager's version (no glob/manager_core.py, "
                          "comfyui_manager/ or [project] version in pyproject.toml)",
                          hint="check [manager] path: it should be a ComfyUI-Manager checkout")
    if parsed >= Version("3.38"):
        return SYSTEM_USER, f"version {version} in pyproject.toml (3.38+)"
    if parsed >= Version("3.1"):
        return USER_DEFAULT, f"version {version} in pyproject.toml (3.1-3.37)"
    return LEGACY, f"version {version} in pyproject.toml (before 3.1)"


def _system_user_layout(config: Config, manager: Path, version: str | None, reason: str,
                        user: Path) -> ManagerLayout:
    """New Managers use `<user>/__manager` only when ComfyUI has the system-user API (core PR #10966)."""
    legacy = user / "default" / "ComfyUI-Manager" / "config.ini"
    if not _core_has_system_user_api(config):
        warning = ("this ComfyUI has no folder_paths.get_system_user_directory: a Manager of this version then "
                   "forces security_level = strong, which blocks node installs; update ComfyUI as well")
        return ManagerLayout(manager, version, USER_DEFAULT, legacy,
                             f"{reason}, with a ComfyUI that lacks the system-user API", (warning,))
    new = user / "__manager" / "config.ini"
    if not new.exists() and legacy.is_file():
        # At its next start the Manager moves the old file to __manager itself, keys included.
        return ManagerLayout(manager, version, SYSTEM_USER, legacy,
                             f"{reason}; the Manager migrates this older config.ini to {new} at its next start")
    return ManagerLayout(manager, version, SYSTEM_USER, new, f"{reason}, with a ComfyUI that has the system-user API")


def _core_has_system_user_api(config: Config) -> bool:
    if config.comfyui is None:
        return True  # no checkout to look at: assume a current ComfyUI, as the Manager's own docs ask
    try:
        text = (config.comfyui / "folder_paths.py").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "def get_system_user_directory" in text


def _manager_version(manager: Path) -> str | None:
    path = manager / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        version = load_toml(path).get("project", {}).get("version")
    except ConfigError:
        return None
    return version if isinstance(version, str) else None


def _parse_version(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


def setup(config: Config, user_directory: Path | None = None) -> SetupResult:
    """Set the keys in WANTED; idempotent: a file that already says so is not rewritten."""
    layout = locate(config, user_directory)
    path = layout.config_path
    if not path.exists():
        text = f"[{SECTION}]\n" + "".join(f"{k} = {v}\n" for k, v in {**WANTED, **CREATED_DEFAULTS}.items())
        atomic_write(path, text)
        return SetupResult(layout, tuple(Change(k, None, v) for k, v in WANTED.items()), created=True)
    text = _read(path)
    new_text, changes = edit_ini(text, WANTED)
    if changes:
        atomic_write(path, new_text.encode("utf-8"))
    return SetupResult(layout, tuple(changes), created=False)


def current_values(layout: ManagerLayout) -> dict[str, str] | None:
    """The `[default]` keys as the Manager reads them (later duplicates win); None: no file yet."""
    if not layout.config_path.exists():
        return None
    return {entry.key: entry.value for entry in _parse(_read(layout.config_path)) if entry.section == SECTION}


def needs_setup(layout: ManagerLayout) -> list[str]:
    values = current_values(layout) or {}
    return [key for key, want in WANTED.items() if not _reads_as(values.get(key), want)]


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")  # a BOM would hide `[default]` from configparser
    except UnicodeDecodeError:
        raise ConfigError(path, "is not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot be read: {exc.strerror}") from None


# --- the line-based INI edit ---------------------------------------------------------------

_SECTION_RE = re.compile(r"\[(?P<name>.+)\]")  # configparser's SECTCRE, on the stripped line
_OPTION_RE = re.compile(r"(?P<key>.*?)\s*(?P<delim>[=:])\s*(?P<value>.*)$")
_PREFIX_RE = re.compile(r"\s*[^=:]*?\s*[=:][ \t]*")  # `  use_uv = ` of a line, kept when its value changes


@dataclass(frozen=True)
class _Entry:
    section: str
    key: str  # lower-cased, as configparser's optionxform does
    value: str
    first: int  # line index of `key = value`
    last: int  # last line index of its continuation lines


def _parse(text: str) -> list[_Entry]:
    """Options as configparser sees them: `#`/`;` full-line comments, indented continuation lines."""
    entries: list[_Entry] = []
    section: str | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith(("#", ";")):
            i += 1
            continue
        header = _SECTION_RE.match(stripped)
        option = _OPTION_RE.match(stripped)
        if header:
            section = header.group("name")
        elif option and section is not None:
            indent = len(lines[i]) - len(lines[i].lstrip())
            last = i
            while last + 1 < len(lines) and lines[last + 1].strip() and \
                    len(lines[last + 1]) - len(lines[last + 1].lstrip()) > indent:
                last += 1
            value = "\n".join([option.group("value").strip(), *(x.strip() for x in lines[i + 1:last + 1])])
            entries.append(_Entry(section, option.group("key").strip().lower(), value, i, last))
            i = last
        i += 1
    return entries


def _reads_as(value: str | None, want: str) -> bool:
    """The Manager's test is `value.lower() == 'true'`. Not set never counts: both keys are written."""
    if value is None:
        return False
    return (value.lower() == "true") == (want.lower() == "true")


def edit_ini(text: str, wanted: Mapping[str, str]) -> tuple[str, list[Change]]:
    """Set `wanted` in `[default]`, touching only the lines of those keys (or adding them).

    A key the Manager already reads as wanted is left alone; one it reads otherwise has every
    occurrence rewritten (keeping the line's own spelling and spacing), or is added after the
    section's last option.
    """
    newline = "\r\n" if text.count("\r\n") > text.count("\n") / 2 else "\n"
    lines = text.splitlines()
    entries = [e for e in _parse(text) if e.section == SECTION]
    changes: list[Change] = []
    replace: dict[int, tuple[int, str]] = {}  # first line -> (last line, its new text)
    additions: list[str] = []
    for key, want in wanted.items():
        found = [e for e in entries if e.key == key]
        effective = found[-1].value if found else None
        if _reads_as(effective, want):
            continue
        changes.append(Change(key, effective, want))
        for entry in found:
            prefix = _PREFIX_RE.match(lines[entry.first])
            replace[entry.first] = (entry.last, (prefix.group(0) if prefix else f"{key} = ") + want)
        if not found:
            additions.append(f"{key} = {want}")
    if not changes:
        return text, changes
    return newline.join(_apply(lines, replace, additions, entries)) + newline, changes


def _apply(lines: list[str], replace: Mapping[int, tuple[int, str]], additions: list[str],
           entries: list[_Entry]) -> list[str]:
    out: list[str] = []
    anchor = max((e.last for e in entries), default=_last_header(lines))  # additions go after this line
    i = 0
    while i < len(lines):
        last, new = replace.get(i, (i, lines[i]))
        out.append(new)
        if anchor is not None and i <= anchor <= last:
            out.extend(additions)
        i = last + 1
    if anchor is None and additions:
        if out and out[-1].strip():
            out.append("")
        out.extend([f"[{SECTION}]", *additions])
    return out


def _last_header(lines: list[str]) -> int | None:
    """The line of the last `[default]` header (a section with no options yet)."""
    found = None
    for i, line in enumerate(lines):
        header = _SECTION_RE.match(line.strip())
        if header and header.group("name") == SECTION:
            found = i
    return found


def lock_gaps(config: Config) -> list[str]:
    """Committed locks that lack what the Manager runs (`python -m pip`, `python -m uv`)."""
    from envbuild.pkgs.uvlock import read_uv_lock

    gaps = []
    for lock in sorted(config.lock_dir.glob("*/uv.lock")) if config.lock_dir.is_dir() else []:
        names = {p.name for p in read_uv_lock(lock).packages}
        missing = [name for name in ("pip", "uv") if name not in names]
        if missing:
            gaps.append(f"{config.display(lock.parent)} has no {' and no '.join(missing)}: "
                        f"re-lock with `envbuild lock --profile {lock.parent.name}`")
    return gaps
