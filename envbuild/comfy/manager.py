"""ComfyUI-Manager's `config.ini`: where this Manager version reads it, and the keys envbuild sets.

Two keys always:

- `use_uv = True`: the Manager installs node requirements with `python -m uv pip` instead of
  `python -m pip` (the seed write-up's `user_uv` is a typo the Manager never reads).
- `use_unified_resolver = False`: with it on (Manager v4.1+), every start re-resolves all nodes'
  requirements with `uv pip compile`, torch unpinned, and installs the result: the locked
  environment would be re-resolved behind envbuild's back at each start.

and the Manager's security settings the deployment declares in `[manager]` of envbuild.toml
(`network_mode`, `security_level`, `allow_git_url_install`, `allow_pip_install`,
`allow_flagged_nodepack_install`; none declared: none written). Manager 4 refuses node installs when
ComfyUI listens on anything but one loopback address unless `network_mode = personal_cloud`
(glob/utils/security_utils.py, Manager issues #2496 and #2761), so a server deployment says so here.

The file is the user's: every other key, comment, blank line and the order stay as they are
(configparser would drop the comments), so the edit is line based, and written atomically.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from envbuild.comfy.inputs import InputFile, read_input
from envbuild.comfy.layout import (
    CLONE_ROUTE,
    MANAGER_PACKAGE,
    MANAGER_SOURCE,
    NO_ROUTE,
    PIP_ROUTE,
    ManagerRoute,
    manager_route,
)
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
    route: ManagerRoute | None = None


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
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PipPin:
    """The line of manager_requirements.txt that names the pip Manager."""

    text: str  # as written: `comfyui_manager==4.2.2`
    where: str  # file:line
    version: str | None  # the `==` version, when pinned


def pip_pin(config: Config, route: ManagerRoute) -> PipPin:
    """Read strictly, as the lock reads it (a bad line is an error naming file:line)."""
    assert route.kind == PIP_ROUTE and route.path is not None
    from packaging.utils import canonicalize_name

    parsed = read_input(InputFile(route.path, MANAGER_SOURCE, lenient=False), config)
    for item in parsed.requirements:
        if canonicalize_name(item.requirement.name) == MANAGER_PACKAGE:
            pinned = [s.version for s in item.requirement.specifier if s.operator in ("==", "===")]
            return PipPin(item.text, f"{item.origin.path}:{item.origin.line}", pinned[0] if pinned else None)
    raise ConfigError(config.display(route.path), "does not ask for comfyui_manager",
                      hint="restore the file, or set [manager] pip = false in envbuild.toml")


def describe_route(config: Config, route: ManagerRoute | None = None) -> str:
    """One line for init, `manager status` and doctor: which Manager this deployment runs, and from where."""
    route = route or manager_route(config)
    if route.kind == PIP_ROUTE:
        pin = pip_pin(config, route)
        return f"pip package {pin.text} from {pin.where} (`envbuild run` passes --enable-manager)"
    if route.kind == CLONE_ROUTE:
        assert route.path is not None
        version = _manager_version(route.path)
        return (f"legacy clone{' ' + version if version else ''} at {config.display(route.path)} "
                "(loaded as a custom node; no --enable-manager)")
    return f"none ({route.why})"


def is_loopback(listen: str | None) -> bool:
    """The Manager's own test (security_utils.is_loopback on args.listen): one IP address that is loopback.
    ComfyUI's default is 127.0.0.1; `localhost`, any host name and any comma list count as remote."""
    if listen is None:
        return True
    try:
        return ipaddress.ip_address(listen).is_loopback
    except ValueError:
        return False


def route_warnings(config: Config, route: ManagerRoute, values: Mapping[str, str] | None = None,
                   version: str | None = None) -> list[str]:
    """What this deployment's Manager will not do as its owner likely expects. `values`: config.ini as read."""
    found: list[str] = []
    if route.kind == PIP_ROUTE:
        found += [f"{config.display(clone)} is a ComfyUI-Manager clone, not used: with --enable-manager ComfyUI "
                  "runs the pip Manager and blocks any custom_nodes entry named *comfyui-manager* by policy "
                  "(\"Blocked by policy\" in its log), so it is not locked; remove it, or set [manager] pip = false "
                  "to keep the legacy clone" for clone in route.blocked]
        mode = config.manager_ini.get("network_mode") or (values or {}).get("network_mode", "")
        if not is_loopback(config.listen) and mode.strip().lower() != "personal_cloud":
            found.append(f"[comfyui] listen = {config.listen!r} is not one loopback address: Manager 4 then refuses "
                         "to install nodes (Manager issues #2496, #2761) unless network_mode = personal_cloud; set "
                         "[manager] network_mode = \"personal_cloud\" in envbuild.toml (and security_level, "
                         "allow_* as you decide), then `envbuild manager setup`")
    flagged = "allow_flagged_nodepack_install"
    parsed = _parse_version(version)
    if flagged in config.manager_ini and parsed is not None and parsed < Version("4.3"):
        found.append(f"[manager] {flagged} is read by ComfyUI-Manager 4.3 and later; {version} ignores it")
    return found


def locate(config: Config, user_directory: Path | None = None) -> ManagerLayout:
    """The Manager's folder (or, pip route, ComfyUI's manager_requirements.txt) and the config.ini its code reads."""
    if not config.manager_enabled:
        raise ConfigError(config.source, "ComfyUI-Manager is disabled ([manager] enabled = false)")
    route = manager_route(config)
    if route.kind == NO_ROUTE or route.path is None:
        dirs = ", ".join(str(d) for d in config.custom_node_dirs()) or "(no custom_nodes folder configured)"
        raise ConfigError(config.source, f"ComfyUI-Manager not found (no manager_requirements.txt in the ComfyUI "
                                         f"checkout, no comfyui-manager in {dirs})",
                          hint="use a ComfyUI of v0.4.0 or later (its manager_requirements.txt brings the Manager), "
                               "or set [manager] path in envbuild.toml, or clone the legacy one into custom_nodes "
                               "([manager] git/ref and `envbuild fetch`)")
    if route.kind == PIP_ROUTE:
        version = pip_pin(config, route).version
        # Always <user>/__manager: its prestartup asks core's get_system_user_directory("manager") with no
        # fallback and moves no older file (4.2.2 common/context.py), and a ComfyUI with manager_requirements.txt
        # (v0.3.78+) has that API (v0.3.76+).
        reason = f"{config.display(route.path)}: the pip Manager v4 (comfyui_manager/common/context.py)"
        path = user_dir(config, user_directory) / "__manager" / "config.ini"
        return ManagerLayout(route.path, version, SYSTEM_USER, path, reason, route=route)
    return dataclasses.replace(_clone_layout(config, route.path, user_directory), route=route)


def _clone_layout(config: Config, manager: Path, user_directory: Path | None) -> ManagerLayout:
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


def wanted(config: Config) -> dict[str, str]:
    """What config.ini must say: envbuild's two keys, then the security settings the deployment declares."""
    return {**WANTED, **config.manager_ini}


def created_text(config: Config) -> str:
    """A config.ini where there is none (`manager setup`, and the image's first start on an empty volume)."""
    return f"[{SECTION}]\n" + "".join(f"{k} = {v}\n" for k, v in {**wanted(config), **CREATED_DEFAULTS}.items())


def setup(config: Config, user_directory: Path | None = None) -> SetupResult:
    """Set the keys of `wanted`; idempotent: a file that already says so is not rewritten."""
    layout = locate(config, user_directory)
    keys = wanted(config)
    path = layout.config_path
    if not path.exists():
        atomic_write(path, created_text(config))
        changes: tuple[Change, ...] = tuple(Change(k, None, v) for k, v in keys.items())
        return SetupResult(layout, changes, True, tuple(_warnings(config, layout, keys)))
    text = _read(path)
    new_text, found = edit_ini(text, keys)
    if found:
        atomic_write(path, new_text.encode("utf-8"))
    return SetupResult(layout, tuple(found), False, tuple(_warnings(config, layout, current_values(layout))))


def _warnings(config: Config, layout: ManagerLayout, values: Mapping[str, str] | None) -> list[str]:
    route = layout.route
    return route_warnings(config, route, values, layout.version) if route is not None else []


def current_values(layout: ManagerLayout) -> dict[str, str] | None:
    """The `[default]` keys as the Manager reads them (later duplicates win); None: no file yet."""
    if not layout.config_path.exists():
        return None
    return {entry.key: entry.value for entry in _parse(_read(layout.config_path)) if entry.section == SECTION}


def needs_setup(layout: ManagerLayout, config: Config) -> list[str]:
    values = current_values(layout) or {}
    return [key for key, want in wanted(config).items() if not _reads_as(values.get(key), want)]


CONFIG_SIZE_LIMIT = 1024 * 1024  # a config.ini is a few hundred bytes


def _read(path: Path) -> str:
    """config.ini as text, read bounded: a FIFO there hung `manager status`, a device ended in exit 70."""
    from envbuild.core.safeio import FileTooLargeError, NotARegularFileError, read_regular_file

    try:
        return read_regular_file(path, CONFIG_SIZE_LIMIT).decode("utf-8-sig")  # a BOM hides `[default]`
    except UnicodeDecodeError:
        raise ConfigError(path, "is not a UTF-8 text file") from None
    except (NotARegularFileError, FileTooLargeError) as exc:
        raise ConfigError(path, f"cannot be the Manager's config.ini: {exc}",
                          hint="move it away; `envbuild manager setup` writes a new one") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot be read: {exc.strerror or exc}") from None


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
    """A flag is true when `value.lower() == 'true'` (the Manager's get_bool); network_mode and security_level
    are compared lower-cased, as its checks do. Not set never counts: every wanted key is written."""
    if value is None:
        return False
    if want in ("True", "False"):
        return (value.lower() == "true") == (want == "True")
    return value.strip().lower() == want.lower()


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
