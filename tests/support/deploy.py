"""Small fake ComfyUI deployments for end-to-end tests, and a runner for the real CLI.

The CLI runs as its own process (`python -m envbuild`), exactly as a user starts it, so every
test below goes through click, the real uv binary and the loopback index.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_COMFY_REQUIREMENTS = """\
torch
torchsde
torchvision
numpy>=1.25.0
einops
pyyaml
Pillow
requests
"""


@dataclass
class Deployment:
    root: Path

    @property
    def comfyui(self) -> Path:
        return self.root / "ComfyUI"

    @property
    def nodes(self) -> Path:
        return self.root / "data" / "custom_nodes"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def venv(self) -> Path:
        return self.root / ".venv"

    def add_node(self, name: str, requirements: str) -> Path:
        node = self.nodes / name
        node.mkdir(parents=True, exist_ok=True)
        (node / "requirements.txt").write_text(textwrap.dedent(requirements), encoding="utf-8")
        (node / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n", encoding="utf-8")
        return node

    def write_config(self, text: str) -> None:
        (self.root / "envbuild.toml").write_text(textwrap.dedent(text), encoding="utf-8")

    def snapshot_locks(self) -> dict[str, str]:
        """Every file under locks/ with its sha256: to prove nothing was touched."""
        if not self.locks.exists():
            return {}
        return {
            str(p.relative_to(self.locks)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.locks.rglob("*"))
            # envbuild's scratch (write locks, an update's journal) is git-ignored; its .gitignore is not
            if p.is_file() and (p.name == ".gitignore" or not p.relative_to(self.locks).parts[0].startswith("."))
        }


def make_deployment(
    root: Path, *, requirements: str = DEFAULT_COMFY_REQUIREMENTS, manager: str | None = "pyyaml\nrequests\n",
    profiles: tuple[str, ...] = ("cu126", "cu128"), requires_python: str = ">=3.10",
    manager_requirements: str | None = None,
) -> Deployment:
    """ComfyUI checkout + data dir with the Manager (optional) and an envbuild.toml.

    `manager`: the legacy clone's requirements.txt (custom_nodes/comfyui-manager); `manager_requirements`:
    the checkout's manager_requirements.txt, as ComfyUI v0.4.0+ ships it (the pip Manager)."""
    deployment = Deployment(root)
    deployment.comfyui.mkdir(parents=True)
    (deployment.comfyui / "requirements.txt").write_text(requirements, encoding="utf-8")
    if manager_requirements is not None:
        (deployment.comfyui / "manager_requirements.txt").write_text(manager_requirements, encoding="utf-8")
    (deployment.comfyui / "main.py").write_text("print('ComfyUI')\n", encoding="utf-8")
    deployment.nodes.mkdir(parents=True)
    if manager is not None:
        deployment.add_node("comfyui-manager", manager)
    profile_list = ", ".join(f'"{p}"' for p in profiles)
    deployment.write_config(f"""\
        [comfyui]
        path = "ComfyUI"
        base-directory = "data"

        [lock]
        requires-python = "{requires_python}"
        profiles = [{profile_list}]
        """)
    return deployment


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:  # shown in full by pytest when an assertion on a Result fails
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_cli(args: list[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 180) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "envbuild", *args], cwd=cwd, env=dict(env), capture_output=True,
        text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def invoke_cli(args: list[str], *, env: Mapping[str, str], cwd: Path) -> Result:
    """The in-process tier: the real click group through CliRunner, for everything that ends before uv or
    git runs (a refusal, a parse error). `env` replaces the environment for the call, as `run_cli`'s does."""
    import os

    from click.testing import CliRunner

    from envbuild.cli import cli

    runner = CliRunner()
    unset = {name: None for name in os.environ if name not in env}
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        outcome = runner.invoke(cli, args, env={**unset, **env}, prog_name="envbuild")
    finally:
        os.chdir(previous)
    if outcome.exception is not None and not isinstance(outcome.exception, SystemExit):
        raise outcome.exception
    return Result(outcome.exit_code, outcome.stdout, outcome.stderr)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def torch_in_venv(venv: Path) -> tuple[str, str | None]:
    """Import the installed torch for real and report (version, cuda)."""
    proc = subprocess.run(
        [str(venv_python(venv)), "-c", "import torch; print(torch.__version__); print(torch.version.cuda)"],
        capture_output=True, text=True, check=True,
    )
    version, cuda = proc.stdout.split()
    return version, None if cuda == "None" else cuda


def locked_versions(uv_lock: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, source registry URL) from a uv.lock, without envbuild's own code."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - 3.10
        import tomlkit as tomllib  # type: ignore[no-redef]
    data = tomllib.loads(uv_lock.read_text(encoding="utf-8"))
    result = {}
    for package in data["package"]:
        source = package.get("source", {})
        result[package["name"]] = (package["version"], source.get("registry", source.get("virtual", "")))
    return result
