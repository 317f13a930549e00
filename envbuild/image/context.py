"""`envbuild image`: an OCI build context per profile, installed from the committed lock.

The context holds exactly what the image needs — the trusted lock folder, the ComfyUI sources
(copied, or fetched by git at the commit the lock records), the custom nodes, an entrypoint —
and nothing of this machine: no credentials (they reach the build as secrets), no absolute
paths, no caches. The Containerfile installs in build stages and copies the venv into the
runtime stage in two layers: the torch family with what only it needs (large, rarely changing),
then the rest of the lock. A node's new requirement re-locks and rebuilds the second layer only;
a node's code change rebuilds only the last layer.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from envbuild.comfy.layout import ManagerRoute, manager_route
from envbuild.comfy.manager import created_text
from envbuild.core.errors import ConfigError, LockIntegrityError, UsageError
from envbuild.core.fsio import atomic_write, replace_dir, staging_dir
from envbuild.core.text import quoted
from envbuild.deploy.deployment import Deployment
from envbuild.image import files as imagefiles
from envbuild.pkgs.lockdir import CONSTRAINTS_NAME
from envbuild.pkgs.uvlock import LockFile, parse_uv_lock
from envbuild.settings.config import Config
from envbuild.settings.pins import FULL_SHA as _FULL_SHA
from envbuild.torch.profile import TRITON_NAMES, TorchProfile
from envbuild.uv.guard import find_links, locked_family

PYTHON_MINORS = ("3.13", "3.12", "3.11", "3.10")  # slim official images the default base may name
LOCK_FILES = ("pyproject.toml", "uv.lock", CONSTRAINTS_NAME)
# Never copied from a checkout or a node: VCS data, environments, caches, ComfyUI's data folders.
_SKIPPED_NAMES = {".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache",
                  ".ruff_cache", ".ipynb_checkpoints", ".DS_Store"}
_COMFYUI_DATA = {"models", "input", "output", "user", "temp", "custom_nodes"}
_REMOTE_GIT = re.compile(r"^(https?|ssh|git)://[^@/\s]+/|^[\w.-]+@[\w.-]+:")


@dataclass(frozen=True)
class GitPin:
    """A source the build fetches itself: ComfyUI (or the Manager) at the commit the lock records."""

    name: str  # "comfyui" or "manager"
    url: str
    commit: str


@dataclass(frozen=True)
class ImageContext:
    profile: str
    folder: Path
    base_image: str
    torch_layer: tuple[str, ...]  # packages installed in the first venv layer
    nodes: tuple[str, ...]
    git: tuple[GitPin, ...]
    port: int
    warnings: tuple[str, ...] = ()


def default_base(requires_python: str | None) -> str:
    """A slim official Python image of the newest minor the lock allows."""
    from packaging.specifiers import SpecifierSet

    allowed = SpecifierSet(requires_python or "")
    for minor in PYTHON_MINORS:
        if allowed.contains(f"{minor}.0") or allowed.contains(f"{minor}.99"):
            return f"docker.io/library/python:{minor}-slim"
    raise UsageError(f"the lock's requires-python `{requires_python}` allows none of Python {', '.join(PYTHON_MINORS)}",
                     hint="pass --base IMAGE with the Python the lock needs")


def torch_layer_packages(profile: TorchProfile, lock: LockFile) -> tuple[str, ...]:
    """The torch family and every package only it needs (nvidia-*, triton, ...), sorted.

    A package some other requirement also reaches stays out: a node that moves `filelock` or
    `numpy` must not rebuild the multi-gigabyte layer.
    """
    from packaging.utils import canonicalize_name

    family = {canonicalize_name(p.name) for p in profile.packages} | TRITON_NAMES
    edges: dict[str, set[str]] = {}
    for package in lock.packages:
        edges.setdefault(package.name, set()).update(canonicalize_name(d.name) for d in package.dependencies)
    roots = {p.name for p in lock.packages if p.is_root}
    inside = _reach(family & set(edges), edges, stop=set())
    outside = _reach({d for r in roots for d in edges.get(r, ())} - family, edges, stop=family)
    return tuple(sorted(name for name in inside if name not in outside))


def _reach(start: Iterable[str], edges: dict[str, set[str]], stop: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = [n for n in start if n not in stop]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(d for d in edges.get(name, ()) if d not in seen and d not in stop)
    return seen


def write_context(deployment: Deployment, profile: TorchProfile, output: Path, *, base: str | None = None,
                  uv_version: str, torch_pylock: str, uv_image: str | None = None) -> ImageContext:
    """Write the build context into `output` (replaced whole). The lock must be trusted already
    (`trust.require_usable`), and `torch_pylock` is `uv export --format pylock.toml` of it."""
    config = deployment.config
    folder = deployment.folder(profile)
    lock_text = folder.uv_lock.read_text(encoding="utf-8")
    lock = parse_uv_lock(lock_text, deployment.display(folder.uv_lock))
    layer = torch_layer_packages(profile, lock)
    base_image = base or default_base(lock.requires_python)
    recorded = folder.read_fingerprint()
    pins = git_pins(deployment, dict(recorded.extra) if recorded else {})
    port = config.port or imagefiles.DEFAULT_PORT
    family = locked_family(profile, lock)
    guard = imagefiles.guard_env(find_links(deployment.canonical_index(profile), family),
                                 recorded.default_index if recorded else None)
    _refuse_inside_sources(deployment, output)
    _refuse_foreign_folder(deployment, output)
    _refuse_outside_nodes(deployment)
    ignore = read_ignore(config.project_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(output.parent, output.name) as stage:
        (stage / "lock").mkdir()
        for name in LOCK_FILES:
            shutil.copyfile(folder.path / name, stage / "lock" / name)
        atomic_write(stage / "torch" / "pylock.toml", filter_pylock(torch_pylock, set(layer)))
        if not any(p.name == "comfyui" for p in pins):
            if config.comfyui is None:
                raise ConfigError(config.source, "no ComfyUI checkout given",
                                  hint="set [comfyui] path in envbuild.toml, or pass --comfyui PATH")
            copy_tree(config.comfyui, stage / "comfyui", skip=_COMFYUI_DATA, ignore=ignore)
        (stage / "comfyui").mkdir(exist_ok=True)
        route = manager_route(config)
        nodes = _copy_nodes(deployment, stage / "nodes", route,
                            skip_manager=any(p.name == "manager" for p in pins), ignore=ignore)
        for name in imagefiles.BUILD_FILES:
            atomic_write(stage / "build" / name, imagefiles.build_file(name))
        models = config.models.pins if config.models is not None else ()
        entry = imagefiles.entrypoint(port, enable_manager=route.enable_flag, models=bool(models))
        atomic_write(stage / "envbuild" / "entrypoint.sh", entry)
        if models:  # never the files themselves: the container fills its models volume at start
            atomic_write(stage / "envbuild" / "models.json", imagefiles.models_manifest(
                [pin._asdict() for pin in models], config.models.hf_endpoint if config.models else None))
            atomic_write(stage / "envbuild" / "fill_models.py", imagefiles.build_file("fill_models.py"))
        if route.enable_flag:
            atomic_write(stage / "envbuild" / Path(imagefiles.MANAGER_CONFIG).name, created_text(config))
        atomic_write(stage / "envbuild" / "extra_model_paths.yaml", imagefiles.EXTRA_PATHS)
        os.chmod(stage / "build" / "install.sh", 0o755)
        os.chmod(stage / "envbuild" / "entrypoint.sh", 0o755)
        atomic_write(stage / "Containerfile", imagefiles.containerfile(
            profile=profile.name, base_image=base_image,
            uv_image=uv_image or imagefiles.default_uv_image(uv_version), torch_layer=layer,
            port=port, guard=guard, pins=[(p.name, p.url, p.commit) for p in pins]))
        replace_dir(stage, output)
    return ImageContext(profile.name, output, base_image, layer, tuple(nodes), tuple(pins), port,
                        tuple(_manager_warnings(config, route)))


def _manager_warnings(config: Config, route: ManagerRoute) -> list[str]:
    """The image listens on 0.0.0.0, where Manager 4 installs nodes only with network_mode = personal_cloud."""
    if not route.enable_flag or config.manager_ini.get("network_mode") == "personal_cloud":
        return []
    return ["the image listens on 0.0.0.0: Manager 4 then refuses to install nodes (Manager issues #2496, #2761) "
            "unless network_mode = personal_cloud; set [manager] network_mode = \"personal_cloud\" in envbuild.toml "
            f"(written into the config.ini the image puts on an empty {imagefiles.DATA} volume)"]


def filter_pylock(text: str, keep: set[str]) -> str:
    """uv's PEP 751 export cut down to the packages of the torch layer (hashes and URLs untouched)."""
    import tomlkit

    document = tomlkit.parse(text)
    packages = document.get("packages")
    if packages is None:
        raise UsageError("uv's pylock.toml export has no packages")
    kept = [p for p in packages if _canonical(str(p.get("name", ""))) in keep]
    document["packages"] = tomlkit.aot()
    for package in kept:
        document["packages"].append(package)
    return tomlkit.dumps(document)


def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def git_pins(deployment: Deployment, recorded: dict[str, str]) -> list[GitPin]:
    """ComfyUI and the Manager the build fetches itself: pinned by git in envbuild.toml, on a remote
    the build can reach, at the commit the (trusted) lock records as `<name>-commit`. A local
    repository, or a lock that records no commit, means the checkout is copied instead."""
    config = deployment.config
    pins: list[GitPin] = []
    for name, source in (("comfyui", config.comfyui_git), ("manager", config.manager_git)):
        commit = recorded.get(f"{'comfyui' if name == 'comfyui' else 'comfyui-manager'}-commit")
        if source is None or commit is None or not _REMOTE_GIT.match(source.url):
            continue
        if not _FULL_SHA.fullmatch(commit):  # the fingerprint's reader refuses these; the Containerfile never
            raise LockIntegrityError(f"the lock records {name} at {quoted(commit)}, not a full commit",
                                     hint="run `envbuild lock` to record the commit again")
        pins.append(GitPin(name, source.url, commit))
    return pins


def _refuse_inside_sources(deployment: Deployment, output: Path) -> None:
    """A context inside the ComfyUI checkout or a node folder would copy itself into the next image."""
    config = deployment.config
    target = Path(os.path.abspath(output))
    for source in (config.comfyui, *config.custom_node_dirs(), config.lock_dir):
        if source is not None and (target == source or source in target.parents):
            raise UsageError(f"the image context {deployment.display(target)} is inside {deployment.display(source)}",
                             hint="pass -o DIR outside the ComfyUI checkout, the nodes and the locks")


def _refuse_foreign_folder(deployment: Deployment, output: Path) -> None:
    """-o replaces the folder whole: only an empty one or a context envbuild wrote may be replaced."""
    if not output.exists():
        return
    if output.is_dir() and not any(output.iterdir()):
        return
    try:
        head = (output / "Containerfile").read_text(encoding="utf-8")[:200]
    except OSError:
        head = ""
    if imagefiles.MARK not in head:
        raise UsageError(f"{deployment.display(output)} exists and is not a build context `envbuild image` wrote: "
                         "-o replaces its folder whole", hint="pass -o with a new or empty folder")


def _refuse_outside_nodes(deployment: Deployment) -> None:
    """[nodes] dirs outside the deployment folder would copy whatever lies there on this machine into an
    image that is pushed and shared."""
    config = deployment.config
    root = config.project_dir.resolve()
    for folder in config.node_dirs:
        if not folder.resolve().is_relative_to(root):
            raise ConfigError(config.source, f"[nodes] dirs names {folder}, outside the deployment folder: "
                                             "`envbuild image` copies nodes only from inside it",
                              hint="move the nodes into the deployment (or link them from there), or build the "
                                   "image from a deployment that holds them")


def _copy_nodes(deployment: Deployment, target: Path, route: ManagerRoute, *, skip_manager: bool,
                ignore: Sequence[str] = ()) -> list[str]:
    """Every custom node the lock was made from (disabled and excluded ones left out), and the Manager
    when it is a legacy clone (the pip Manager is in the venv; a clone beside it core would block)."""
    from envbuild.comfy.layout import CLONE_ROUTE, MANAGER_DIR_NAMES, NODE, PIP_ROUTE, blocked_by_core, node_entries

    config = deployment.config
    excluded = {name.lower() for name in config.exclude_nodes}
    target.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    manager = route.path if route.kind == CLONE_ROUTE else None
    for folder in config.custom_node_dirs():
        for entry in node_entries(folder):
            node, name = entry.path, entry.name
            if entry.kind != NODE or name.lower() in excluded:
                continue
            if name.lower() in MANAGER_DIR_NAMES or route.kind == PIP_ROUTE and blocked_by_core(name):
                continue  # the Manager is copied once, below, wherever [manager] path puts it
            if (target / name).exists() or node.is_symlink() and not node.exists():
                continue
            if _ignored(Path(name), ignore):
                continue
            if node.is_dir():
                copy_tree(node, target / name, ignore=ignore)
            elif node.is_file() and name.endswith(".py"):
                shutil.copyfile(node, target / name)
            else:
                continue
            copied.append(name)
    if manager is not None and not skip_manager:
        copy_tree(manager, target / "comfyui-manager", ignore=ignore)
        copied.append("comfyui-manager")
    return copied


def copy_tree(source: Path, target: Path, *, skip: Iterable[str] = (), ignore: Sequence[str] = ()) -> None:
    """Copy sources: regular files and relative links that stay inside; never VCS data, venvs, caches or
    hidden files (`.env`, `.netrc`, `.git-credentials`: an image is shared, a credential in it is
    published), never what `ignore` (.envbuildignore's patterns) names, and never a link to elsewhere on
    this machine (its target would land in the image)."""
    top_skip = set(skip)
    root = source.resolve()
    for current, dirs, files in os.walk(source):
        here = Path(current)
        relative = here.relative_to(source)
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_NAMES and not d.startswith(".")
                         and not (relative == Path(".") and d in top_skip)
                         and not _ignored(relative / d, ignore) and _inside(here / d, root))
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in [d for d in dirs if (here / d).is_symlink()]:  # os.walk does not enter linked folders
            os.symlink(os.readlink(here / name), target / relative / name)
            dirs.remove(name)
        for name in sorted(files):
            path = here / name
            if (name in _SKIPPED_NAMES or name.startswith(".") or name.endswith((".pyc", ".pyo"))
                    or _ignored(relative / name, ignore) or not _inside(path, root)):
                continue
            if path.is_symlink():
                os.symlink(os.readlink(path), target / relative / name)
            elif path.is_file():
                shutil.copy2(path, target / relative / name)


IGNORE_FILE = ".envbuildignore"


def read_ignore(project_dir: Path) -> tuple[str, ...]:
    """The deployment's `.envbuildignore`: one glob per line (`#` comments), matched against each path
    inside ComfyUI and each node (relative, `/`-separated) and against its name."""
    from envbuild.core.safeio import MIB, read_regular_file

    path = project_dir / IGNORE_FILE
    if not path.exists():
        return ()
    try:
        text = read_regular_file(path, MIB).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot be read: {exc}") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def _ignored(relative: Path, patterns: Sequence[str]) -> bool:
    import fnmatch

    text = relative.as_posix()
    return any(fnmatch.fnmatchcase(text, p.strip("/")) or fnmatch.fnmatchcase(relative.name, p) for p in patterns)


def _inside(path: Path, root: Path) -> bool:
    """A plain entry, or a relative link whose target stays within `root`."""
    if not path.is_symlink():
        return True
    link = os.readlink(path)
    if os.path.isabs(link):
        return False
    resolved = path.resolve()
    return resolved == root or root in resolved.parents
