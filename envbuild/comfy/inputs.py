"""What goes into a profile's lock: ComfyUI, its Manager, custom nodes, extras and the profile.

The Manager is one of two routes (`manager_route`): the pip package of the checkout's
manager_requirements.txt (ComfyUI v0.4.0+, started with --enable-manager) or a legacy clone in
custom_nodes; the pip route wins, and a clone beside it is left out, as ComfyUI blocks it.

Each input keeps its provenance (file, line, who asked) so that a conflict or a torch pin
names the node responsible, and `merge --explain` can say why a package is there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.comfy.layout import (
    BROKEN_LINK,
    CLONE_ROUTE,
    DISABLED_SUFFIX,
    HIDDEN,
    MANAGER_DIR_NAMES,
    MANAGER_PACKAGE,
    MANAGER_REQUIREMENTS,
    MANAGER_SOURCE,
    NO_ROUTE,
    PIP_ROUTE,
    ManagerRoute,
    _existing_node_dirs,
    blocked_by_core,
    manager_route,
    node_entries,
)
from envbuild.core.errors import ConfigError, RequirementFileError
from envbuild.settings.config import Config
from envbuild.torch.family import family_packages, guard_torch_family, guard_torchaudio, settle_clobbering
from envbuild.torch.profile import TorchProfile
from envbuild.torch.profile_file import profile_requirements

if TYPE_CHECKING:  # the parser is imported when parsing, not to find files (the no-op path)
    from envbuild.pkgs.merging import MergeResult
    from envbuild.pkgs.requirements import Diagnostic, ParsedFile, SourcedRequirement

# A folder name is written into the committed pyproject's header and the fingerprint: a control
# character (a newline, say) would end the TOML comment and make a file uv cannot parse.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LINE_BREAKING = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # a tab is only whitespace in PEP 508
INSTALL_SCRIPT = "install-script"  # a node's install.py: read for what it installs (never run), locks nothing


class InputFile(NamedTuple):
    """One requirement source: its path, who it speaks for, and how strictly to read it."""

    path: Path
    source: str  # "ComfyUI", "ComfyUI-Manager", "node <name>", "extra"
    lenient: bool  # custom nodes: one bad line is reported, not fatal
    kind: str = "requirements"  # or "pyproject" (a node's [project].dependencies), or INSTALL_SCRIPT
    owner: Path | None = None  # the node's folder, which the file and its includes must stay in


class CollectedInputs(NamedTuple):
    files: tuple[InputFile, ...]
    skipped_nodes: tuple[str, ...]  # disabled or excluded, with the reason
    manager_dir: Path | None  # the legacy clone, when that is the route
    manager: ManagerRoute


class MergedInputs(NamedTuple):
    result: MergeResult
    warnings: tuple[Diagnostic, ...]
    files_read: tuple[Path, ...]
    collected: CollectedInputs


def collect_inputs(config: Config) -> CollectedInputs:
    """Find every requirement file the deployment consists of (no parsing yet)."""
    if config.comfyui is None:
        raise ConfigError(
            config.source,
            "no ComfyUI checkout given",
            hint="pass --comfyui PATH, or create envbuild.toml with [comfyui] path = \"ComfyUI\"",
        )
    comfy_reqs = config.comfyui / "requirements.txt"
    if not config.comfyui.is_dir():
        raise ConfigError(config.source, f"ComfyUI checkout {config.comfyui} does not exist",
                          hint="run `envbuild fetch` to clone it at [comfyui] ref" if config.comfyui_git
                          else "check [comfyui] path in envbuild.toml or --comfyui")
    if not comfy_reqs.exists():  # a directory or unreadable file is reported by the parser, naming it
        raise ConfigError(config.source, f"{comfy_reqs} not found: is {config.comfyui} a ComfyUI checkout?")
    files = [InputFile(comfy_reqs, "ComfyUI", lenient=False)]
    route = manager_route(config)
    if route.kind == PIP_ROUTE:
        assert route.path is not None
        files.append(InputFile(route.path, MANAGER_SOURCE, lenient=False))
    manager = route.path if route.kind == CLONE_ROUTE else None
    if manager is not None:
        files.append(InputFile(manager / "requirements.txt", MANAGER_SOURCE, lenient=False))
    node_files, skipped = _node_inputs(config, manager, route)
    files.extend(node_files)
    files.extend(InputFile(path, "extra", lenient=False) for path in config.extra_requirements)
    return CollectedInputs(tuple(files), tuple(skipped), manager, route)


def _node_inputs(config: Config, manager: Path | None, route: ManagerRoute) -> tuple[list[InputFile], list[str]]:
    files: list[InputFile] = []
    skipped: list[str] = []
    seen: set[Path] = set()
    excluded = {name.lower() for name in config.exclude_nodes}
    found_names: set[str] = set()
    for folder in _existing_node_dirs(config):
        for entry in node_entries(folder):
            node = entry.path
            found_names.add(node.name.lower())
            shown = _node_name(node)
            if entry.kind == BROKEN_LINK:
                skipped.append(f"{shown} (a symbolic link to nothing: broken or looping)")
                continue
            if entry.kind == HIDDEN and node.name == DISABLED_SUFFIX and node.is_dir():
                skipped.append(f"{config.display(node)}/* (the .disabled folder)")
                continue
            if entry.kind == HIDDEN or not node.is_dir() or node.resolve() in seen:
                continue
            seen.add(node.resolve())
            if manager is not None and node.resolve() == manager.resolve():
                continue
            if not config.manager_enabled and node.name.lower() in MANAGER_DIR_NAMES:
                skipped.append(f"{shown} (the Manager; [manager] enabled = false)")
                continue
            if route.kind == PIP_ROUTE and blocked_by_core(node.name) and not node.name.endswith(DISABLED_SUFFIX):
                skipped.append(f"{shown} (a ComfyUI-Manager clone: with --enable-manager ComfyUI blocks it by "
                               "policy and runs the pip Manager of manager_requirements.txt; remove it, or set "
                               "[manager] pip = false to keep it)")
                continue
            if node.name.endswith(DISABLED_SUFFIX):
                skipped.append(f"{shown} (disabled)")
                continue
            if node.name.lower() in excluded:
                skipped.append(f"{shown} (excluded)")
                continue
            _refuse_unwritable_name(config, node)
            files.extend(node_files(node, config))
    # A name that matches no node is most likely a typo: say so rather than silently lock it all.
    skipped.extend(f"--exclude-node {name}: no custom node of that name (nothing left out)"
                   for name in sorted(excluded - found_names))
    skipped.extend(f"[custom-nodes.{name}] requirements: no custom node folder of that name (nothing read)"
                   for name in sorted(config.node_requirements) if name.lower() not in found_names)
    return files, skipped


def node_files(node: Path, config: Config) -> list[InputFile]:
    """One node's inputs: its requirements.txt (or pyproject.toml), the extra files `[custom-nodes.NAME]
    requirements` declares (read strictly, confined to the node's folder), and its install.py (read for
    what it installs beyond them; envbuild never runs it)."""
    found = _node_requirement_file(node, config)
    files = [found._replace(owner=node)] if found is not None else []
    key = f"custom-nodes.{node.name}.requirements"
    for relative in config.declared_requirements(node.name):
        path = node / relative
        if found is not None and path == found.path:
            continue  # its own requirements.txt, read already
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise ConfigError(config.source, f"`{key}`: {config.display(path)} {what}",
                              hint="list files inside the node's folder, relative to it (its install.py names the "
                                   "ones it hands to pip), or remove the entry")
        files.append(InputFile(path, f"node {node.name}", lenient=False, owner=node))
    script = node / "install.py"
    if script.is_file():
        files.append(InputFile(script, f"node {node.name}", lenient=True, kind=INSTALL_SCRIPT, owner=node))
    return files


def _node_name(node: Path) -> str:
    """A folder name safe to print: escaped (repr) when it holds control characters."""
    return repr(node.name) if _CONTROL.search(node.name) else node.name


def _refuse_unwritable_name(config: Config, node: Path) -> None:
    """Refused, not skipped: ComfyUI still imports the folder, so leaving its requirements out quietly
    would lock an environment the node fails in."""
    if _CONTROL.search(node.name):
        raise ConfigError(
            config.display(node.parent), f"custom node folder {_node_name(node)} has control characters "
            "in its name, which envbuild cannot write into the generated pyproject.toml",
            hint="rename the folder (or remove it); a disabled (*.disabled) or excluded folder is not read",
        )


def _node_requirement_file(node: Path, config: Config) -> InputFile | None:
    reqs = node / "requirements.txt"
    pyproject = node / "pyproject.toml"
    for candidate in (reqs, pyproject):
        if candidate.is_symlink() and not candidate.exists():
            # A link whose target is gone (or loops) is not "no requirements": the lock would miss them.
            raise RequirementFileError(
                config.display(candidate), None, "is a symbolic link to nothing (its target is missing, "
                "or the link loops), so this node's requirements cannot be read",
                hint=f"fix or remove the link, or {_exclude_hint(node.name)}",
            )
    if reqs.exists():  # a directory in its place is an error naming the node, not a silent skip
        return InputFile(reqs, f"node {node.name}", lenient=True)
    if pyproject.is_file():
        return InputFile(pyproject, f"node {node.name}", lenient=True, kind="pyproject")
    if pyproject.exists():
        raise RequirementFileError(config.display(pyproject), None, "is not a file, so this node's "
                                   "dependencies cannot be read",
                                   hint=f"fix it, or {_exclude_hint(node.name)}")
    return None


def read_input(item: InputFile, config: Config) -> ParsedFile:
    from envbuild.pkgs.requirements import parse_requirements_file

    if item.kind == "pyproject":
        return _read_node_pyproject(item, config)
    if item.kind == INSTALL_SCRIPT:  # locks nothing: install_script_notes compares it with the merged inputs
        from envbuild.pkgs.requirements import ParsedFile

        return ParsedFile((), (), (), (item.path,))
    return parse_requirements_file(
        item.path, source=item.source, lenient=item.lenient, display_root=config.project_dir,
        confine_to=_owner_folder(item),
    )


_QUOTED = re.compile(r""""([^"\n]*)"|'([^'\n]*)'""")  # a TOML string on one line; linear


def _owner_folder(item: InputFile) -> Path | None:
    """A file and its includes stay in its owner's folder (node, ComfyUI checkout, Manager); the
    user's own extra files may include anything."""
    return None if item.source == "extra" else (item.owner or item.path.parent)


def _read_node_pyproject(item: InputFile, config: Config) -> ParsedFile:
    """A node without requirements.txt may declare `[project].dependencies` instead.

    Read as leniently as a node's requirements.txt: a file envbuild cannot read is reported with
    the node's name and leaves that node's dependencies out, it does not stop the lock.
    """
    from envbuild.core.safeio import read_regular_file
    from envbuild.core.tomlfile import parse_toml
    from envbuild.pkgs.requirements import REQUIREMENTS_SIZE_LIMIT, parse_requirements_text

    try:  # read once, under the same cap as a requirements file: a node's pyproject is a few KiB
        text = read_regular_file(item.path, REQUIREMENTS_SIZE_LIMIT).decode("utf-8-sig")
        data = parse_toml(text, item.path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return _skipped_pyproject(item, config, f"cannot be read ({reason}); this node's dependencies are left out")
    except ConfigError as exc:
        reason = exc.message.split(": ", 1)[-1]
        return _skipped_pyproject(item, config, f"{reason}; this node's dependencies are left out")
    project = data.get("project", {})
    if not isinstance(project, dict):
        return _skipped_pyproject(item, config, "[project] is not a table; this node's dependencies are left out")
    deps = project.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        return _skipped_pyproject(item, config, "[project].dependencies is not a list of strings; "
                                  "this node's dependencies are left out")
    dynamic = project.get("dynamic", [])
    if not isinstance(dynamic, list) or not all(isinstance(d, str) for d in dynamic):
        return _skipped_pyproject(item, config, "[project].dynamic is not a list of strings; "
                                  "this node's dependencies are left out")
    if not deps and "dependencies" in dynamic:
        return _skipped_pyproject(item, config, "[project].dependencies are dynamic (computed when the node is "
                                  "built), so envbuild cannot read them; give the node a requirements.txt")
    # One line per dependency, placed at the line its quoted string is on, so provenance is real. One pass
    # over the file: each quoted string -> the lines it stands on, in order (a search per dependency would
    # cost time growing with the square of the file).
    lines = text.splitlines()
    numbered = [""] * len(lines)
    where: dict[str, list[int]] = {}
    for number, raw in enumerate(lines):
        for match in _QUOTED.finditer(raw):
            where.setdefault(match.group(1) if match.group(1) is not None else match.group(2), []).append(number)
    refused: list[Diagnostic] = []
    for dep in deps:
        candidates = where.get(dep, [])
        line = candidates.pop(0) if candidates else None
        problem = _not_one_requirement(dep)
        if problem:
            refused.append(_pyproject_note(item, config, f"Skipped dependency {_escaped(dep)}: {problem}, so it "
                                           "is not one PEP 508 requirement (it could smuggle a `-r` include or an "
                                           "index option into the lock). If the package is needed, add a "
                                           "corrected line to your own requirements.", 0 if line is None else line + 1))
            continue
        if line is None:
            numbered.append(dep)
        else:
            numbered[line] = dep
    parsed = parse_requirements_text(
        "\n".join(numbered), path=item.path, source=item.source, lenient=True, display_root=config.project_dir,
        confine_to=_owner_folder(item),
    )
    return dataclasses.replace(parsed, warnings=(*refused, *parsed.warnings)) if refused else parsed


def _not_one_requirement(dep: str) -> str | None:
    """Why a [project].dependencies string cannot be one requirements line (None: it can).

    The strings become the lines of a requirements text: a line break would start a second line
    (`einops\\n-r /etc/passwd`), a leading `-` makes an option, a trailing `\\` joins the next line.
    """
    if _LINE_BREAKING.search(dep):
        return "it contains a line break or another control character"
    if not re.match(r"\s*[A-Za-z0-9]", dep):
        return "it does not start with a package name"
    if dep.rstrip().endswith("\\"):
        return "it ends with a line-continuation backslash"
    return None


def _escaped(text: str, limit: int = 200) -> str:
    """Quoted for a message: control characters escaped, credentials in a URL hidden."""
    from envbuild.core.runner import redact

    shown = _CONTROL.sub(lambda char: f"\\x{ord(char.group()):02x}", redact(text))
    return f"`{shown if len(shown) <= limit else shown[:limit] + '...'}`"


def _pyproject_note(item: InputFile, config: Config, message: str, line: int = 0) -> Diagnostic:
    from envbuild.pkgs.requirements import Diagnostic, Origin

    return Diagnostic(Origin(path=config.display(item.path), line=line, source=item.source), message)


def _skipped_pyproject(item: InputFile, config: Config, message: str) -> ParsedFile:
    from envbuild.pkgs.requirements import ParsedFile

    return ParsedFile((), (), (_pyproject_note(item, config, message),), (item.path,))


def merge_inputs(config: Config, profile: TorchProfile) -> MergedInputs:
    """Parse and merge everything; stop on conflicts before uv ever runs."""
    from envbuild.pkgs.merging import merge

    _require_python(config, profile)
    collected = collect_inputs(config)
    requirements: list[SourcedRequirement] = []
    constraints: list[SourcedRequirement] = []
    warnings: list[Diagnostic] = []
    files_read: list[Path] = []
    for item in collected.files:
        parsed = read_input(item, config)
        _require_comfyui_requirements(item, parsed, config)
        _require_manager_package(item, parsed, config)
        requirements.extend(parsed.requirements)
        constraints.extend(parsed.constraints)
        warnings.extend(parsed.warnings)
        files_read.extend(parsed.files)
    from envbuild.torch.variants import groups_for

    groups = groups_for(config.variant_groups, config.source)
    requirements, constraints, settled = settle_clobbering(requirements, constraints, profile, groups)
    warnings.extend(settled)
    if collected.manager.path is not None and collected.manager.kind != NO_ROUTE:
        where = collected.manager.path if collected.manager.kind == PIP_ROUTE else \
            collected.manager.path / "requirements.txt"
        requirements.append(_manager_pip(where, config))
    from envbuild.torch.companions import companion_requirements, guard_companions

    guard_companions(requirements, profile)  # a constraint installs nothing: only asks are refused
    exclude_where = f"{config.display(config.source)} [lock] exclude" if config.source else "[lock] exclude"
    requirements, left_out = guard_torchaudio(requirements, profile, config.exclude_packages, exclude_where)
    warnings.extend(left_out)
    family = [*profile_requirements(profile, config.project_dir, family_packages(profile, config.exclude_packages)),
              *companion_requirements(profile, config.project_dir, requirements)]
    guard_torch_family(family, requirements + constraints, profile)
    result = merge([*requirements, *family], constraints)
    warnings.extend(install_script_notes(collected.files, result.names(), config))
    return MergedInputs(result, tuple(warnings), tuple(dict.fromkeys(files_read)), collected)


def _require_python(config: Config, profile: TorchProfile) -> None:
    """A deployment Python the profile's torch has no wheel for fails in uv with a resolver story: say it here."""
    from envbuild.torch.profile_file import key_line, python_gap

    gap = python_gap(profile, config.requires_python)
    if gap is not None:
        where = config.display(config.source) if config.source else "envbuild.toml"
        key = "pypi.requires-python" if profile.base and profile.requires_python else "requires-python"
        raise ConfigError(where, f"`[lock] requires-python = \"{config.requires_python}\"` admits Python {gap}, which "
                          f"profile {profile.name}'s torch has no wheel for (it needs Python "
                          f"{profile.requires_python}: {key_line(profile.path, key)})",
                          hint=f"set `[lock] requires-python = \"{profile.requires_python}\"` (or narrower) in "
                               f"envbuild.toml, or choose a profile whose torch still has Python {gap} wheels")


def install_script_notes(files: tuple[InputFile, ...], held: frozenset[str], config: Config) -> list[Diagnostic]:
    """One warning per node whose install.py installs what the lock does not hold (`held`: the merged
    requirements' names), or does what envbuild cannot read."""
    from envbuild.comfy.install_scripts import describe, read_install_script, uncovered
    from envbuild.pkgs.requirements import Diagnostic, Origin

    notes = []
    for script in files:
        if script.kind != INSTALL_SCRIPT or script.owner is None:
            continue
        node = script.owner
        read = {item.path.relative_to(node).as_posix() for item in files
                if item.owner == node and item.kind != INSTALL_SCRIPT}
        missing = uncovered(read_install_script(script.path, node), read_files=read, held=held, node=node)
        if missing:
            notes.append(Diagnostic(Origin(config.display(script.path), missing[0].line, script.source),
                                    describe(node.name, missing)))
    return notes


def _require_comfyui_requirements(item: InputFile, parsed: ParsedFile, config: Config) -> None:
    """ComfyUI always needs packages (torchsde, einops, ...): an empty file is a broken checkout, not a choice."""
    if item.source != "ComfyUI" or parsed.requirements:
        return
    from envbuild.core.errors import RequirementFileError

    raise RequirementFileError(
        config.display(item.path), None,
        "has no requirements: ComfyUI's requirements.txt always lists packages, so this checkout is incomplete "
        "(a lock made from it would hold only the torch profile)",
        hint="restore the file (`git checkout -- requirements.txt` in the checkout) or point [comfyui] path at a "
             "complete ComfyUI checkout",
    )


def _require_manager_package(item: InputFile, parsed: ParsedFile, config: Config) -> None:
    """ComfyUI's manager_requirements.txt names the pip Manager; without it `--enable-manager` finds no
    `comfyui_manager` and ComfyUI starts without a Manager (main.py handle_comfyui_manager_unavailable)."""
    if item.source != MANAGER_SOURCE or item.path.name != MANAGER_REQUIREMENTS:
        return
    from packaging.utils import canonicalize_name

    if any(canonicalize_name(r.requirement.name) == MANAGER_PACKAGE for r in parsed.requirements):
        return
    raise RequirementFileError(
        config.display(item.path), None,
        "does not ask for comfyui_manager, so `--enable-manager` would start ComfyUI without its Manager",
        hint="restore the file (`git checkout -- manager_requirements.txt` in the checkout), or leave the pip "
             "Manager out with [manager] pip = false (or enabled = false) in envbuild.toml",
    )


def _manager_pip(requirements_file: Path, config: Config) -> SourcedRequirement:
    """The Manager shells out to `python -m pip` (unless its config.ini says use_uv); uv venvs have no pip
    unless it is locked. The v4 package does not require pip either (its Requires-Dist has uv, not pip)."""
    from packaging.requirements import Requirement

    from envbuild.pkgs.requirements import Origin, SourcedRequirement

    origin = Origin(
        path=config.display(requirements_file), line=0,
        source="ComfyUI-Manager (runs `python -m pip`; added by envbuild)",
    )
    return SourcedRequirement(Requirement("pip"), origin, "pip")


def normalized_digest(parsed_texts: list[str]) -> str:
    """A file's fingerprint ignores comments and blank lines: only what it asks for counts."""
    return hashlib.sha256("\n".join(parsed_texts).encode("utf-8")).hexdigest()


def _exclude_hint(node: str) -> str:
    """Imported on failure only: the requirement parser (and packaging) stays off the no-op path (~20 ms)."""
    from envbuild.pkgs.requirements import exclude_node_hint

    return exclude_node_hint(node)

