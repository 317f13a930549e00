"""CUDA torch from PyPI (`--torch-source pypi`, `[lock] torch-source`): no PyTorch index at all.

The loopback "PyPI" here carries a plain `torch 2.7.1` whose version.py says CUDA 12.6, as PyPI's
real 2.7.x wheels are CUDA 12.6 builds; the profile's `[pypi]` range must select it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli
from tests.support.wheels import build_family_wheel, build_torch_wheel, build_wheel


@pytest.fixture
def pypi_with_torch(index_server, tmp_path: Path) -> str:
    index = index_server.extra_index("pypi-cuda/simple")
    folder = tmp_path / "pypi-cuda"
    folder.mkdir()
    for entry in index_server.pypi.files():
        if entry.project in ("torch",):
            continue  # the planted torch 99 stays out: this index plays the real PyPI
        path = folder / entry.filename
        path.write_bytes(entry.data)
        index.add(path)
    for version, cuda in (("2.7.1", "12.6"), ("2.8.0", "12.8")):
        index.add(build_torch_wheel(folder, version, cuda=cuda))
    index.add(build_family_wheel(folder, "torchvision", "0.22.1", "2.7.1"))
    index.add(build_family_wheel(folder, "torchvision", "0.23.0", "2.8.0"))
    index.add(build_family_wheel(folder, "torchaudio", "2.7.1", "2.7.1"))
    index.add(build_family_wheel(folder, "torchaudio", "2.8.0", "2.8.0"))
    return index.url


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site")


def test_torch_source_pypi_locks_the_cuda_build_from_the_default_index(
    deployment: Deployment, uv_env: dict[str, str], pypi_with_torch: str
) -> None:
    env = dict(uv_env, UV_DEFAULT_INDEX=pypi_with_torch)
    result = run_cli(["lock", "--cuda", "12.6", "--torch-source", "pypi"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert "cu126-pypi: locked" in result.stdout
    versions = locked_versions(deployment.locks / "cu126-pypi" / "uv.lock")
    assert versions["torch"] == ("2.7.1", pypi_with_torch)  # 2.8.0 is a CUDA 12.8 build: out of range
    pyproject = (deployment.locks / "cu126-pypi" / "pyproject.toml").read_text()
    assert "tool.uv.index" not in pyproject and "tool.uv.sources" not in pyproject
    assert "torch family from the default index (PyPI's own torch builds)" in pyproject
    assert "sys_platform == \"linux\" and platform_machine == \"x86_64\"" in pyproject
    result = run_cli(["sync", "--profile", "cu126", "--torch-source", "pypi", "--venv", str(deployment.venv)],
                     env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert "torch 2.7.1 (CUDA 12.6)" in result.stdout
    readme = (deployment.locks / "README.md").read_text()
    assert "| `cu126-pypi` | 2.7.1 | " in readme and "| CUDA 12.6 |" in readme, readme


def test_config_key_selects_the_pypi_variant_and_unknown_source_is_an_error(
    deployment: Deployment, uv_env: dict[str, str], pypi_with_torch: str
) -> None:
    with (deployment.root / "envbuild.toml").open("a") as handle:
        handle.write('torch-source = "pypi"\n')  # still inside [lock]
    env = dict(uv_env, UV_DEFAULT_INDEX=pypi_with_torch)
    result = run_cli(["lock", "--cuda", "12.8"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert locked_versions(deployment.locks / "cu128-pypi" / "uv.lock")["torch"][0] == "2.8.0"
    result = run_cli(["lock", "--profile", "rocm6.3"], env=env, cwd=deployment.root)
    assert result.returncode == 2 and "profile rocm6.3 has no PyPI torch source" in result.stderr
    text = (deployment.root / "envbuild.toml").read_text().replace('torch-source = "pypi"', 'torch-source = "conda"')
    (deployment.root / "envbuild.toml").write_text(text)
    result = run_cli(["lock", "--cuda", "12.8"], env=env, cwd=deployment.root)
    assert result.returncode == 2 and "`lock.torch-source = \"conda\"` is not one of" in result.stderr


def test_the_pypi_variant_takes_its_companion_from_pypi_within_its_bound(
    deployment: Deployment, uv_env: dict[str, str], pypi_with_torch: str, index_server, tmp_path: Path
) -> None:
    """PyPI holds one xformers build per release, for the CUDA of PyPI's torch: cu126-pypi's [pypi.companions]
    bound keeps the releases built for 2.7.x (CUDA 12.6); a later one that only asks torch>=2.7 is another CUDA's."""
    pypi = index_server.server.index("pypi-cuda/simple")
    folder = tmp_path / "xformers"
    for version, torch in (("0.0.31", "torch==2.7.1"), ("0.0.36", "torch>=2.7")):
        pypi.add(build_wheel(folder, "xformers", version, requires_dist=(torch,)))
    deployment.add_node("node_x", "xformers\n")
    env = dict(uv_env, UV_DEFAULT_INDEX=pypi_with_torch, ENVBUILD_CACHE_DIR=str(tmp_path / "envbuild-cache"))
    result = run_cli(["lock", "--profile", "cu126-pypi"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    versions = locked_versions(deployment.locks / "cu126-pypi" / "uv.lock")
    assert versions["xformers"] == ("0.0.31", pypi_with_torch) and versions["torch"][0] == "2.7.1"
    pyproject = (deployment.locks / "cu126-pypi" / "pyproject.toml").read_text()
    assert "\"xformers<0.0.32,>=0.0.30\"" in pyproject and "tool.uv.sources" not in pyproject, pyproject
    # cu130-pypi lists none: PyPI has no xformers built for CUDA 13. Refused before uv, naming the node.
    refused = run_cli(["lock", "--profile", "cu130-pypi"], env=env, cwd=deployment.root)
    assert refused.returncode == 2, refused
    assert "`xformers` (node node_x): xformers is compiled against one torch and CUDA, and no index of profile " \
           "cu130-pypi has it" in refused.stderr, refused
