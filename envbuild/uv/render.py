"""Render the generated `pyproject.toml` of one profile: pure, and byte-for-byte deterministic.

`uv lock --check` rejects any textual change of a requirement, so the same inputs must always
give the same bytes: everything here is sorted, nothing depends on time, machine or dict order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from envbuild.torch.profile import CompanionIndex, PinnedPackage, TorchProfile, canonical_name

if TYPE_CHECKING:  # tomlkit and the merger are only needed when a render really happens
    from envbuild.pkgs.merging import MergeResult

# Bump when the rendered shape changes, so existing locks are seen as needing a re-lock.
RENDER_VERSION = 4  # 3: variant overrides, companion sources; 4: no-build unless [lock] allow-build
# prerelease-package (the nightly profiles) needs uv 0.12.1; older uv must refuse, not misread.
UV_REQUIRED_VERSION = ">=0.12.1"


class RenderInput(NamedTuple):
    merged: MergeResult
    profile: TorchProfile
    requires_python: str
    index_url: str | None  # the profile's index after ENVBUILD_PYTORCH_INDEX / mirror rewriting
    input_paths: Sequence[str]  # display paths of every file that contributed
    index_format: str = "simple"  # "flat": a mirror that serves one page of wheel links per variant
    default_index: str | None = None  # a PyPI mirror the lock is made through (mirror mode "lock")
    overrides: tuple[str, ...] = ()  # variant-group members dropped from every dependency (envbuild.torch.variants)
    companions: tuple[PinnedPackage, ...] = ()  # the profile's companions an input asks for (envbuild.torch.companions)
    notes: tuple[str, ...] = ()  # header lines for what no input wrote (envbuild.lock.settle.header_notes)
    exclude_newer: str | None = None  # the cooldown's cutoff, RFC 3339 UTC, resolved and recorded at lock time
    exact_pins: tuple[str, ...] = ()  # names an input pins with `==`: never held back by the cooldown
    allow_build: tuple[str, ...] = ()  # [lock] allow-build: the only packages whose build may run


def project_name(profile: TorchProfile) -> str:
    return str(canonical_name(f"comfyui-env-{profile.name}"))


def render_pyproject(spec: RenderInput) -> str:
    import tomlkit

    profile = spec.profile
    doc = tomlkit.document()
    for line in _header(spec):
        doc.add(tomlkit.comment(line))
    doc.add(tomlkit.nl())

    project = tomlkit.table()
    project["name"] = project_name(profile)
    project["version"] = "0.0.0"
    project["requires-python"] = spec.requires_python
    project["dependencies"] = _multiline(r.pep508() for r in spec.merged.requirements)
    doc["project"] = project

    uv = tomlkit.table(is_super_table=True)
    settings = tomlkit.table()
    settings["package"] = False
    settings["required-version"] = UV_REQUIRED_VERSION
    if profile.environments:
        settings["environments"] = _multiline(profile.environments)
    if profile.required_environments:
        settings["required-environments"] = _multiline(profile.required_environments)
    if spec.merged.constraints:
        settings["constraint-dependencies"] = _multiline(c.pep508() for c in spec.merged.constraints)
    if spec.overrides:
        settings["override-dependencies"] = _multiline(spec.overrides)
    family = _family(spec)
    if profile.prerelease:
        allow = tomlkit.inline_table()
        for name in family:
            allow[name] = "allow"
        settings["prerelease-package"] = allow
    sourced = sorted([*family, *(c.name for c in spec.companions)])
    if spec.exclude_newer is not None:
        settings["exclude-newer"] = spec.exclude_newer
        exempt = sorted({*spec.exact_pins, *sourced})
        if exempt:
            settings["exclude-newer-package"] = _exempt(exempt)
    # No package's build backend runs (a node's dependency could run any code while locking) unless the
    # deployment allows it: uv's `no-build`, with `no-binary-package` as its documented per-package way
    # back to building (uv's BuildOptions: a package named there may be built, from source).
    settings["no-build"] = True
    if spec.allow_build:
        settings["no-binary-package"] = list(spec.allow_build)
    uv["uv"] = settings
    index = tomlkit.aot()
    if profile.index_name is not None and spec.index_url is not None:
        settings["sources"] = _sources(spec, sourced)
        index.append(_explicit_index(profile.index_name, spec.index_url, spec.index_format))
        for own in _companion_indexes(spec):  # a prebuilt-wheel index, explicit: for its companion alone
            index.append(_explicit_index(own.index_name, own.url, own.format))
    if spec.default_index is not None:
        mirror = tomlkit.table()
        mirror["name"] = "pypi-mirror"
        mirror["url"] = spec.default_index
        mirror["default"] = True
        index.append(mirror)
    if len(index):
        settings["index"] = index
    doc["tool"] = uv
    return tomlkit.dumps(doc)


def _exempt(names: list[str]) -> Any:
    """`exclude-newer-package = { name = false }`: uv's per-package opt-out of the cutoff (measured with uv
    0.13.9: recorded in uv.lock's `[options.exclude-newer-package]`). An exact pin is the input's own
    decision; the torch family and its companions follow the profile (its bounds), from PyPI as from the
    profile's index, which may list no upload times: uv drops every file without one under a cutoff."""
    import tomlkit

    table = tomlkit.inline_table()
    for name in names:
        table[name] = False
    return table


def _family(spec: RenderInput) -> list[str]:
    return sorted(p.name for p in spec.profile.packages)


def _sources(spec: RenderInput, family: list[str]) -> Any:
    import tomlkit

    sources = tomlkit.table()
    markers = {p.name: p.marker for p in (*spec.profile.packages, *spec.companions)}
    own = {c.name: c.index_name for c in _companion_indexes(spec)}
    for name in family:
        source = tomlkit.inline_table()
        source["index"] = own.get(name, spec.profile.index_name)
        if markers.get(name) is not None:
            source["marker"] = str(markers[name])
        sources[name] = source
    return sources


def _companion_indexes(spec: RenderInput) -> list[CompanionIndex]:
    """The asked companions' own indexes, sorted: only what a node asks for is ever named."""
    asked = {c.name for c in spec.companions}
    return [c for c in spec.profile.companion_indexes if c.name in asked]


def _multiline(values: object) -> Any:
    import tomlkit

    array = tomlkit.array()
    for value in values:  # type: ignore[attr-defined]
        array.append(_readable(value))
    array.multiline(True)
    return array


def _readable(value: Any) -> Any:
    """Markers quote with `"`: a TOML literal string shows them as written instead of as `\\"`."""
    import tomlkit

    if isinstance(value, str) and '"' in value and "'" not in value and "\n" not in value:
        return tomlkit.string(value, literal=True)
    return value


def _header(spec: RenderInput) -> list[str]:
    profile = spec.profile
    source = (f"torch family from {spec.index_url} only" if spec.index_url
              else "torch family from the default index (PyPI's own torch builds)")
    lines = [
        f"Generated by envbuild (render {RENDER_VERSION}) for profile \"{profile.name}\": "
        f"{profile.description}.",
        f"Do not edit: change the inputs and run `envbuild lock --profile {profile.name}`.",
        f"{source}.",
        "Inputs:",
    ]
    lines.extend(f"  {path}" for path in spec.input_paths)
    if spec.exclude_newer is not None:
        lines.append(f"Cooldown: files uploaded before {spec.exclude_newer} (lock.exclude-newer; moved by "
                     "`envbuild lock --upgrade`),")
        lines.append("  except exact pins and the torch family (the profile's bounds decide it).")
    lines.extend(spec.notes)
    return lines


def _explicit_index(name: str, url: str, index_format: str) -> Any:
    """One `[[tool.uv.index]]` entry that serves only the packages a source pins to it."""
    import tomlkit

    entry = tomlkit.table()
    entry["name"] = name
    entry["url"] = url
    entry["explicit"] = True
    if index_format == "flat":
        entry["format"] = "flat"
    return entry
