"""`envbuild doctor`: every link from uv to a working torch on this GPU, one verdict each.

Each check is independent and returns a `Check`; one failing check never hides the others, so a
user sees the whole picture at once (uv, lock, venv, torch, driver, architecture).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from envbuild.core import runner
from envbuild.core.errors import CommandFailed, EnvbuildError
from envbuild.deploy.deployment import Deployment
from envbuild.pkgs.lockdir import LockFolder
from envbuild.torch.gpu.explain import fit_reason, fit_reason_with_line
from envbuild.torch.profile import PYPI_SIMPLE, TorchProfile

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
_IMPORT_PROBE = (
    "import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda, "
    "'hip': getattr(torch.version, 'hip', None), 'available': bool(torch.cuda.is_available()), "
    "'devices': int(torch.cuda.device_count()) if torch.cuda.is_available() else 0}))"
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | warn | fail | skip
    detail: str


@dataclass(frozen=True)
class Context:
    deployment: Deployment
    profile: TorchProfile
    venv: Path

    @property
    def folder(self) -> LockFolder:
        return self.deployment.folder(self.profile)

    @property
    def environ(self) -> Mapping[str, str]:
        return self.deployment.env


def run_doctor(ctx: Context, *, import_torch: bool = True, probe: bool = True) -> list[Check]:
    checks: list[Callable[[Context], Check]] = [_uv, _lock_present, _lock_state, _venv_matches, _venv_generation,
                                                _torch_files]
    if import_torch:
        checks.append(_torch_import)
    checks += [_machine_fit, _comfyui_check, _manager]
    results = [_guarded(check, ctx) for check in checks]
    return results + (_indexes(ctx) if probe else [])


def _guarded(check: Callable[[Context], Check], ctx: Context) -> Check:
    """A check that cannot run is itself a finding, not a crash of the whole report."""
    try:
        return check(ctx)
    except EnvbuildError as exc:
        name = check.__name__.strip("_").replace("_", " ")
        return Check(name, FAIL, str(exc).splitlines()[0])


def _uv(ctx: Context) -> Check:
    from envbuild.uv.command import checked_uv

    uv, version = checked_uv(ctx.deployment.env)
    return Check("uv", PASS, f"uv {version} at {uv.path}")


def _lock_present(ctx: Context) -> Check:
    if ctx.folder.exists():
        return Check("lock present", PASS, f"{ctx.deployment.display(ctx.folder.path)}")
    return Check("lock present", FAIL,
                 f"no lock at {ctx.folder.path}: run `envbuild lock --profile {ctx.profile.name}`")


def _lock_state(ctx: Context) -> Check:
    """The lock's state in the one vocabulary (trust.STATE_MEANING), from the one trust check."""
    if not ctx.folder.exists():
        return Check("lock state", SKIP, "no lock")
    from envbuild.lock.trust import CURRENT, STATE_MEANING, UNHASHED, assess

    found = assess(ctx.deployment, ctx.profile)
    compared = "" if found.compared_with_inputs else " (no ComfyUI checkout here: only the audit ran)"
    if found.state == CURRENT:
        return Check("lock state", PASS, f"current: {STATE_MEANING[CURRENT]}{compared}")
    if found.state == UNHASHED:
        shown = ", ".join(found.unhashed[:3])
        return Check("lock state", WARN, f"unhashed: {len(found.unhashed)} file(s) without sha256 (sync needs "
                                         f"--allow-unhashed): {shown}{compared}")
    return Check("lock state", FAIL, f"{found.state}: " + "; ".join(found.reasons))


def _venv_matches(ctx: Context) -> Check:
    if not ctx.folder.exists():
        return Check("venv matches lock", SKIP, "no lock")
    if not (ctx.venv / "pyvenv.cfg").is_file():
        return Check("venv matches lock", FAIL,
                     f"no venv at {ctx.venv}: run `envbuild sync --profile {ctx.profile.name}`")
    from envbuild.uv.command import own_index_env

    output = ctx.deployment.uv.sync(ctx.folder.path, ctx.venv, dry_run=True, stream=False,
                                      env_unset=own_index_env(ctx.folder))
    changes = [line.strip() for line in output.splitlines() if line.strip().startswith(("+ ", "- ", "~ "))]
    if "Would make no changes" in output or not changes:
        return Check("venv matches lock", PASS, f"{ctx.venv} holds exactly the lock")
    shown = ", ".join(changes[:5]) + (f" (+{len(changes) - 5} more)" if len(changes) > 5 else "")
    return Check("venv matches lock", FAIL, f"sync would change {len(changes)} package(s): {shown}")


def _venv_generation(ctx: Context) -> Check:
    from envbuild.env.switch import generation_status

    return Check("venv generation", *generation_status(ctx.deployment, ctx.venv))


def _torch_files(ctx: Context) -> Check:
    from envbuild.torch.installed import inspect_torch, mismatches

    if not (ctx.venv / "pyvenv.cfg").is_file():
        return Check("torch build", SKIP, "no venv")
    build = inspect_torch(ctx.venv)
    if build is None:
        return Check("torch build", FAIL, f"torch is not installed in {ctx.venv}")
    problems = mismatches(build, ctx.profile, torch_source=ctx.profile.torch_source)
    if problems:
        return Check("torch build", FAIL, "; ".join(problems))
    return Check("torch build", PASS, build.describe())


def _torch_import(ctx: Context) -> Check:
    """The one place envbuild imports torch: slow with a real build, but it proves the import works."""
    from envbuild.uv.command import venv_python

    python = venv_python(ctx.venv)
    if not python.exists():
        return Check("torch imports", SKIP, "no venv")
    try:
        proc = runner.run([str(python), "-c", _IMPORT_PROBE], timeout=300)
    except CommandFailed as exc:
        last = exc.output_tail.strip().splitlines()[-1:] or ["(no output)"]
        return Check("torch imports", FAIL, f"`import torch` failed: {last[0]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    if ctx.profile.accelerator in ("cuda", "rocm") and _gpu_expected(ctx) and not data["available"]:
        return Check("torch imports", FAIL,
                     f"torch {data['version']} imports, but torch.cuda.is_available() is False although a GPU "
                     "was detected (driver too old, or no access to the device)")
    state = (f"torch.cuda.is_available() = True ({data['devices']} device(s))" if data["available"]
             else "no GPU in use")
    return Check("torch imports", PASS, f"torch {data['version']} imports; {state}")


def _gpu_expected(ctx: Context) -> bool:
    from envbuild.torch.gpu import detect_machine

    machine = detect_machine(env=ctx.environ)
    return any(gpu.vendor in ("nvidia", "amd") for gpu in machine.gpus)


def _machine_fit(ctx: Context) -> Check:
    from envbuild.torch.fitting import fit_of

    machine, fit = fit_of(ctx.profile, ctx.folder if ctx.folder.exists() else None, environ=ctx.environ)
    if fit.ok:
        return Check("machine runs profile", PASS, fit_reason_with_line(fit))
    status = FAIL if ctx.profile.accelerator != "cpu" else WARN
    return Check("machine runs profile", status, fit_reason(fit))


def _comfyui_check(ctx: Context) -> Check:
    from envbuild.env.check import last_check

    result = last_check(ctx.venv)
    if result is None:
        return Check("ComfyUI check", SKIP, "not run yet for this venv: `envbuild check` (or `sync --check`)")
    detail = f"last run: {result.status}, {result.nodes_loaded} custom node(s) loaded"
    if result.ok:
        return Check("ComfyUI check", PASS, detail)
    return Check("ComfyUI check", FAIL,
                 f"{detail}; {len(result.failures)} problem(s): run `envbuild check` for details")


def _manager(ctx: Context) -> Check:
    """Which Manager this deployment runs (pip package, legacy clone, none), and what would stop it installing."""
    from envbuild.comfy.layout import NO_ROUTE, PIP_ROUTE, manager_route
    from envbuild.comfy.manager import current_values, describe_route, locate, route_warnings

    config = ctx.deployment.config
    if config.comfyui is None:
        return Check("ComfyUI-Manager", SKIP, "no ComfyUI checkout here")
    route = manager_route(config)
    detail = describe_route(config, route)
    if route.kind == NO_ROUTE:
        return Check("ComfyUI-Manager", PASS, detail)
    values, version = None, None
    try:
        layout = locate(config)
        values, version = current_values(layout), layout.version
    except EnvbuildError:  # no user directory to look in: judged from envbuild.toml alone
        pass
    warnings = route_warnings(config, route, values, version if route.kind == PIP_ROUTE else None)
    if warnings:
        return Check("ComfyUI-Manager", WARN, f"{detail}; " + "; ".join(warnings))
    return Check("ComfyUI-Manager", PASS, detail)


def _indexes(ctx: Context) -> list[Check]:
    """Every index this deployment talks to, and where each setting came from; a short probe each."""
    deployment = ctx.deployment
    mirrors = deployment.mirrors
    checks = [Check("mirror setting", PASS, line) for line in mirrors.describe()]
    indexes = deployment.indexes(ctx.profile)
    targets: dict[str, str] = {}
    if indexes.torch:
        targets[indexes.torch] = "the torch index this deployment locks against"
    default = indexes.default or deployment.default_index or PYPI_SIMPLE
    targets.setdefault(default, "the default index")
    if mirrors.installs_through:
        for url, role in ((mirrors.pytorch, "PyTorch mirror (install)"), (mirrors.pypi, "PyPI mirror (install)")):
            if url:
                targets.setdefault(url, role)
    named = _lock_registries(ctx.folder)
    for url in sorted(named):
        targets.setdefault(url, "named in the committed lock")
    return checks + [_probe(url, role + (" (named in the lock)" if url in named else ""), mirrors.timeout)
                     for url, role in targets.items()]


def _lock_registries(folder: LockFolder) -> set[str]:
    from envbuild.pkgs.uvlock import read_uv_lock

    try:
        return read_uv_lock(folder.uv_lock).registries()
    except EnvbuildError:  # missing or corrupt: the lock checks say so
        return set()


def _probe(url: str, role: str, timeout: float | None) -> Check:
    """One GET with a short time limit and no retries: reachable or not, and how fast."""
    from envbuild.core.http.client import HttpFailure, probe

    try:
        status, elapsed = probe(url.rstrip("/") + "/", timeout=timeout or 5.0)
    except HttpFailure as exc:
        return Check("index reachable", WARN, f"{url} ({role}): {exc.reason}")
    if status >= 500:
        return Check("index reachable", WARN, f"{url} ({role}): HTTP {status}")
    # PyTorch's indexes answer 403/404 for their bare root; any answer means the host is reachable.
    return Check("index reachable", PASS, f"{url} ({role}): answered HTTP {status} in {elapsed:.2f} s")


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == FAIL for c in checks) else 0
