"""uv could not lock: name the inputs (file:line, and the node) that ask for the packages uv's message names.

uv names the generated project ("your project depends on taichi", "`image-reward` (v1.0) was included
because `comfyui-env-cu132-pypi` (v0.0.0) depends on `image-reward`"), which nobody wrote: a user with 28
nodes needs the node and the line, and the way around it (found with the real-node corpus,
tests/data/real_nodes: LayerStyle's image-reward, Frame-Interpolation's taichi).
"""

from __future__ import annotations

import re

from envbuild.core.errors import UvError
from envbuild.pkgs.merging import MergeResult
from envbuild.pkgs.requirements import NODE_SOURCE_PREFIX, exclude_node_hint

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
# uv 0.13.9's words (measured); uv wraps long lines, so any whitespace may separate them.
_BUILD = re.compile(rf"Failed\s+to\s+build\s+`({_NAME})")
_INCLUDED = re.compile(rf"`({_NAME})`\s+\(v[^)]*\)\s+was\s+included\s+because\s+`[^`]+`\s+\(v[^)]*\)\s+depends\s+on")
_DEPENDS = re.compile(r"your\s+project\s+depends\s+on\s+(.+?),?\s+we\s+can\s+conclude", re.S)
_LISTED = re.compile(rf"^\s*({_NAME})")
_SHOWN = 8  # askers listed in the hint; a package every input asks for says nothing about which to fix


def named_packages(uv_message: str) -> frozenset[str]:
    """The packages uv's message says the project itself depends on (canonical names)."""
    from packaging.utils import canonicalize_name

    names = {m.group(1) for pattern in (_BUILD, _INCLUDED) for m in pattern.finditer(uv_message)}
    for found in _DEPENDS.finditer(uv_message):
        for item in re.split(r",\s*|\s+and\s+", found.group(1)):
            listed = _LISTED.match(item)
            if listed:
                names.add(listed.group(1))
    return frozenset(str(canonicalize_name(name)) for name in names)


def name_asking_inputs(exc: UvError, merged: MergeResult) -> UvError:
    """Give a failed lock the inputs behind the packages uv names (after its own hint, when it has one);
    without a hint, a node that alone asks for one of them gets the way to leave it out."""
    names = named_packages(exc.uv_message)
    askers = [(req.name, origin.origin) for req in merged.requirements if req.name in names
              for origin in req.origins]
    if not askers:
        return exc
    sole = {name: {o.source for n, o in askers if n == name} for name in names}
    nodes = sorted({next(iter(sources)).removeprefix(NODE_SOURCE_PREFIX) for sources in sole.values()
                    if len(sources) == 1 and next(iter(sources)).startswith(NODE_SOURCE_PREFIX)})
    said = "; ".join(f"`{name}` from {origin}" for name, origin in askers[:_SHOWN])
    more = f" (and {len(askers) - _SHOWN} more)" if len(askers) > _SHOWN else ""
    if exc.hint is not None:  # uv's failure was classified already (a build refused, say): add who asks
        exc.hint = f"{exc.hint}. Asked for by: {said}{more}"
        return exc
    hint = f"uv could not lock what these inputs ask for: {said}{more}"
    exc.hint = f"{hint}; fix the node's requirements, or {exclude_node_hint(*nodes)}" if nodes else hint
    return exc
