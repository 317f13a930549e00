"""ComfyUI-Manager snapshots, both ways: read one into pins, write the pins as one.

The Manager's snapshot (`get_current_snapshot`; saved as .json, or as .yaml under a top-level
`custom_nodes` key) holds the ComfyUI commit, `git_custom_nodes` {url: {hash, disabled}},
`cnr_custom_nodes` {registry id: version}, `file_custom_nodes` [{filename, disabled}] and `pips`
(what `pip freeze` said). envbuild takes the commits; the pips are reported, never installed from
(the lock decides, with hashes); registry nodes (`cnr_custom_nodes`) become registry pins (id and
version; `fetch` records their archive's sha256).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from envbuild.core.errors import ConfigError
from envbuild.core.text import quoted
from envbuild.settings.gitref import CREDENTIALS_HINT, git_url_problem
from envbuild.settings.pins import FULL_SHA, NodePin, valid_name

SNAPSHOT_SIZE_LIMIT = 16 * 1024 * 1024


class Snapshot(NamedTuple):
    comfyui: str | None
    pins: tuple[NodePin, ...]  # from git_custom_nodes (the Manager itself left out)
    registry: Mapping[str, str]  # cnr_custom_nodes: id -> version
    files: tuple[str, ...]  # file_custom_nodes: single .py files
    pips: tuple[str, ...]
    skipped: tuple[str, ...]  # entries not taken, said why


class SnapshotError(ConfigError):
    """A snapshot file envbuild cannot read as the Manager writes it."""


def read_snapshot(path: Path) -> Snapshot:
    from envbuild.core.safeio import FileTooLargeError, NotARegularFileError, read_regular_file

    try:
        text = read_regular_file(path, SNAPSHOT_SIZE_LIMIT).decode("utf-8-sig")
    except FileNotFoundError:
        raise SnapshotError(path, "does not exist") from None
    except (OSError, UnicodeDecodeError, NotARegularFileError, FileTooLargeError) as exc:
        raise SnapshotError(path, f"cannot be read as a snapshot: {getattr(exc, 'reason', None) or exc}") from None
    data = _parse(text, path)
    if path.suffix.lower() in (".yaml", ".yml") or (isinstance(data, dict) and set(data) == {"custom_nodes"}):
        data = data.get("custom_nodes") if isinstance(data, dict) else None
    if not isinstance(data, dict) or "git_custom_nodes" not in data:
        raise SnapshotError(path, "is not a ComfyUI-Manager snapshot (no `git_custom_nodes`)",
                            hint="save one with the Manager's Snapshot Manager, or `cm-cli save-snapshot`")
    return _snapshot(data, path)


_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")  # a registry version: 1.2.3, 1.0.0-beta.2


def _snapshot(data: Mapping[str, Any], path: Path) -> Snapshot:
    comfyui = data.get("comfyui")
    if comfyui is not None and not (isinstance(comfyui, str) and FULL_SHA.fullmatch(comfyui)):
        raise SnapshotError(path, f"`comfyui` is not a commit: {comfyui!r}")
    pins: list[NodePin] = []
    skipped: list[str] = []
    git_nodes = data.get("git_custom_nodes") or {}
    if not isinstance(git_nodes, dict):
        raise SnapshotError(path, "`git_custom_nodes` must be a mapping of URL to {hash, disabled}")
    for url, entry in git_nodes.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str):
            raise SnapshotError(path, f"`git_custom_nodes.{quoted(url)}` has no `hash`")
        commit = entry["hash"]
        name = node_name(url)
        problem = git_url_problem(url)
        if problem and "credentials" in problem:  # would be committed with the pin: refused, not skipped
            raise SnapshotError(path, f"the URL of node {quoted(name)} {problem}", hint=CREDENTIALS_HINT)
        if problem:
            skipped.append(f"{quoted(url)} (the URL {problem})")
        elif "comfyui-manager" in url.lower():
            skipped.append(f"{url} (the Manager: pinned by [manager] git/ref, not as a node)")
        elif not FULL_SHA.fullmatch(commit):
            skipped.append(f"{url} (hash {commit!r} is not a full commit)")
        elif not valid_name(name):
            skipped.append(f"{url} (no usable folder name)")
        else:
            pins.append(NodePin(name, url, commit, commit, bool(entry.get("disabled", False))))
    registry_raw = data.get("cnr_custom_nodes") or {}
    if not isinstance(registry_raw, dict):
        raise SnapshotError(path, "`cnr_custom_nodes` must be a mapping of registry id to version")
    registry = {}
    for node_id, version in registry_raw.items():
        if isinstance(version, str) and _VERSION.fullmatch(version) and version not in ("latest", "nightly"):
            registry[node_id] = version
        else:  # envbuild.toml would hold a pin every command then refuses
            skipped.append(f"registry node {quoted(str(node_id))} (version {quoted(str(version))} is not one "
                           "published version)")
    files = tuple(str(item.get("filename")) for item in data.get("file_custom_nodes") or []
                  if isinstance(item, dict) and item.get("filename"))
    pips = data.get("pips") or {}
    # Sorted: the .yaml the Manager writes sorts keys, its .json does not; the same snapshot reads alike.
    return Snapshot(comfyui, tuple(sorted(pins)), {str(k): v for k, v in sorted(registry.items())},
                    tuple(sorted(files)), tuple(sorted(str(p) for p in (pips if isinstance(pips, (dict, list))
                                                                       else []))), tuple(sorted(skipped)))


def node_name(url: str) -> str:
    """The folder the Manager clones a URL into: the repository's name."""
    tail = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail.removesuffix(".git")


def registry_pins(snapshot: Snapshot) -> list[NodePin]:
    """`cnr_custom_nodes` as registry pins (no sha256 yet: the first `fetch` records it)."""
    return [NodePin(node_id, "", "", version, False, version) for node_id, version in snapshot.registry.items()
            if valid_name(node_id) and "comfyui-manager" not in node_id.lower()]


def snapshot_of(comfyui_commit: str | None, pins: tuple[NodePin, ...]) -> dict[str, Any]:
    """The pins as the Manager's `restore_snapshot` reads them. `pips` stays empty on purpose: the lock
    installs the packages (with hashes); a list here would have the Manager pip-install them unhashed."""
    return {
        "comfyui": comfyui_commit,
        "git_custom_nodes": {pin.url: {"hash": pin.commit, "disabled": pin.disabled} for pin in pins
                             if not pin.from_registry},
        "cnr_custom_nodes": {pin.name: pin.version for pin in pins if pin.from_registry and not pin.disabled},
        "file_custom_nodes": [],
        "pips": {},
    }


def snapshot_text(snapshot: Mapping[str, Any], path: Path) -> str:
    """.json as the Manager writes it; .yaml as `{custom_nodes: ...}` in YAML's flow style (JSON is YAML),
    which the Manager's `yaml.SafeLoader` reads."""
    if path.suffix.lower() in (".yaml", ".yml"):
        return json.dumps({"custom_nodes": snapshot}, indent=2) + "\n"
    return json.dumps(snapshot, indent=4) + "\n"


# -- the YAML the Manager writes (`yaml.dump`, block style), without a YAML dependency -----------------

_KEY = re.compile(r"^(?P<key>'(?:[^']|'')*'|\"(?:[^\"\\]|\\.)*\"|[^'\"?\-].*?):(?:\s+(?P<value>.*))?$")


def _parse(text: str, path: Path) -> Any:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise SnapshotError(path, f"is not valid JSON: {exc}") from None
        except RecursionError:  # a snapshot is three levels deep; thousands of nested brackets are not one
            raise SnapshotError(path, "is nested too deeply to be a snapshot") from None
    lines = [(len(line) - len(line.lstrip(" ")), line.strip()) for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#") and line.strip() != "---"]
    try:
        value, end = _block(lines, 0, 0)
    except RecursionError:
        raise SnapshotError(path, "is nested too deeply to be a snapshot") from None
    except (ValueError, IndexError) as exc:
        raise SnapshotError(path, f"is not a snapshot as the Manager writes it: {exc}") from None
    if end != len(lines):
        raise SnapshotError(path, f"is not a snapshot as the Manager writes it: unexpected `{lines[end][1]}`")
    return value


def _block(lines: list[tuple[int, str]], start: int, indent: int) -> tuple[Any, int]:
    if start >= len(lines) or lines[start][0] < indent:
        return None, start
    indent = lines[start][0]
    if lines[start][1].startswith("- ") or lines[start][1] == "-":
        return _sequence(lines, start, indent)
    return _mapping(lines, start, indent)


def _sequence(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    while i < len(lines) and lines[i][0] == indent and (lines[i][1].startswith("- ") or lines[i][1] == "-"):
        rest = lines[i][1][1:].strip()
        if not rest:
            value, i = _block(lines, i + 1, indent + 1)
        elif _KEY.match(rest):  # "- key: value" opens a mapping indented past the dash
            lines[i] = (indent + 2, rest)
            value, i = _mapping(lines, i, indent + 2)
        else:
            value, i = _scalar(rest), i + 1
        items.append(value)
    return items, i


def _mapping(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[dict[str, Any], int]:
    table: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
        line = lines[i][1]
        if line.startswith("? ") and i + 1 < len(lines) and lines[i + 1][1].startswith(":"):
            # a key longer than 128 characters: `? key` then `: value`
            table[str(_scalar(line[2:].strip()))] = _scalar(lines[i + 1][1][1:].strip())
            i += 2
            continue
        match = _KEY.match(line)
        if match is None:
            raise ValueError(f"expected `key: value`, found `{lines[i][1]}`")
        key = str(_scalar(match.group("key").strip()))
        raw = match.group("value")
        if raw:
            table[key], i = _scalar(raw), i + 1
            while i < len(lines) and lines[i][0] > indent:  # a long string folded onto the next lines
                table[key], i = f"{table[key]} {_scalar(lines[i][1])}", i + 1
        elif i + 1 < len(lines) and lines[i + 1][0] == indent and lines[i + 1][1].startswith("- "):
            table[key], i = _sequence(lines, i + 1, indent)  # yaml.dump puts a list at its key's indent
        else:
            table[key], i = _block(lines, i + 1, indent + 1)
    return table, i


def _scalar(text: str) -> Any:
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1].replace("''", "'")
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return json.loads(text)
    if text in ("null", "~", "Null", "NULL"):
        return None
    if text in ("true", "True", "false", "False"):
        return text.lower() == "true"
    if text == "{}":
        return {}
    if text == "[]":
        return []
    return text
