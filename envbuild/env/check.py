"""`envbuild check`: does ComfyUI start in this venv, with every custom node imported?

ComfyUI's own smoke test, `main.py --cpu --quick-test-for-ci`, imports ComfyUI, its built-in
extra nodes and every custom node, then exits before the server listens. It exits 0 even when a
node fails to import: `nodes.py` `load_custom_node` logs the traceback, then `Cannot import <path>
module for custom nodes: <error>`, and `init_external_custom_nodes` prints `(IMPORT FAILED):
<path>` in its import-time summary. So the check reads the log, not only the exit code, and turns
a missing module into the distribution to add.
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
from envbuild.core.errors import CommandFailed, UsageError, VerifyError
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
    source: str | None = None  # where `distribution` came from: "venv" | "table" | "guess"
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
    return sum(1 for m in map(_SUMMARY.match, log.splitlines()) if m and not m.group("failed"))


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
        skipped = {m.group("path"): m.group("why") for m in map(_SKIPPED.match, log.splitlines()) if m}
        extra = []
        for match in filter(None, map(_SUMMARY.match, log.splitlines())):
            path = match.group("path")
            if match.group("failed") and path not in known:
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
        distribution, source = self.distribution(module)
        where = "the node's requirements" if owner != "ComfyUI" else "ComfyUI's requirements"
        if source == "venv":
            advice = (f"module {module}, imported by {by} of {by_owner}, belongs to {distribution}, which is "
                      f"installed but cannot be imported: rebuild the venv with `envbuild sync`")
        else:
            name = distribution if source == "table" else f"the distribution that provides it (probably {distribution})"
            advice = (f"module {module}, imported by {by} of {by_owner}, is not in the lock: "
                      f"add {name} to extra-requirements (or to {where})")
        return NodeFailure(owner, path, "missing-module" if kind != "crash" else kind, first, module, by,
                           distribution, source, advice)

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
