"""Writing a node's pin into envbuild.toml (tomlkit: every comment and key the user wrote is kept)."""

from __future__ import annotations

from pathlib import Path

from envbuild.fsio import atomic_write
from envbuild.pins import SECTION, NodePin


def write_pin(path: Path, name: str, pin: NodePin | None) -> list[str]:
    """Set (or with None, remove) `[custom-nodes.<name>]`; one line per change, to be said."""
    import tomlkit

    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    if SECTION not in document:
        nodes = tomlkit.table(is_super_table=True)
        document[SECTION] = nodes
    nodes = document[SECTION]
    for key in list(nodes.keys()):  # names compare ignoring case, as folders do on some systems
        if key.lower() == name.lower():
            del nodes[key]
    if pin is None:
        if not nodes:
            del document[SECTION]
        atomic_write(path, tomlkit.dumps(document))
        return [f"{path.name}: [{SECTION}.{name}] removed"]
    table = tomlkit.table()
    table["git"] = pin.url
    table["commit"] = pin.commit
    table["ref"] = pin.ref
    if pin.disabled:
        table["disabled"] = True
    nodes[pin.name] = table
    atomic_write(path, tomlkit.dumps(document))
    return [f"{path.name}: [{SECTION}.{pin.name}] git = {pin.url}, commit = {pin.commit[:12]} ({pin.ref})"]
