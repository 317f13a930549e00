"""Shared pytest fixtures for envbuild's tests."""

from __future__ import annotations

# ============================================================================
# BEGIN test-support index fixtures (tests/support/). Keep this block intact;
# add other fixtures below the END marker.
# ============================================================================
import os
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.catalogue import Catalogue, build_standard_catalogue
from tests.support.index import IndexServer

# Variables that would let the developer's or CI's own setup leak into uv/pip runs.
_LEAKY_PREFIXES = ("UV_", "PIP_", "ENVBUILD_")  # a user's ENVBUILD_PYTORCH_MIRROR would fail the suite
_LEAKY_NAMES = ("VIRTUAL_ENV", "CONDA_PREFIX")

# The test tiers (pyproject markers): a test marked unit or cli keeps its mark; one that uses a fixture
# serving packages, uv or a subprocess environment is e2e; the rest is unit. `-m unit` runs in seconds.
_TIERS = {"unit", "cli", "e2e"}
_SLOW_MARKS = {"network", "realtorch", "container"}
_E2E_FIXTURES = {"uv_env", "index_server", "uv_bin", "env", "opencv_pypi", "registry", "manager_pypi", "site",
                 "deployment", "locked", "marks"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marks = {mark.name for mark in item.iter_markers()}
        if marks & _TIERS:
            continue
        uses = set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.e2e if marks & _SLOW_MARKS or uses & _E2E_FIXTURES else pytest.mark.unit)


# The session catalogue, so the per-test cleanup can reset it without forcing it to be built.
_ACTIVE_CATALOGUE: Catalogue | None = None


def _is_leaky(name: str) -> bool:
    return name.startswith(_LEAKY_PREFIXES) or name in _LEAKY_NAMES


def find_uv() -> Path:
    """The uv of this interpreter's environment (envbuild depends on the `uv` package), else PATH's.

    A missing uv fails loudly rather than skipping: these tests exist to drive the real binary.
    """
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "uv", Path(sys.executable).parent / "uv"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    try:
        from uv import find_uv_bin

        return Path(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found is None:
        pytest.fail("no uv binary: install the `uv` package into the test environment")
    return Path(found)


@pytest.fixture(scope="session")
def uv_bin() -> Path:
    """Path of the real uv binary the tests drive."""
    return find_uv()


@pytest.fixture(scope="session")
def index_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalogue]:
    """Fake PyPI (`/simple`) + fake download.pytorch.org (`/whl/<variant>`) on 127.0.0.1.

    Yields a `Catalogue`: `.url`, `.pypi_url`, `.pytorch_base`, `.server`
    (request log, faults), `.extra_index(prefix)`, `.torch_index(variant)`.
    """
    global _ACTIVE_CATALOGUE
    wheel_dir = tmp_path_factory.mktemp("index-wheels")
    with IndexServer() as server:
        catalogue = build_standard_catalogue(server, wheel_dir)
        _ACTIVE_CATALOGUE = catalogue
        try:
            yield catalogue
        finally:
            _ACTIVE_CATALOGUE = None


@pytest.fixture
def uv_env(tmp_path: Path, index_server: Catalogue, uv_bin: Path) -> dict[str, str]:
    """A complete, isolated environment for running envbuild/uv against the fake indexes."""
    env = {k: v for k, v in os.environ.items() if not _is_leaky(k)}
    env.update(
        {
            "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_DEFAULT_INDEX": index_server.pypi_url,
            "ENVBUILD_PYTORCH_INDEX": index_server.pytorch_base,
            "PIP_CONFIG_FILE": os.devnull,
            "UV_NO_PROGRESS": "1",
            "UV_PYTHON": sys.executable,
            # A developer's ~/.config/uv/uv.toml must not change what the tests lock.
            "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
            # envbuild's per-user verdict cache: per test, so runs never share a lock's verdict.
            "ENVBUILD_CACHE_DIR": str(tmp_path / "envbuild-cache"),
            # The fixture's uv first on PATH, so `uv` means the tested binary.
            "PATH": os.pathsep.join([str(uv_bin.parent), env.get("PATH", "")]),
        }
    )
    return env


@pytest.fixture(autouse=True)
def _isolate_package_tool_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep the machine's pip/uv configuration out of every test; reset the shared index after."""
    for name in list(os.environ):
        if name.startswith(_LEAKY_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "never")
    yield
    if _ACTIVE_CATALOGUE is not None:
        _ACTIVE_CATALOGUE.reset()


# ============================================================================
# END test-support index fixtures
# ============================================================================


@pytest.fixture
def env(uv_env: dict[str, str]) -> dict[str, str]:
    """The environment CLI tests run envbuild with (a module needing more defines its own `env`)."""
    return uv_env


@pytest.fixture
def opencv_pypi(index_server: Catalogue, tmp_path: Path) -> Catalogue:
    """Two cv2 builds on the loopback PyPI, and two tools that each need one of them (reset after the test)."""
    from tests.support.wheels import build_wheel

    out = tmp_path / "wheels"
    for name in ("opencv-python", "opencv-python-headless"):
        index_server.pypi.add(build_wheel(out, name, "4.10.0.84", import_name="cv2"))
    index_server.pypi.add(build_wheel(out, "cvtool", "1.0", requires_dist=("opencv-python>=4.5",)))
    index_server.pypi.add(build_wheel(out, "headtool", "1.0", requires_dist=("opencv-python-headless>=4.5",)))
    return index_server


# The pip Manager as ComfyUI v0.4.0+ pins it in manager_requirements.txt. Requires-Dist cut down from the
# real 4.2.2/4.3 wheels (research/comfy.md section 2: GitPython, PyGithub, transformers, ..., uv, chardet;
# 4.3 adds packaging and nh3) to what the loopback PyPI holds: uv and pyyaml.
MANAGER_VERSIONS = ("4.2.2", "4.3")


@pytest.fixture
def manager_pypi(index_server: Catalogue, tmp_path: Path) -> Catalogue:
    """`comfyui_manager` 4.2.2 and 4.3 on the loopback PyPI (reset after the test)."""
    from tests.support.wheels import build_wheel

    for version in MANAGER_VERSIONS:
        index_server.pypi.add(build_wheel(tmp_path / "manager-wheels", "comfyui_manager", version,
                                          requires_dist=("uv", "pyyaml")))
    return index_server
