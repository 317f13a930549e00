"""`envbuild check`: does ComfyUI start in this venv, with every custom node imported?

ComfyUI's own smoke test, `main.py --cpu --quick-test-for-ci`, imports ComfyUI, its built-in
extra nodes and every custom node, then exits before the server listens. It exits 0 even when a
node fails to import: `nodes.py` `load_custom_node` logs the traceback, then `Cannot import <path>
module for custom nodes: <error>`, and `init_external_custom_nodes` prints `(IMPORT FAILED):
<path>` in its import-time summary. A node on the newer node API (`comfy_entrypoint`) that fails
when called logs only `Error while calling comfy_entrypoint in <path>: <error>` (nodes.py,
Comfy-Org/ComfyUI master, read 2026-12-06). So the check reads the log, not only the exit code.

A missing module is looked up where it would live before any distribution is named: a module of
ComfyUI itself (`comfy.*`, `comfy_extras.*`, `folder_paths`, ...) means the node needs a newer
ComfyUI than the checkout; a module of the node's own folder means its install step (install.py, a
git submodule) did not run. Only what is neither becomes "add the distribution that provides it":
the PyPI names `comfy` or `impact` are the wrong answer (the Manager removes `comfy` because it
breaks ComfyUI).
"""

from __future__ import annotations

import datetime
import importlib.resources
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from envbuild.core import runner
from envbuild.core.errors import CommandFailed, EnvbuildError, UsageError, VerifyError
from envbuild.core.fsio import atomic_write
from envbuild.core.tomlfile import parse_toml
from envbuild.deploy.deployment import Deployment
from envbuild.lock.trust import require_usable
from envbuild.settings.config import Config
from envbuild.torch.profile import TorchProfile
from envbuild.uv import names as uv_names
from envbuild.uv.command import venv_python
from envbuild.uv.guard import guard_environment

CHECK_FILE = "envbuild-check.json"
DEFAULT_TIMEOUT = 300.0
_CANNOT_IMPORT = re.compile(r"^Cannot import (?P<path>.+) module for custom nodes: (?P<error>.*)$")
_ENTRYPOINT = re.compile(r"^Error while calling comfy_entrypoint in (?P<path>.+?): (?P<error>.*)$")
_ENTRYPOINT_SKIP = re.compile(r"^comfy_entrypoint in (?P<path>.+) (?P<why>is not callable|did not return a "
                             r"ComfyExtension|did not return a list of nodes), skipping\.$")
_IMPORT_TIMES = "Import times for custom nodes:"
_PRESTARTUP = re.compile(r"^Failed to execute startup-script: (?P<path>.+?) / (?P<error>.*)$")
_SUMMARY = re.compile(r"^\s*[\d.]+ seconds(?P<failed> \(IMPORT FAILED\))?: (?P<path>.+)$")
_SKIPPED = re.compile(r"^Skip (?P<path>.+) module for custom nodes due to (?P<why>.*)$")
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')
_MISSING = re.compile(r"No module named '(?P<module>[^']+)'")
_TAIL_LINES = 40


@dataclass(frozen=True)
class NodeFailure:
    owner: str  # the custom node's folder name, or "ComfyUI" for its own modules and extra nodes
    path: str  # what failed to load, as ComfyUI logged it
    kind: str  # "missing-module" | "import-error" | "prestartup" | "crash"
    error: str  # the first line of the error
    module: str | None = None
    imported_by: str | None = None  # file:line of the failing import
    distribution: str | None = None
    source: str | None = None  # "venv" | "table" | "guess" (`distribution`'s origin) | "comfyui" | "node"
    advice: str = ""


@dataclass(frozen=True)
class CheckResult:
    profile: str
    venv: str
    comfyui: str
    status: str  # "passed" | "failed" | "timeout"
    returncode: int | None
    seconds: float
    checked_at: str  # ISO 8601, UTC
    command: tuple[str, ...]
    nodes_loaded: int  # custom nodes ComfyUI imported (its import-time summary)
    failures: tuple[NodeFailure, ...] = ()
    log_tail: str = ""
    schema: int = 1

    @property
    def ok(self) -> bool:
        return self.status == "passed"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CheckResult | None:
        try:
            data = json.loads(text)
            data["command"] = tuple(data["command"])
            data["failures"] = tuple(NodeFailure(**f) for f in data["failures"])
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            return None


def last_check(venv: Path) -> CheckResult | None:
    """The result `envbuild check` saved in this venv, if any (for `doctor`)."""
    try:
        return CheckResult.from_json((venv / CHECK_FILE).read_text(encoding="utf-8"))
    except OSError:
        return None


def run_check(deployment: Deployment, profile: TorchProfile, venv: Path, timeout: float = DEFAULT_TIMEOUT, *,
              before_start: Callable[[], None] | None = None) -> CheckResult:
    """Run the quick test with the venv's interpreter and, when the profile has a lock, the torch
    guard (a node's prestartup script may install packages), taken only from a lock that passes the
    trust check. Saved as `<venv>/envbuild-check.json`."""
    config = deployment.config
    comfyui, python = _inputs(config, venv, profile)
    env = _child_env(venv, deployment.env)
    folder = deployment.folder(profile)
    if folder.exists():
        require_usable(deployment, profile, allow_unhashed=True)
        env.update(guard_environment(folder.path, profile, env, deployment.canonical_index(profile),
                                     deployment.default_index))
    argv = [str(python), str(comfyui / "main.py"), "--cpu", "--quick-test-for-ci"]
    from envbuild.comfy.layout import manager_route

    if manager_route(config).enable_flag:  # as `envbuild run` starts it: the pip Manager is imported too
        argv.append("--enable-manager")
    if config.base_directory is not None:
        argv += ["--base-directory", str(config.base_directory)]
    if before_start is not None:  # every precondition held: now the caller may say that work starts
        before_start()
    started = time.perf_counter()
    try:
        proc = runner.run(argv, cwd=comfyui, env=env, timeout=timeout, check=False)
        log, returncode, status = (proc.stderr or "") + (proc.stdout or ""), proc.returncode, "passed"
    except CommandFailed as exc:  # the only CommandFailed with check=False: the time limit
        log, returncode, status = exc.output_tail, None, "timeout"
    except OSError as exc:
        raise VerifyError(f"could not run {python}: {exc.strerror}") from None
    failures = LogReader(config, venv).read(log, returncode) if status != "timeout" else []
    if status == "passed" and (failures or returncode != 0):
        status = "failed"
    result = CheckResult(
        profile=profile.name, venv=str(venv), comfyui=str(comfyui), status=status, returncode=returncode,
        seconds=round(time.perf_counter() - started, 2),
        checked_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=tuple(argv), nodes_loaded=_loaded(log),
        failures=tuple(failures), log_tail="\n".join(log.rstrip().splitlines()[-_TAIL_LINES:]))
    atomic_write(venv / CHECK_FILE, result.to_json())
    return result


def _loaded(log: str) -> int:
    """Custom nodes the import-time summary lists as imported."""
    return sum(1 for _, failed in import_summary(log) if not failed)


def import_summary(log: str) -> list[tuple[str, bool]]:
    """(path, failed) of each line under `Import times for custom nodes:` up to its blank line. Only
    that block: the `Prestartup times for custom nodes:` block has the same line format and lists
    the nodes with a prestartup_script.py a second time."""
    rows: list[tuple[str, bool]] = []
    inside = False
    for line in log.splitlines():
        if line.strip() == _IMPORT_TIMES:
            inside = True
        elif inside and (match := _SUMMARY.match(line)):
            rows.append((match.group("path"), bool(match.group("failed"))))
        elif inside:
            inside = False
    return rows


def _inputs(config: Config, venv: Path, profile: TorchProfile) -> tuple[Path, Path]:
    if config.comfyui is None or not (config.comfyui / "main.py").is_file():
        where = f" ({config.comfyui} has no main.py)" if config.comfyui else ""
        raise UsageError(f"no ComfyUI checkout to run{where}",
                         hint="set [comfyui] path in envbuild.toml, or pass --comfyui PATH")
    python = venv_python(venv)
    if not python.exists():
        raise VerifyError(f"{venv} has no interpreter at {python}",
                          hint=f"build it with `envbuild sync --profile {profile.name} --venv {venv}`")
    return config.comfyui, python


def _child_env(venv: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The venv as if activated, and nothing from outside it that could import a module the lock
    lacks (PYTHONPATH, user site-packages)."""
    env = dict(environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "CONDA_PREFIX"):
        env.pop(key, None)
    scripts = venv_python(venv).parent
    env.update({"VIRTUAL_ENV": str(venv), uv_names.PYTHON: str(venv_python(venv)),
                "PATH": os.pathsep.join([str(scripts), env.get("PATH", "")]),
                "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"})
    return env


@dataclass
class _Traceback:
    frames: list[tuple[str, int]] = field(default_factory=list)
    exception: str = ""


class LogReader:
    """Turns ComfyUI's log into failures, each with what to do about it."""

    def __init__(self, config: Config, venv: Path) -> None:
        self.config = config
        self.venv = venv
        self._modules: dict[str, str] | None = None

    def read(self, log: str, returncode: int | None) -> list[NodeFailure]:
        failures: list[NodeFailure] = []
        traceback: _Traceback | None = None
        last: _Traceback | None = None
        for line in log.splitlines():
            if line.startswith("Traceback (most recent call last):"):
                traceback = _Traceback()
            elif traceback is not None and (frame := _FRAME.match(line)):
                if not frame.group("file").startswith("<"):  # <frozen importlib._bootstrap> and the like
                    traceback.frames.append((frame.group("file"), int(frame.group("line"))))
            elif traceback is not None and line and not line[0].isspace():
                traceback.exception, last, traceback = line.strip(), traceback, None
            if found := _CANNOT_IMPORT.match(line):
                failures.append(self._failure(found.group("path"), found.group("error"), last, "import-error"))
                last = None
            elif found := _ENTRYPOINT.match(line):  # logged without a traceback
                failures.append(self._failure(found.group("path"), found.group("error"), None, "import-error"))
                last = None
            elif found := _PRESTARTUP.match(line):
                failures.append(self._failure(found.group("path"), found.group("error"), None, "prestartup"))
        failures += self._silent(log, failures)
        if returncode not in (0, None) and last is not None:
            failures.append(self._failure(last.frames[-1][0] if last.frames else "main.py",
                                          last.exception.partition(": ")[2] or last.exception, last, "crash"))
        elif returncode not in (0, None):
            tail = log.strip().splitlines()[-1:] or ["(no output)"]
            failures.append(NodeFailure("ComfyUI", "main.py", "crash", f"exited with status {returncode}: {tail[0]}",
                                        advice="read the log tail in envbuild-check.json"))
        return failures

    def _silent(self, log: str, found: list[NodeFailure]) -> list[NodeFailure]:
        """Nodes the summary marks IMPORT FAILED without a `Cannot import` line (no NODE_CLASS_MAPPINGS...)."""
        known = {f.path for f in found}
        lines = log.splitlines()
        skipped = {m.group("path"): m.group("why") for m in map(_SKIPPED.match, lines) if m}
        skipped |= {m.group("path"): f"comfy_entrypoint {m.group('why').removeprefix('is ')}"
                    for m in map(_ENTRYPOINT_SKIP.match, lines) if m}
        extra = []
        for path, failed in import_summary(log):
            if failed and path not in known:
                why = skipped.get(path, "did not load (see the log)")
                extra.append(NodeFailure(self._owner(path), path, "import-error", why,
                                         advice=f"fix or remove it: {why}"))
        return extra

    def _failure(self, path: str, error: str, traceback: _Traceback | None, kind: str) -> NodeFailure:
        owner = self._owner(path)
        if traceback is not None and error.strip() and error.strip() not in traceback.exception:
            traceback = None  # a traceback logged for something else
        first = (traceback.exception if traceback and traceback.exception else error).splitlines()[0]
        missing = _MISSING.search(first) or _MISSING.search(error)
        if missing is None:
            advice = f"import failed: {first}" if kind != "prestartup" else f"its prestartup_script.py failed: {error}"
            return NodeFailure(owner, path, kind, first, advice=advice)
        module = missing.group("module")
        frame = traceback.frames[-1] if traceback and traceback.frames else None
        by = f"{self._display(frame[0])}:{frame[1]}" if frame else self._display(path)
        by_owner = self._owner(frame[0]) if frame else owner
        kind = "missing-module" if kind != "crash" else kind
        if own := self._not_a_distribution(module, by_owner, by):
            source, advice = own
            return NodeFailure(owner, path, kind, first, module, by, None, source, advice)
        distribution, source = self.distribution(module)
        where = "the node's requirements" if owner != "ComfyUI" else "ComfyUI's requirements"
        if source == "venv":
            advice = (f"module {module}, imported by {by} of {by_owner}, belongs to {distribution}, which is "
                      f"installed but cannot be imported: rebuild the venv with `envbuild sync`")
        else:
            name = distribution if source == "table" else f"the distribution that provides it (probably {distribution})"
            advice = (f"module {module}, imported by {by} of {by_owner}, is not in the lock: "
                      f"add {name} to extra-requirements (or to {where})")
        return NodeFailure(owner, path, kind, first, module, by, distribution, source, advice)

    def _not_a_distribution(self, module: str, node: str, by: str) -> tuple[str, str] | None:
        """("comfyui" | "node", advice) when the missing module is ComfyUI's or the node's own code."""
        folder = self._node_folder(node)
        if "/" in module or "\\" in module:  # a relative import: ComfyUI names a node's module by its path
            stem = re.split(r"[/\\]", module)[-1]
            inner = stem.partition(".")[2]
            where = (folder / inner.replace(".", "/")) if folder is not None and inner else None
            return "node", self._own_advice(module if not inner else inner, by, node, where)
        top = module.split(".")[0]
        if top not in _COMFYUI_MODULES and folder is not None and (where := _own_module(folder, top)):
            return "node", self._own_advice(module, by, node, where / module.partition(".")[2].replace(".", "/"))
        if top in _COMFYUI_MODULES or self._in_checkout(top):
            return "comfyui", self._comfyui_advice(module, by, node, folder)
        return None

    def _node_folder(self, node: str) -> Path | None:
        for folder in self.config.custom_node_dirs():
            if node and (folder / node).is_dir():
                return folder / node
        return None

    def _in_checkout(self, top: str) -> bool:
        root = self.config.comfyui
        if root is None or top in ("custom_nodes", "models", "input", "output", "user", "tests"):
            return False
        return (root / top / "__init__.py").is_file() or (root / f"{top}.py").is_file()

    def _comfyui_advice(self, module: str, by: str, node: str, folder: Path | None) -> str:
        version = comfyui_version(self.config.comfyui) if self.config.comfyui is not None else None
        this = f"this ComfyUI ({version})" if version else "this ComfyUI checkout"
        if node == "ComfyUI":
            return (f"module {module}, imported by {by}, is ComfyUI's own and missing from {this}: the "
                    f"checkout is incomplete or mixed; fetch it again (`envbuild fetch`)")
        wants = node_wants_comfyui(folder) if folder is not None else None
        asks = f" ({wants[0]}, says its {wants[1]})" if wants else ""
        return (f"module {module}, imported by {by} of {node}, is ComfyUI's own and missing from {this}: the "
                f"node needs a newer ComfyUI{asks}; set [comfyui] ref to a newer release, or pin the node "
                f"to an older commit (no distribution on PyPI provides it)")

    def _own_advice(self, module: str, by: str, node: str, where: Path | None) -> str:
        folder = self._node_folder(node)
        steps = []
        if folder is not None and (folder / "install.py").is_file():
            steps.append("its install.py")
        if folder is not None and (folder / ".gitmodules").is_file():
            steps.append("a git submodule in its .gitmodules")
        step = ", ".join(steps) if steps else "install.py / a submodule"
        place = f" ({self.config.display(where)} is missing or empty)" if where is not None else ""
        return (f"module {module}, imported by {by} of {node}, is the node's own code{place}: the node's "
                f"install step did not run ({step}); envbuild never runs it, so bring that part in as the "
                f"node's README says (no distribution on PyPI provides it)")

    def distribution(self, module: str) -> tuple[str, str]:
        """The distribution for an import name: the venv's metadata, the table, else a guess."""
        installed = self.installed_modules()
        if module in installed:
            return installed[module], "venv"
        table = import_name_table()
        for name in (module, module.split(".")[0]):
            if name in table:
                return table[name], "table"
        return module.split(".")[0].replace("_", "-").lower(), "guess"

    def installed_modules(self) -> dict[str, str]:
        if self._modules is None:
            self._modules = venv_modules(self.venv)
        return self._modules

    def _owner(self, path: str) -> str:
        target = Path(path)
        for folder in self.config.custom_node_dirs():
            if _inside(target, folder):
                name = target.resolve().relative_to(folder.resolve()).parts[0]
                return name.removesuffix(".py")
        if self.config.comfyui is not None and _inside(target, self.config.comfyui):
            return "ComfyUI"
        if _inside(target, self.venv):
            owner = self.installed_modules().get(_module_of(target), "")
            return f"the installed package {owner}" if owner else "the venv"
        return "ComfyUI" if not target.is_absolute() else str(target.parent)

    def _display(self, path: str) -> str:
        return self.config.display(Path(path)) if Path(path).is_absolute() else path


# ComfyUI's own top-level modules (Comfy-Org/ComfyUI master, 2026-12-06), named even when the checkout
# predates one of them (comfy_api arrived in 2025): a node importing them needs a newer ComfyUI.
_COMFYUI_MODULES = frozenset({
    "comfy", "comfy_extras", "comfy_api", "comfy_api_nodes", "comfy_execution", "comfy_config", "folder_paths",
    "nodes", "node_helpers", "latent_preview", "comfyui_version", "execution", "server"})
_VERSION = re.compile(r"""^__version__\s*=\s*["']([0-9][0-9A-Za-z.+-]{0,40})["']""", re.MULTILINE)
_WANTS = re.compile(r"\bcomfyui\s*(?:version\s*)?(>=|>|==|~=)\s*v?([0-9]+(?:\.[0-9]+){1,2})\b", re.IGNORECASE)


def comfyui_version(checkout: Path) -> str | None:
    """The checkout's own version, from comfyui_version.py (read, never imported)."""
    try:
        found = _VERSION.search((checkout / "comfyui_version.py").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return found.group(1) if found else None


def node_wants_comfyui(folder: Path) -> tuple[str, str] | None:
    """(the ComfyUI versions a node asks for, where it says so): its pyproject's `[tool.comfy]
    requires-comfyui` (the Comfy Registry's field), else a `comfyui>=X` in a comment of its
    requirements.txt."""
    try:
        data = parse_toml((folder / "pyproject.toml").read_text(encoding="utf-8"), "pyproject.toml")
        tool = data.get("tool", {})
        wanted = tool.get("comfy", {}).get("requires-comfyui") if isinstance(tool, dict) else None
        if isinstance(wanted, str) and re.fullmatch(r"[0-9A-Za-z.,<>=!~* ]{1,60}", wanted):
            return f"ComfyUI {wanted.strip()}", "pyproject.toml [tool.comfy] requires-comfyui"
    except (OSError, AttributeError, EnvbuildError):
        pass
    for line in _read_lines(folder / "requirements.txt"):
        comment = line.partition("#")[2]
        if found := _WANTS.search(comment):
            return f"ComfyUI {found.group(1)}{found.group(2)}", "requirements.txt"
    return None


def _own_module(folder: Path, top: str) -> Path | None:
    """Where the node holds a module named `top`: a package or module at its root, or a folder up to
    two levels down that it puts on sys.path (Impact Pack's modules/impact), or a submodule path."""
    if not top.isidentifier():
        return None
    if top == folder.name:  # the node importing itself by its folder name
        return folder
    for candidate in (folder / top, folder / f"{top}.py"):
        if candidate.exists():
            return folder / top
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if child.is_dir() and not child.name.startswith(".") and (child / top).is_dir():
            return child / top
    for line in _read_lines(folder / ".gitmodules"):
        key, _, value = line.partition("=")
        if key.strip() == "path" and value.strip().rstrip("/").split("/")[-1] == top:
            return folder / value.strip()
    return None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def _module_of(path: Path) -> str:
    parts = list(path.parts)
    start = next((i + 1 for i, p in enumerate(parts) if p == "site-packages"), len(parts) - 1)
    return ".".join(p.removesuffix(".py") for p in parts[start:start + 1])


def site_packages(venv: Path) -> list[Path]:
    if sys.platform == "win32":
        return [venv / "Lib" / "site-packages"]
    return sorted((venv / "lib").glob("python3*/site-packages"))


def venv_modules(venv: Path) -> dict[str, str]:
    """Import name (dotted) -> distribution, from every .dist-info's top_level.txt and RECORD:
    read as files, never imported."""
    modules: dict[str, str] = {}
    for folder in site_packages(venv):
        for info in sorted(folder.glob("*.dist-info")):
            name = _dist_name(info)
            for line in _read_lines(info / "top_level.txt"):
                modules.setdefault(line.strip(), name)
            for line in _read_lines(info / "RECORD"):
                for module in _record_modules(line.split(",", 1)[0]):
                    modules.setdefault(module, name)
    modules.pop("", None)
    return modules


def _record_modules(path: str) -> list[str]:
    parts = path.split("/")
    if not parts or parts[0] in ("..", "") or any(p.endswith((".dist-info", ".data")) or p == "__pycache__"
                                                    for p in parts):
        return []
    stem = parts[-1].split(".")[0]
    packages = parts[:-1] + ([stem] if parts[-1].endswith((".py", ".so", ".pyd")) and stem != "__init__" else [])
    return [".".join(packages[:i]) for i in range(1, len(packages) + 1) if packages[i - 1].isidentifier()]


def _dist_name(info: Path) -> str:
    for line in _read_lines(info / "METADATA"):
        if line.startswith("Name:"):
            return line.split(":", 1)[1].strip()
        if not line.strip():
            break
    return info.name.split("-")[0]


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def import_name_table() -> dict[str, str]:
    resource = importlib.resources.files("envbuild") / "data" / "import_names.toml"
    data = parse_toml(resource.read_text(encoding="utf-8"), "envbuild/data/import_names.toml")
    return {str(k): str(v) for k, v in data.get("modules", {}).items()}
