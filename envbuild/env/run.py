"""`envbuild run`: ComfyUI started in a profile's environment, with the torch guard.

`envbuild run` starts `<comfyui>/main.py` with the venv's own interpreter (no activation, no
`uv run`, which would sync ComfyUI's dependency-less pyproject into the venv), the torch guard in
its environment, and the deployment's --base-directory/--listen/--port (and --enable-manager for
the pip Manager). It refuses to start a
stale lock or an environment that does not hold the lock: a server that starts on the wrong
torch fails minutes later, on the first image.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from envbuild.core import runner
from envbuild.core.errors import ConfigError, VerifyError
from envbuild.deploy.deployment import Deployment
from envbuild.lock.trust import require_usable
from envbuild.pkgs.lockdir import CONSTRAINTS_NAME, LockFolder
from envbuild.settings.config import Config
from envbuild.torch.profile import TorchProfile
from envbuild.uv import names as uv_names
from envbuild.uv.command import Uv, package_changes, venv_python
from envbuild.uv.guard import guard_environment

log = logging.getLogger("envbuild.run")
# Variables that would make the child (or the uv/pip the Manager starts) use another environment.
_DROPPED_ENV = ("CONDA_PREFIX", "PYTHONHOME", uv_names.PROJECT_ENVIRONMENT)


@dataclass(frozen=True)
class Launch:
    """Everything `launch` needs; built and checked without starting anything."""

    profile: str
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]  # the child's complete environment
    env_set: Mapping[str, str]  # what envbuild set in it (shown with -v)
    constraints: Path
    warnings: tuple[str, ...] = ()
    generation: Path | None = None  # the generation the venv path pointed at: held (flock) while ComfyUI runs


def comfy_args(config: Config) -> list[str]:
    """ComfyUI's own flags from `[comfyui]`; ARGS given after them win (argparse keeps the last).

    `--enable-manager` when the Manager is the pip package of ComfyUI's manager_requirements.txt: core
    imports `comfyui_manager` only then (main.py, ComfyUI v0.4.0+). Never for a legacy clone, which loads
    as a custom node, and which core would block "by policy" with the flag set."""
    from envbuild.comfy.layout import manager_route

    args: list[str] = ["--enable-manager"] if manager_route(config).enable_flag else []
    if config.base_directory is not None:
        args += ["--base-directory", str(config.base_directory)]
    if config.listen is not None:
        args += ["--listen", config.listen]
    if config.port is not None:
        args += ["--port", str(config.port)]
    return args


def prepare_run(deployment: Deployment, profile: TorchProfile, venv: Path, args: Sequence[str] = ()) -> Launch:
    """Check lock and venv, then build the command line and the guarded environment."""
    config, env = deployment.config, deployment.env
    from envbuild.env.generations import current

    # Through the generation's real path: a later switch of the venv path does not change a live ComfyUI.
    link = venv.absolute()
    generation = current(link)
    venv = generation or link
    main = _main_py(config)
    folder = deployment.folder(profile)
    require_usable(deployment, profile, allow_unhashed=True,
                   then=f"then `envbuild sync --profile {profile.name}`")  # sync refused unhashed files
    python = venv_python(venv)
    extras = check_synced(deployment.uv, folder, profile, venv, python, link)
    guard = guard_environment(folder.path, profile, env, deployment.canonical_index(profile),
                              deployment.default_index)
    # `uv pip` (the Manager's uv mode) must install into this venv, whatever the user's shell points at.
    env_set = {**guard, "VIRTUAL_ENV": str(venv), uv_names.PYTHON: str(python)}
    child = {k: v for k, v in env.items() if k not in _DROPPED_ENV}
    child.update(env_set)
    child["PATH"] = os.pathsep.join([str(python.parent), env.get("PATH", "")]).rstrip(os.pathsep)
    warnings: tuple[str, ...] = ()
    if extras:
        warnings = ((f"{venv} also holds {len(extras)} package(s) the lock does not list ({', '.join(extras)}): "
                     "installed by a node? `envbuild lock` makes them part of the lock"),)
    missing = missing_models(deployment)
    if missing:
        warnings += (f"{len(missing)} pinned model(s) not in place ({', '.join(missing)}): `envbuild fetch` "
                     "downloads and verifies them",)
    argv = (str(python), str(main), *comfy_args(config), *args)
    return Launch(profile.name, argv, main.parent, child, env_set, folder.path / CONSTRAINTS_NAME, warnings,
                  generation)


def missing_models(deployment: Deployment) -> list[str]:
    """Pinned models whose file is not there (one stat each: `model verify` hashes)."""
    if deployment.config.models is None or not deployment.config.models.pins:
        return []
    from envbuild.env.models import model_path

    return [pin.name for pin in deployment.config.models.pins if not model_path(deployment, pin).is_file()]


def _main_py(config: Config) -> Path:
    if config.comfyui is None:
        raise ConfigError(config.source, "no ComfyUI checkout given",
                          hint="set [comfyui] path in envbuild.toml, or pass --comfyui PATH")
    main = config.comfyui / "main.py"
    if not main.is_file():
        raise ConfigError(config.source, f"{main} not found: is {config.comfyui} a ComfyUI checkout?",
                          hint="check [comfyui] path, or run `envbuild fetch` if [comfyui] git is set")
    return main


def check_synced(uv: Uv, folder: LockFolder, profile: TorchProfile, venv: Path, python: Path,
                  shown: Path) -> list[str]:
    """`uv sync --locked --dry-run`: offline and about 30 ms, and it compares every locked package
    (version and source), where reading torch alone would miss a node that replaced numpy.
    Packages the lock lacks are returned, not refused: nodes installed at runtime add them.
    `shown`: the venv path as the user names it (`venv` may be the generation it links to)."""
    hint = f"run `envbuild sync --profile {profile.name} --venv {shown}`"
    if not python.exists():
        raise VerifyError(f"no environment at {shown} (no {python})", hint=hint)
    from envbuild.uv.command import own_index_env  # a lock made through a PyPI mirror names its own default

    output = uv.sync(folder.path, venv, dry_run=True, stream=False, env_unset=own_index_env(folder))
    installs, removals = package_changes(output)
    if installs:
        listed = ", ".join(installs[:8]) + (f", … ({len(installs)} in all)" if len(installs) > 8 else "")
        raise VerifyError(f"{shown} does not hold the lock of profile {profile.name}: a sync would install {listed}",
                          hint=hint)
    return removals


def launch(plan: Launch) -> int:
    """Hand the terminal to ComfyUI.

    On POSIX the process becomes ComfyUI (`execve`): Ctrl-C, SIGTERM from systemd or
    `docker stop` reach the server itself, its exit status is the command's, and no envbuild
    process sits in between holding the terminal. Windows has no such exec, so there envbuild
    waits for the child and returns its exit status.
    """
    shown = " ".join(f"{k}={runner.redact(v)}" for k, v in sorted(plan.env_set.items()))
    log.info("$ %s %s (in %s)", shown, runner.format_argv(plan.argv), plan.cwd)
    sys.stdout.flush()
    sys.stderr.flush()
    if plan.generation is not None:  # kept across exec: the kernel drops it when ComfyUI ends
        from envbuild.env.generations import hold_in_use

        hold_in_use(plan.generation)
    if os.name == "posix":
        os.chdir(plan.cwd)
        os.execve(plan.argv[0], list(plan.argv), dict(plan.env))
    proc = runner.run(plan.argv, cwd=plan.cwd, env=plan.env, env_log=plan.env_set, capture=False, check=False)
    return proc.returncode
