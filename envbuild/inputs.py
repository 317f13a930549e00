"""What goes into a profile's lock: ComfyUI, its Manager, custom nodes, extras and the profile.

Each input keeps its provenance (file, line, who asked) so that a conflict or a torch pin
names the node responsible, and `merge --explain` can say why a package is there.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.config import Config
from envbuild.errors import ConfigError, ConflictError
from envbuild.profiles import TorchProfile
from envbuild.tomlfile import load_toml

if TYPE_CHECKING:  # the parser is imported when parsing, not to find files (the no-op path)
    from envbuild.requirements import Diagnostic, MergeResult, ParsedFile, SourcedRequirement

MANAGER_DIR_NAMES = ("comfyui-manager",)  # matched case-insensitively
DISABLED_SUFFIX = ".disabled"


class InputFile(NamedTuple):
    """One requirement source: its path, who it speaks for, and how strictly to read it."""

    path: Path
    source: str  # "ComfyUI", "ComfyUI-Manager", "node <name>", "extra"
    lenient: bool  # custom nodes: one bad line is reported, not fatal
    kind: str = "requirements"  # or "pyproject" (a node's [project].dependencies)


class CollectedInputs(NamedTuple):
    files: tuple[InputFile, ...]
    skipped_nodes: tuple[str, ...]  # disabled or excluded, with the reason
    manager_dir: Path | None


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
    manager = find_manager(config)
    if manager is not None:
        files.append(InputFile(manager / "requirements.txt", "ComfyUI-Manager", lenient=False))
    node_files, skipped = _node_inputs(config, manager)
    files.extend(node_files)
    files.extend(InputFile(path, "extra", lenient=False) for path in config.extra_requirements)
    return CollectedInputs(tuple(files), tuple(skipped), manager)


def find_manager(config: Config) -> Path | None:
    if not config.manager_enabled:
        return None
    if config.manager is not None:
        if not (config.manager / "requirements.txt").is_file():
            raise ConfigError(config.source, f"ComfyUI-Manager at {config.manager} has no requirements.txt",
                              hint="check [manager] path, or set [manager] enabled = false")
        return config.manager
    for folder in config.custom_node_dirs():
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            if child.name.lower() in MANAGER_DIR_NAMES and (child / "requirements.txt").is_file():
                return child
    return None


def _node_inputs(config: Config, manager: Path | None) -> tuple[list[InputFile], list[str]]:
    files: list[InputFile] = []
    skipped: list[str] = []
    seen: set[Path] = set()
    excluded = {name.lower() for name in config.exclude_nodes}
    found_names: set[str] = set()
    for folder in config.custom_node_dirs():
        if not folder.is_dir():
            continue
        for node in sorted(folder.iterdir(), key=lambda p: p.name):
            found_names.add(node.name.lower())
            if not node.is_dir() or node.name.startswith((".", "__")) or node.resolve() in seen:
                if node.name == DISABLED_SUFFIX and node.is_dir():
                    skipped.append(f"{config.display(node)}/* (the .disabled folder)")
                continue
            seen.add(node.resolve())
            if manager is not None and node.resolve() == manager.resolve():
                continue
            if not config.manager_enabled and node.name.lower() in MANAGER_DIR_NAMES:
                skipped.append(f"{node.name} (the Manager; [manager] enabled = false)")
                continue
            if node.name.endswith(DISABLED_SUFFIX):
                skipped.append(f"{node.name} (disabled)")
                continue
            if node.name.lower() in excluded:
                skipped.append(f"{node.name} (excluded)")
                continue
            found = _node_requirement_file(node)
            if found is not None:
                files.append(found)
    # A name that matches no node is most likely a typo: say so rather than silently lock it all.
    skipped.extend(f"--exclude-node {name}: no custom node of that name (nothing left out)"
                   for name in sorted(excluded - found_names))
    return files, skipped


def _node_requirement_file(node: Path) -> InputFile | None:
    reqs = node / "requirements.txt"
    if reqs.exists():  # a directory in its place is an error naming the node, not a silent skip
        return InputFile(reqs, f"node {node.name}", lenient=True)
    pyproject = node / "pyproject.toml"
    if pyproject.is_file():
        return InputFile(pyproject, f"node {node.name}", lenient=True, kind="pyproject")
    return None


def read_input(item: InputFile, config: Config) -> ParsedFile:
    from envbuild.requirements import parse_requirements_file

    if item.kind == "pyproject":
        return _read_node_pyproject(item, config)
    return parse_requirements_file(
        item.path, source=item.source, lenient=item.lenient, display_root=config.project_dir,
        confine_to=_owner_folder(item),
    )


def _owner_folder(item: InputFile) -> Path | None:
    """A file and its includes stay in its owner's folder (node, ComfyUI checkout, Manager); the
    user's own extra files may include anything."""
    return None if item.source == "extra" else item.path.parent


def _read_node_pyproject(item: InputFile, config: Config) -> ParsedFile:
    """A node without requirements.txt may declare `[project].dependencies` instead.

    Read as leniently as a node's requirements.txt: a file envbuild cannot read is reported with
    the node's name and leaves that node's dependencies out, it does not stop the lock.
    """
    from envbuild.requirements import parse_requirements_text

    try:
        data = load_toml(item.path)
    except ConfigError as exc:
        reason = exc.message.split(": ", 1)[-1]
        return _skipped_pyproject(item, config, f"{reason}; this node's dependencies are left out")
    project = data.get("project", {})
    deps = project.get("dependencies", []) if isinstance(project, dict) else []
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        return _skipped_pyproject(item, config, "[project].dependencies is not a list of strings; "
                                  "this node's dependencies are left out")
    if not deps and isinstance(project, dict) and "dependencies" in project.get("dynamic", []):
        return _skipped_pyproject(item, config, "[project].dependencies are dynamic (computed when the node is "
                                  "built), so envbuild cannot read them; give the node a requirements.txt")
    text = item.path.read_text(encoding="utf-8-sig")
    # One line per dependency, placed at the line its quoted string is on, so provenance is real.
    lines = text.splitlines()
    numbered = [""] * len(lines)
    for dep in deps:
        quoted = re.compile(r"""["']""" + re.escape(dep) + r"""["']""")
        line = next((i for i, raw in enumerate(lines) if quoted.search(raw) and not numbered[i]), None)
        if line is None:
            numbered.append(dep)
        else:
            numbered[line] = dep
    return parse_requirements_text(
        "\n".join(numbered), path=item.path, source=item.source, lenient=True, display_root=config.project_dir,
        confine_to=_owner_folder(item),
    )


def _skipped_pyproject(item: InputFile, config: Config, message: str) -> ParsedFile:
    from envbuild.requirements import Diagnostic, Origin, ParsedFile

    origin = Origin(path=config.display(item.path), line=0, source=item.source)
    return ParsedFile((), (), (Diagnostic(origin, message),), (item.path,))


def profile_requirements(profile: TorchProfile, config: Config) -> list[SourcedRequirement]:
    """The profile's torch family as requirements, each pointing at its line in the profile file."""
    from packaging.requirements import Requirement

    from envbuild.requirements import Origin, SourcedRequirement

    packages = profile.packages
    try:
        text = profile.path.read_text(encoding="utf-8")
    except OSError:
        text = ""
    display = profile_display_path(profile, config)
    result = []
    for package in packages:
        match = re.search(rf"^\s*{re.escape(package.name)}\s*=", text, re.M)
        line = text.count("\n", 0, match.start()) + 1 if match else 0
        req_text = package.requirement_text()
        origin = Origin(path=display, line=line, source=f"profile {profile.name}")
        result.append(SourcedRequirement(Requirement(req_text), origin, req_text))
    return result


def profile_display_path(profile: TorchProfile, config: Config) -> str:
    """Built-in profiles are named by envbuild, not by where it happens to be installed."""
    try:
        return profile.path.resolve().relative_to(config.project_dir.resolve()).as_posix()
    except ValueError:
        return f"envbuild:profiles/{profile.path.name}"


def merge_inputs(config: Config, profile: TorchProfile) -> MergedInputs:
    """Parse and merge everything; stop on conflicts before uv ever runs."""
    from envbuild.requirements import merge

    collected = collect_inputs(config)
    requirements: list[SourcedRequirement] = []
    constraints: list[SourcedRequirement] = []
    warnings: list[Diagnostic] = []
    files_read: list[Path] = []
    for item in collected.files:
        parsed = read_input(item, config)
        _require_comfyui_requirements(item, parsed, config)
        requirements.extend(parsed.requirements)
        constraints.extend(parsed.constraints)
        warnings.extend(parsed.warnings)
        files_read.extend(parsed.files)
    requirements, constraints, settled = settle_clobbering(requirements, constraints, profile)
    warnings.extend(settled)
    if collected.manager_dir is not None:
        requirements.append(_manager_pip(collected.manager_dir, config))
    family = profile_requirements(profile, config)
    _guard_torch_family(family, requirements + constraints)
    result = merge([*requirements, *family], constraints)
    return MergedInputs(result, tuple(warnings), tuple(dict.fromkeys(files_read)), collected)


def _require_comfyui_requirements(item: InputFile, parsed: ParsedFile, config: Config) -> None:
    """ComfyUI always needs packages (torchsde, einops, ...): an empty file is a broken checkout, not a choice."""
    if item.source != "ComfyUI" or parsed.requirements:
        return
    from envbuild.errors import RequirementFileError

    raise RequirementFileError(
        config.display(item.path), None,
        "has no requirements: ComfyUI's requirements.txt always lists packages, so this checkout is incomplete "
        "(a lock made from it would hold only the torch profile)",
        hint="restore the file (`git checkout -- requirements.txt` in the checkout) or point [comfyui] path at a "
             "complete ComfyUI checkout",
    )


def _manager_pip(manager: Path, config: Config) -> SourcedRequirement:
    """The Manager shells out to `python -m pip`; uv venvs have no pip unless it is locked."""
    from packaging.requirements import Requirement

    from envbuild.requirements import Origin, SourcedRequirement

    origin = Origin(
        path=config.display(manager / "requirements.txt"), line=0,
        source="ComfyUI-Manager (runs `python -m pip`; added by envbuild)",
    )
    return SourcedRequirement(Requirement("pip"), origin, "pip")


def _guard_torch_family(family: list[SourcedRequirement], inputs: list[SourcedRequirement]) -> None:
    """No input may move the torch family off the profile's index or versions, whatever its marker."""
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name

    from envbuild.requirements import specifiers_satisfiable

    pinned = {canonicalize_name(req.requirement.name): req for req in family}
    for item in inputs:
        name = canonicalize_name(item.requirement.name)
        anchor = pinned.get(name)
        if anchor is None:
            continue
        if item.requirement.url:
            raise ConflictError(name, [
                f"{item.text} from {item.origin}",
                f"{anchor.text} from {anchor.origin}",
            ], hint=f"the profile pins {name} to its own index; remove the URL line or exclude the node")
        combined = SpecifierSet(f"{item.requirement.specifier},{anchor.requirement.specifier}".strip(","))
        if not specifiers_satisfiable(combined):
            node = item.origin.source.removeprefix("node ") if item.origin.source.startswith("node ") else "NAME"
            raise ConflictError(name, [
                f"{item.text} from {item.origin}",
                f"{anchor.text} from {anchor.origin}",
            ], hint=f"{item.origin.source} needs a {name} this profile does not provide: "
                    f"choose another profile (--profile), or leave the node out with --exclude-node {node}")


class _Clobbering(NamedTuple):
    """Distributions that install the same import package, so the last one installed wins."""

    module: str
    members: frozenset[str]


_OPENCV = _Clobbering("cv2", frozenset({"opencv-python", "opencv-python-headless", "opencv-contrib-python",
                                        "opencv-contrib-python-headless"}))
_ONNXRUNTIME = _Clobbering("onnxruntime", frozenset({"onnxruntime", "onnxruntime-gpu", "onnxruntime-directml",
                                                     "onnxruntime-openvino"}))


def _choose(group: _Clobbering, asked: set[str], profile: TorchProfile) -> tuple[str, str]:
    """The one variant to keep, and why: the same choice for the same inputs and profile, always."""
    if group is _OPENCV:
        if any("contrib" in name for name in asked):
            return "opencv-contrib-python-headless", ("ComfyUI has no GUI, so the headless build serves every "
                                                      "node, and contrib has every module the others have")
        return "opencv-python-headless", "ComfyUI has no GUI, so the headless build (no Qt/X11/libGL) serves every node"
    if profile.accelerator == "cuda":
        return "onnxruntime-gpu", f"profile {profile.name} is a CUDA profile (onnxruntime-gpu also runs on the CPU)"
    return "onnxruntime", f"profile {profile.name} is not a CUDA profile"


def settle_clobbering(
    requirements: list[SourcedRequirement], constraints: list[SourcedRequirement], profile: TorchProfile,
) -> tuple[list[SourcedRequirement], list[SourcedRequirement], list[Diagnostic]]:
    """When inputs ask for several variants of opencv (or of onnxruntime), keep one and rename the rest.

    Each variant installs the same module, and whichever pip or uv installs last overwrites the
    others' files: which `cv2` a node imports would depend on install order. The replaced lines
    keep their specifiers, extras and markers, so they still constrain the version of the one kept.
    """
    from packaging.utils import canonicalize_name

    from envbuild.requirements import Diagnostic

    notes: list[Diagnostic] = []
    for group in (_OPENCV, _ONNXRUNTIME):
        items = [i for i in (*requirements, *constraints) if canonicalize_name(i.requirement.name) in group.members]
        asked: set[str] = {canonicalize_name(i.requirement.name) for i in items if not i.requirement.url}
        if len(asked) < 2:
            continue
        chosen, why = _choose(group, asked, profile)
        askers = ", ".join(sorted({f"{i.origin.source} ({i.requirement.name})" for i in items}))
        for item in items:
            if canonicalize_name(item.requirement.name) == chosen or item.requirement.url:
                continue
            notes.append(Diagnostic(item.origin, f"{item.requirement.name} replaced by {chosen}: the variants asked "
                                    f"for ({askers}) all install the `{group.module}` module and overwrite each "
                                    f"other; {why}"))
        requirements = [_renamed(i, group, chosen) for i in requirements]
        constraints = [_renamed(i, group, chosen) for i in constraints]
    return requirements, constraints, notes


def _renamed(item: SourcedRequirement, group: _Clobbering, chosen: str) -> SourcedRequirement:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from envbuild.requirements import SourcedRequirement

    req = item.requirement
    name = canonicalize_name(req.name)
    if name not in group.members or name == chosen or req.url:
        return item
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    marker = f"; {req.marker}" if req.marker else ""
    return SourcedRequirement(Requirement(f"{chosen}{extras}{req.specifier}{marker}"), item.origin,
                              f"{item.text} (as {chosen})")


def normalized_digest(parsed_texts: list[str]) -> str:
    """A file's fingerprint ignores comments and blank lines: only what it asks for counts."""
    return hashlib.sha256("\n".join(parsed_texts).encode("utf-8")).hexdigest()
