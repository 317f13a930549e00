"""Writing a node's pin into envbuild.toml (tomlkit: every comment and key the user wrote is kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envbuild.core.fsio import atomic_write
from envbuild.settings.pins import SECTION, SETTINGS_KEYS, NodePin


def write_pin(path: Path, name: str, pin: NodePin | None) -> list[str]:
    """Set (or with None, remove) `[custom-nodes.<name>]`; one line per change, to be said."""
    import tomlkit

    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    if SECTION not in document:
        nodes = tomlkit.table(is_super_table=True)
        document[SECTION] = nodes
    nodes = document[SECTION]
    kept = _settings(nodes, name)
    existing = next((key for key in nodes.keys() if key.lower() == name.lower()), None)
    if pin is not None and existing is not None and hasattr(nodes[existing], "items"):
        # Edited where it stands: the table keeps its place in the file, its comments and its other keys.
        _update_in_place(nodes[existing], pin_table(pin, kept))
        atomic_write(path, tomlkit.dumps(document))
        return _said(path, pin)
    for key in list(nodes.keys()):  # names compare ignoring case, as folders do on some systems
        if key.lower() == name.lower():
            del nodes[key]
    if pin is None:
        if not nodes:
            del document[SECTION]
        atomic_write(path, tomlkit.dumps(document))
        return [f"{path.name}: [{SECTION}.{name}] removed"]
    nodes[pin.name] = pin_table(pin, kept)
    atomic_write(path, tomlkit.dumps(document))
    return _said(path, pin)


def _update_in_place(table: Any, wanted: Any) -> None:
    """Set the pin's keys to `wanted`'s values, drop the pin keys it no longer has (a git pin become a
    registry one, `disabled` cleared); every other line of the table stays."""
    from envbuild.settings.pins import PIN_KEYS, REGISTRY_KEYS

    for key in [k for k in table.keys() if k in PIN_KEYS | REGISTRY_KEYS and k not in wanted]:
        del table[key]
    for key, value in wanted.items():
        if table.get(key) != value:
            table[key] = value


def _said(path: Path, pin: NodePin) -> list[str]:
    if pin.from_registry:
        return [f"{path.name}: [{SECTION}.{pin.name}] version = {pin.version}"
                + (f", sha256 = {pin.sha256[:12]}…" if pin.sha256 else "")]
    return [f"{path.name}: [{SECTION}.{pin.name}] git = {pin.url}, commit = {pin.commit[:12]} ({pin.ref})"]


def _settings(nodes: Any, name: str) -> dict[str, Any]:
    """The keys of a node's table that are not its pin (`requirements`): kept when the pin is rewritten."""
    for key in list(nodes.keys()):
        if key.lower() == name.lower() and hasattr(nodes[key], "items"):
            return {k: v for k, v in nodes[key].items() if k in SETTINGS_KEYS}
    return {}


def pin_table(pin: NodePin, settings: dict[str, Any] | None = None) -> Any:
    import tomlkit

    table = tomlkit.table()
    if pin.from_registry:
        table["version"] = pin.version
        if pin.sha256:
            table["sha256"] = pin.sha256
    else:
        table["git"] = pin.url
        table["commit"] = pin.commit
        table["ref"] = pin.ref
    if pin.disabled:
        table["disabled"] = True
    for key, value in (settings or {}).items():
        table[key] = value
    return table


def write_import(path: Path, pins: list[NodePin], comfyui_ref: str | None) -> list[str]:
    """Many pins (and `[comfyui] ref`) in one write: an imported snapshot lands whole or not at all."""
    import tomlkit

    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    said = []
    if comfyui_ref is not None:
        document["comfyui"]["ref"] = comfyui_ref
        said.append(f"{path.name}: [comfyui] ref = {comfyui_ref[:12]}")
    if pins and SECTION not in document:
        document[SECTION] = tomlkit.table(is_super_table=True)
    for pin in pins:
        nodes = document[SECTION]
        kept = _settings(nodes, pin.name)
        for key in list(nodes.keys()):
            if key.lower() == pin.name.lower():
                del nodes[key]
        nodes[pin.name] = pin_table(pin, kept)
        said.append(f"{path.name}: [{SECTION}.{pin.name}] "
                    + (f"version = {pin.version}" if pin.from_registry else f"commit = {pin.commit[:12]}"))
    if said:
        atomic_write(path, tomlkit.dumps(document))
    return said
