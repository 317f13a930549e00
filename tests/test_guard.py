"""The torch guard, proved with the real pip and the real uv against the loopback index.

ComfyUI-Manager installs node requirements into the running environment with `python -m pip`
or `python -m uv pip` (or `uv pip`). These tests do exactly that to a venv synced from a cu126
lock, with the environment `envbuild run` gives ComfyUI, and check the locked torch survives.
The fake PyPI serves a CPU `torch 2.1.0` (as the real one does) and the planted `torch 99`; the
fake PyTorch index serves planted `numpy`/`filelock 99`.
"""

from __future__ import annotations

import functools
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from envbuild.core.errors import ConfigError
from envbuild.deploy.deployment import load_deployment
from envbuild.pkgs.lockdir import CONSTRAINTS_NAME
from envbuild.torch.catalogue import load_catalogue
from envbuild.uv.guard import ensure_constraints, guard_environment, write_constraints
from tests.support.catalogue import Catalogue
from tests.support.deploy import Deployment, make_deployment, run_cli, torch_in_venv, venv_python
from tests.support.wheels import build_torch_wheel, build_wheel

FAKE_PIP = "pip-24.3.1-py3-none-any.whl"


def real_pip_wheel() -> Path:
    """A real pip wheel without the network: the one the standard library's ensurepip bundles, else the
    one Debian/Ubuntu keep in /usr/share/python-wheels (their Python strips ensurepip's), else the pip this
    test run has installed (a declared test dependency), packed back into a wheel."""
    import ensurepip

    for folder in (Path(ensurepip.__file__).parent / "_bundled", Path("/usr/share/python-wheels")):
        found = sorted(folder.glob("pip-*.whl"))
        if found:
            return found[-1]
    return _repacked_installed_pip()


@functools.lru_cache(maxsize=1)
def _repacked_installed_pip() -> Path:
    import importlib.metadata
    import tempfile
    import zipfile

    dist = importlib.metadata.distribution("pip")
    root = Path(str(dist.locate_file("")))
    files = [f for f in dist.files or () if not str(f).startswith("..") and "__pycache__" not in str(f)]
    record = next(f for f in files if str(f).endswith(".dist-info/RECORD"))
    wheel = Path(tempfile.mkdtemp(prefix="pip-wheel-")) / f"pip-{dist.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        kept = []
        for item in files:
            if item == record or str(item).endswith((".dist-info/INSTALLER", ".dist-info/REQUESTED",
                                                     ".dist-info/direct_url.json")):
                continue
            archive.write(root / item, str(item))
            kept.append(str(item))
        lines = [line for line in (root / record).read_text().splitlines() if line.split(",")[0] in kept]
        archive.writestr(str(record), "\n".join([*lines, f"{record},,"]) + "\n")
    return wheel


@pytest.fixture(scope="session")
def node_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("guard-wheels")
    return {
        "torch-cpu": build_torch_wheel(out, "2.1.0"),  # what PyPI would give a node asking torch==2.1.0
        "nodedep": build_wheel(out, "nodedep", "1.0", requires_dist=["torch>=2.0", "filelock"]),
    }


@pytest.fixture
def node_index(index_server: Catalogue, node_wheels: dict[str, Path]) -> Iterator[Catalogue]:
    """The standard index plus a real pip (the locked venv must run `python -m pip`) and node packages.

    The session index is reset after every test (conftest), which undoes these changes.
    """
    index_server.pypi.remove(FAKE_PIP)
    index_server.pypi.add(real_pip_wheel())
    for wheel in node_wheels.values():
        index_server.pypi.add(wheel)
    yield index_server


def synced_cu126(root: Path, env: dict[str, str]) -> Deployment:
    d = make_deployment(root, profiles=("cu126",))  # with the Manager: pip is in the lock
    for args in (["lock", "--profile", "cu126"], ["sync", "--profile", "cu126", "--venv", str(d.venv)]):
        result = run_cli(args, env=env, cwd=d.root)
        assert result.returncode == 0, result
    assert torch_in_venv(d.venv) == ("2.7.1+cu126", "12.6")
    return d


def guard_for(root: Path, folder: Path, profile: str, env: dict[str, str]) -> dict[str, str]:
    """What `run` gives ComfyUI: the guard with the indexes as the deployment at `root` resolves them
    from `env` (ENVBUILD_PYTORCH_INDEX, UV_DEFAULT_INDEX)."""
    if not (root / "envbuild.toml").exists():
        root.mkdir(parents=True, exist_ok=True)
        (root / "envbuild.toml").write_text("", encoding="utf-8")
    deployment = load_deployment(root, env)
    chosen = deployment.catalogue.get(profile)
    return guard_environment(folder, chosen, env, deployment.canonical_index(chosen), deployment.default_index)


def guarded(d: Deployment, env: dict[str, str], profile: str = "cu126") -> dict[str, str]:
    return {**env, **guard_for(d.root, d.locks / profile, profile, env)}


def pip(d: Deployment, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(env, PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return subprocess.run([str(venv_python(d.venv)), "-m", "pip", "install", *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def uv_pip(d: Deployment, env: dict[str, str], uv_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(uv_bin), "pip", "install", "--python", str(venv_python(d.venv)), *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def installed(d: Deployment, name: str) -> str | None:
    proc = subprocess.run([str(venv_python(d.venv)), "-c",
                           f"import importlib.metadata as m; print(m.version({name!r}))"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def test_lock_writes_constraints_pinning_the_locked_family(
    tmp_path: Path, uv_env: dict[str, str], index_server: Catalogue
) -> None:
    d = make_deployment(tmp_path / "site", profiles=("cu126", "nightly-cu132"))
    for profile in ("cu126", "nightly-cu132"):
        assert run_cli(["lock", "--profile", profile], env=uv_env, cwd=d.root).returncode == 0
    text = (d.locks / "cu126" / CONSTRAINTS_NAME).read_text()
    assert text.startswith("# Generated by envbuild from uv.lock for profile cu126; do not edit.\n")
    assert f"# torch family from: {index_server.pytorch_base}/cu126\n" in text
    pins = [line for line in text.splitlines() if not line.startswith("#")]
    assert pins == ["torch==2.7.1+cu126", "torchvision==0.22.1+cu126"]  # cu126 reaches torch 2.14: no torchaudio
    # The nightly's triton is pinned with it, and found on the nightly index's own page.
    nightly = (d.locks / "nightly-cu132" / CONSTRAINTS_NAME).read_text()
    assert "pytorch-triton==3.6.0+git11ec6354\n" in nightly and "torch==2.16.0.dev20261201+cu132\n" in nightly
    env = guarded(d, uv_env, "nightly-cu132")
    assert f"{index_server.pytorch_base}/nightly/cu132/pytorch-triton/" in env["PIP_FIND_LINKS"].split()
    # Deterministic: written again from the same uv.lock, the bytes are the same.
    before = (d.locks / "cu126" / CONSTRAINTS_NAME).read_bytes()
    write_constraints(d.locks / "cu126", load_catalogue().get("cu126"))
    assert (d.locks / "cu126" / CONSTRAINTS_NAME).read_bytes() == before


def test_node_install_of_another_torch_is_refused_by_pip_and_by_uv(
    tmp_path: Path, uv_env: dict[str, str], node_index: Catalogue, uv_bin: Path
) -> None:
    d = synced_cu126(tmp_path / "site", uv_env)
    plain = dict(uv_env, PIP_INDEX_URL=node_index.pypi_url)
    env = guarded(d, plain)
    assert env["PIP_CONSTRAINT"] == env["UV_CONSTRAINT"] == str((d.locks / "cu126" / CONSTRAINTS_NAME).resolve())

    # Without the guard, both tools would replace the CUDA torch with PyPI's CPU torch 2.1.0.
    assert "Would install torch-2.1.0" in pip(d, plain, "--dry-run", "torch==2.1.0").stdout
    assert "+ torch==2.1.0" in uv_pip(d, plain, uv_bin, "--dry-run", "torch==2.1.0").stderr

    refused = pip(d, env, "torch==2.1.0")
    assert refused.returncode != 0
    assert "torch==2.7.1+cu126" in refused.stdout + refused.stderr  # pip names the constraint
    refused = uv_pip(d, env, uv_bin, "torch==2.1.0")
    assert refused.returncode != 0
    assert "you require torch==2.1.0 and torch==2.7.1+cu126" in " ".join(refused.stderr.split())
    assert torch_in_venv(d.venv) == ("2.7.1+cu126", "12.6")


def test_node_needing_some_torch_installs_and_torch_stays_even_when_upgrading(
    tmp_path: Path, uv_env: dict[str, str], node_index: Catalogue, uv_bin: Path
) -> None:
    d = synced_cu126(tmp_path / "site", uv_env)
    plain = dict(uv_env, PIP_INDEX_URL=node_index.pypi_url)
    env = guarded(d, plain)
    # An eager upgrade without the guard would take the planted torch 99 from PyPI.
    eager = ("-U", "--upgrade-strategy", "eager", "nodedep")
    assert "torch-99.0.0" in pip(d, plain, "--dry-run", *eager).stdout

    done = pip(d, env, *eager)
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed(d, "nodedep") == "1.0"
    assert torch_in_venv(d.venv) == ("2.7.1+cu126", "12.6")
    # Only the torch family's pages of the PyTorch index are offered: its planted filelock 99 is not.
    assert installed(d, "filelock") == "3.16.1"

    done = uv_pip(d, env, uv_bin, "--upgrade", "nodedep")
    assert done.returncode == 0, done.stderr
    assert installed(d, "filelock") == "3.16.1" and torch_in_venv(d.venv)[0] == "2.7.1+cu126"
    # A forced reinstall needs the locked build itself: the guard lets uv find it, and only it.
    done = uv_pip(d, env, uv_bin, "--reinstall", "torch")
    assert done.returncode == 0, done.stderr
    assert "~ torch==2.7.1+cu126" in done.stderr
    assert torch_in_venv(d.venv) == ("2.7.1+cu126", "12.6")


# --- guard_environment without uv: synthetic locks -------------------------------------------

LOCK = textwrap.dedent("""\
    version = 1
    requires-python = ">=3.10"

    [[package]]
    name = "numpy"
    version = "2.1.0"
    source = {{ registry = "https://pypi.org/simple" }}

    [[package]]
    name = "torch"
    version = "{torch}"
    source = {{ registry = "{registry}" }}

    [[package]]
    name = "triton"
    version = "3.3.1"
    source = {{ registry = "https://pypi.org/simple" }}
    """)


def write_lock(folder: Path, *, torch: str, registry: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "uv.lock").write_text(LOCK.format(torch=torch, registry=registry), encoding="utf-8")
    return folder


def test_pypi_profile_gets_constraints_only_and_user_settings_are_kept(tmp_path: Path) -> None:
    folder = write_lock(tmp_path / "locks" / "cu126-pypi", torch="2.7.1", registry="https://pypi.org/simple")
    env = {"PIP_CONSTRAINT": "/etc/site-constraints.txt", "UV_DEFAULT_INDEX": "https://mirror.example/simple"}
    guard = guard_for(tmp_path, folder, "cu126-pypi", env)
    path = str((folder / CONSTRAINTS_NAME).resolve())
    assert guard == {
        "PIP_CONSTRAINT": f"/etc/site-constraints.txt {path}",
        "UV_CONSTRAINT": path,
        "PIP_INDEX_URL": "https://mirror.example/simple",  # pip looks where the lock came from
    }
    pins = [x for x in (folder / CONSTRAINTS_NAME).read_text().splitlines() if not x.startswith("#")]
    assert pins == ["torch==2.7.1", "triton==3.3.1"]  # PyPI's CUDA torch pins triton: guarded with it


def test_index_profile_offers_only_the_family_pages_of_the_resolved_index(tmp_path: Path) -> None:
    mirror = "http://mirror.local/whl"
    folder = write_lock(tmp_path / "cu126", torch="2.7.1+cu126", registry=f"{mirror}/cu126")
    guard = guard_for(tmp_path, folder, "cu126", {"ENVBUILD_PYTORCH_INDEX": mirror, "UV_FIND_LINKS": "/wheels"})
    assert guard["PIP_FIND_LINKS"] == f"{mirror}/cu126/torch/"  # triton came from PyPI: not from the index
    assert guard["UV_FIND_LINKS"] == f"/wheels,{mirror}/cu126/torch/"
    assert "PIP_INDEX_URL" not in guard and "PIP_EXTRA_INDEX_URL" not in guard and "UV_INDEX" not in guard


def test_constraints_are_refreshed_only_when_they_do_not_match_the_lock(tmp_path: Path) -> None:
    profile = load_catalogue().get("cu126")
    folder = write_lock(tmp_path / "cu126", torch="2.7.1+cu126", registry="https://download.pytorch.org/whl/cu126")
    path = ensure_constraints(folder, profile)  # a lock made before envbuild wrote constraints.txt
    stat = path.stat()
    assert ensure_constraints(folder, profile) == path and path.stat().st_mtime_ns == stat.st_mtime_ns
    path.write_text("torch\n")
    ensure_constraints(folder, profile)
    assert "torch==2.7.1+cu126\n" in path.read_text()


def test_forked_lock_pins_each_version_with_its_marker(tmp_path: Path) -> None:
    profile = load_catalogue().get("cu126-pypi")
    folder = tmp_path / "lock"
    folder.mkdir()
    (folder / "uv.lock").write_text(textwrap.dedent("""\
        version = 1
        [[package]]
        name = "torch"
        version = "2.7.1"
        source = { registry = "https://pypi.org/simple" }
        resolution-markers = ["sys_platform == 'linux'"]
        [[package]]
        name = "torch"
        version = "2.6.0"
        source = { registry = "https://pypi.org/simple" }
        resolution-markers = ["sys_platform == 'darwin'"]
        """), encoding="utf-8")
    pins = [x for x in write_constraints(folder, profile).read_text().splitlines() if not x.startswith("#")]
    assert pins == ["torch==2.6.0 ; (sys_platform == 'darwin')", "torch==2.7.1 ; (sys_platform == 'linux')"]


def test_a_path_with_spaces_is_refused_rather_than_silently_unguarded(tmp_path: Path) -> None:
    folder = write_lock(tmp_path / "my locks" / "cu126", torch="2.7.1+cu126", registry="https://x/whl/cu126")
    with pytest.raises(ConfigError, match="path with spaces"):
        guard_for(tmp_path, folder, "cu126", {})


def test_a_pip_wheel_is_found_where_ensurepip_bundles_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Debian/Ubuntu's Python strips ensurepip's wheels (the quick start on a stock Python failed here):
    the installed pip, packed back into a wheel, serves instead, and installs."""
    import subprocess
    import sys

    wheel = _repacked_installed_pip()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv_python(venv)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-deps",
                    "--quiet", str(wheel)], check=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    assert subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, text=True,
                          check=True).stdout.startswith("pip ")
