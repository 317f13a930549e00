"""`envbuild profiles update`: keep each profile's torch-family bounds true to what its index serves.

Reads every selected table's index (project pages and wheel metadata, through `indexclient`), has
`profile_bounds` decide each table's bounds, and proposes the new profile texts: bounds changed
through tomlkit with comments and layout kept, and a stamp line saying what was read and when.
Writing them is a separate step (`write_updates`), never into an installed envbuild's own profiles.
"""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from envbuild.core.errors import UsageError
from envbuild.core.fsio import atomic_write
from envbuild.core.http.errors import IndexReadError
from envbuild.core.http.indexclient import IndexClient
from envbuild.core.tomlfile import load_toml
from envbuild.deploy.deployment import pytorch_base
from envbuild.settings.config import Config
from envbuild.torch.catalogue import ProfileCatalogue, builtin_profiles_dir
from envbuild.torch.profile import PYPI_SIMPLE, rebase_pytorch_url
from envbuild.torch.profile_bounds import TableReleases, TableReport, Target, decide_bounds
from envbuild.torch.releases import Metadata, lowest_python, marker_platforms

STAMP = "# envbuild profiles update:"


@dataclass(frozen=True)
class UpdateReport:
    tables: tuple[TableReport, ...]
    unreadable: tuple[tuple[str, str], ...]  # (URL, reason) for every answer that could not be had
    old_texts: Mapping[Path, str]
    new_texts: Mapping[Path, str]  # only the files that change (a proposed profile: its old text is "")
    new_lines: tuple[str, ...] = ()  # build lines the index serves and no profile takes, each with its proposal

    def diff(self, config: Config) -> str:
        parts: list[str] = []
        for path, new in self.new_texts.items():
            name = config.display(path)
            parts.extend(difflib.unified_diff(self.old_texts[path].splitlines(keepends=True),
                                              new.splitlines(keepends=True), f"a/{name}", f"b/{name}"))
        return "".join(parts)


def default_index(environ: Mapping[str, str]) -> str:
    from envbuild.deploy.deployment import uv_default_index

    return (uv_default_index(environ) or PYPI_SIMPLE).rstrip("/")


def select_targets(catalogue: ProfileCatalogue, names: Sequence[str], python: tuple[int, int],
                   environ: Mapping[str, str]) -> list[Target]:
    """`cu126` is its [packages] table, `cu126-pypi` its [pypi] table; no names: every table."""
    chosen = [catalogue.get(n) for n in names] or [
        p for p in (catalogue.get(n) for n in catalogue.names()) if p.base is None]
    targets = []
    for profile in chosen:
        base = catalogue.get(profile.base) if profile.base else profile
        tables = ["pypi"] if profile.base else ["packages"] + (["pypi"] if base.pypi_packages and not names else [])
        for table in tables:
            source = base.pypi_variant() if table == "pypi" else base
            if source is None:  # a [pypi] table without an [index]: the profile is PyPI's already
                continue
            index = (rebase_pytorch_url(base.index_url, pytorch_base(environ))
                     if table == "packages" and base.index_url else None)
            # Companions from the table's own index only: one with a prebuilt-wheel index of its own is the user's.
            companions = tuple(c for c in source.companions if source.companion_index(c.name) is None)
            targets.append(Target(base, source.name, table, index or default_index(environ),
                                  (*source.packages, *companions),
                                  marker_platforms(source.required_environments or source.environments, python),
                                  frozenset(c.name for c in companions)))
    return targets


def _raw_specs(target: Target) -> dict[str, str]:
    document = load_toml(target.profile.path)
    data: dict[str, Any] = dict(document.get(target.table, {}))
    data.pop("companions", None)  # [pypi.companions], read below as the pypi table's companions
    if target.companions:
        data.update(_section(document, target.companions_table))
    result: dict[str, str] = {}
    for key, value in data.items():
        text = value.get("version", "") if isinstance(value, dict) else value
        result[canonicalize_name(key)] = str(text)
    return result


def update_profiles(config: Config, catalogue: ProfileCatalogue, names: Sequence[str], client: IndexClient, *,
                    environ: Mapping[str, str], today: str | None = None) -> UpdateReport:
    """Read every selected table's index, decide its bounds, and propose the new file texts. `environ`:
    the deployment's environment (ENVBUILD_PYTORCH_INDEX, UV_DEFAULT_INDEX)."""
    env = environ
    python = lowest_python(config.requires_python)
    targets = select_targets(catalogue, names, python, env)
    keys = sorted({(t.index_url, p.name) for t in targets for p in t.packages})
    pages = dict(zip(keys, client.map(lambda key: client.project_page(*key), keys), strict=True))
    meta = Metadata(client)
    tables = [TableReleases(t, pages, python, meta) for t in targets]
    tops = [(t.ok_torch[-1].major, t.ok_torch[-1].minor) for t in tables if t.target.stable_index and t.ok_torch]
    reference = max(tops) if len(tops) > 1 else None
    reports = tuple(decide_bounds(t, _raw_specs(t.target), reference) for t in tables)
    failed = [e for e in pages.values() if isinstance(e, IndexReadError)] + meta.errors + client.warnings
    unreadable = [(e.url, e.reason) for e in failed]
    day = today or datetime.date.today().isoformat()
    new, old = proposed_texts(reports, day)
    found: list[str] = []
    if not names:  # a full run also looks for lines the catalogue lacks
        found, proposals, failure = discover_lines(config, catalogue, client, environ, day)
        new.update(proposals)
        old.update({path: "" for path in proposals})
        unreadable += [failure] if failure else []
    return UpdateReport(reports, tuple(dict.fromkeys(unreadable)), old, new, tuple(found))


def discover_lines(config: Config, catalogue: ProfileCatalogue, client: IndexClient, environ: Mapping[str, str],
                   today: str) -> tuple[list[str], dict[Path, str], tuple[str, str] | None]:
    """Read the PyTorch index's own torch/ page (every stable wheel, labelled by line) and propose a profile
    file, `<deployment profiles>/<label>.toml.proposed`, for each CUDA or ROCm line no profile takes."""
    from envbuild.torch.discovery import describe, new_lines, proposed_profile
    from envbuild.torch.profile import CANONICAL_PYTORCH_BASE

    base = (pytorch_base(environ) or CANONICAL_PYTORCH_BASE).rstrip("/")
    torch_page, vision_page = client.map(lambda name: client.project_page(base, name), ["torch", "torchvision"])
    if isinstance(torch_page, IndexReadError):
        return [], {}, (torch_page.url, torch_page.reason)
    if not torch_page.found:
        return [], {}, None
    profiles = [catalogue.get(n) for n in catalogue.names()]
    lines = new_lines(torch_page, None if isinstance(vision_page, IndexReadError) else vision_page, profiles)
    folder = config.profiles_dirs[0] if config.profiles_dirs else config.project_dir / "profiles"
    proposals = {}
    for line in lines:
        path = folder / f"{line.name}.toml.proposed"
        text = proposed_profile(line, f"{CANONICAL_PYTORCH_BASE}/{line.label}", today, torch_page.url)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            proposals[path] = text
    return [f"{describe(line)}: proposed {config.display(folder / f'{line.name}.toml.proposed')}"
            for line in lines], proposals, None


def proposed_texts(reports: Sequence[TableReport], today: str) -> tuple[dict[Path, str], dict[Path, str]]:
    """Bounds changed through tomlkit (comments and layout kept); the stamp line under the table
    header is refreshed when a bound or the newest set changed (no churn from the date alone)."""
    old: dict[Path, str] = {}
    new: dict[Path, str] = {}
    for report in reports:
        if report.error or not report.newest:
            continue
        old.setdefault(report.path, report.path.read_text(encoding="utf-8"))
        text = new.get(report.path, old[report.path])
        for change in report.changes:
            text = replace_spec(text, change.table or report.table, change.package, change.new)
        newest = ", ".join(f"{k} {v}" for k, v in report.newest.items())
        line = f"{STAMP} read {report.index_url} on {today}; newest compatible set: {newest}"
        if report.changes or not _stamped(text, report.table).endswith(f"newest compatible set: {newest}"):
            text = stamp(text, report.table, line)
        new[report.path] = text
    changed = {p: t for p, t in new.items() if t != old[p]}
    return changed, {p: old[p] for p in changed}


def replace_spec(text: str, table: str, package: str, new: str) -> str:
    import tomlkit

    doc = tomlkit.parse(text)
    section: Any = _section(doc, table)
    key = next(k for k in section if canonicalize_name(k) == package)
    if isinstance(section[key], dict):
        section[key]["version"] = new
    else:
        section[key] = new
    return tomlkit.dumps(doc)


def _section(document: Any, dotted: str) -> Any:
    """`pypi.companions` is the [companions] table inside [pypi]."""
    for part in dotted.split("."):
        document = document.get(part, {})
    return document


def _stamped(text: str, table: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.strip() == f"[{table}]" and lines[i + 1].startswith(STAMP):
            return lines[i + 1]
    return ""


def stamp(text: str, table: str, line: str) -> str:
    """Put (or replace) the stamp line right under the table's header."""
    lines = text.splitlines(keepends=True)
    for i, current in enumerate(lines):
        if current.strip() == f"[{table}]":
            if i + 1 < len(lines) and lines[i + 1].startswith(STAMP):
                lines[i + 1] = line + "\n"
            else:
                lines.insert(i + 1, line + "\n")
            break
    return "".join(lines)


def write_updates(report: UpdateReport) -> list[Path]:
    """Write the proposed files (atomically); never into an installed envbuild's own profiles."""
    packaged = builtin_profiles_dir()
    for path in report.new_texts:
        if packaged.name == "_profiles" and packaged.resolve() in path.resolve().parents:
            raise UsageError(f"{path} is a built-in profile inside the installed envbuild",
                             hint="copy it into your deployment's profiles/ folder and update that copy")
    for path, text in report.new_texts.items():
        path.parent.mkdir(parents=True, exist_ok=True)  # a proposed profile may open the deployment's profiles/
        atomic_write(path, text)
    return list(report.new_texts)


__all__ = ["UpdateReport", "update_profiles", "write_updates"]
