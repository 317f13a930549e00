"""Trust, round two, class 6: no package's build runs while locking (or syncing) unless the deployment
allows it by name. A node's dependency shipping only an sdist ran its build backend as root during
`node add`'s staged lock before; now envbuild renders uv's `no-build` and names the package with the fix."""

from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

import pytest

from tests.support.catalogue import Catalogue
from tests.support.deploy import Deployment, make_deployment, run_cli

# An in-tree PEP 517 backend (no build dependencies, so it builds offline) that leaves a mark when it runs.
_BACKEND = textwrap.dedent('''
    import base64, hashlib, os, zipfile

    NAME, VERSION = "buildme", "1.0"
    META = "Metadata-Version: 2.1\\nName: buildme\\nVersion: 1.0\\n"
    WHEEL = "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"


    def _mark():
        with open(os.path.join(os.environ["ENVBUILD_TEST_MARKS"], "built-" + str(os.getpid())), "w") as f:
            f.write("ran")


    def get_requires_for_build_wheel(config_settings=None):
        return []


    def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
        _mark()
        info = os.path.join(metadata_directory, NAME + "-" + VERSION + ".dist-info")
        os.makedirs(info)
        for name, text in (("METADATA", META), ("WHEEL", WHEEL)):
            with open(os.path.join(info, name), "w") as f:
                f.write(text)
        return os.path.basename(info)


    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        _mark()
        filename = NAME + "-" + VERSION + "-py3-none-any.whl"
        info = NAME + "-" + VERSION + ".dist-info/"
        files = {"buildme.py": "VALUE = 1\\n", info + "METADATA": META, info + "WHEEL": WHEEL}
        record = []
        with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as archive:
            for path, text in files.items():
                archive.writestr(path, text)
                digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
                record.append(path + ",sha256=" + digest + "," + str(len(text)))
            archive.writestr(info + "RECORD", "\\n".join(record + [info + "RECORD,,"]) + "\\n")
        return filename
''')


def _sdist(folder: Path) -> Path:
    files = {"pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n\n'
                               '[project]\nname = "buildme"\nversion = "1.0"\n',
             "backend.py": _BACKEND, "PKG-INFO": "Metadata-Version: 2.1\nName: buildme\nVersion: 1.0\n"}
    path = folder / "buildme-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"buildme-1.0/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def site(tmp_path: Path, index_server: Catalogue) -> Deployment:
    index_server.pypi.add_sdist(_sdist(tmp_path), "buildme", "1.0")
    deployment = make_deployment(tmp_path / "site", profiles=("cu126",))
    deployment.add_node("node_with_sdist_dep", "buildme\n")
    return deployment


@pytest.fixture
def marks(tmp_path: Path, uv_env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "marks"
    folder.mkdir()
    return folder, dict(uv_env, ENVBUILD_TEST_MARKS=str(folder))


def test_a_dependency_that_must_be_built_is_refused_naming_it_and_nothing_runs(
        site: Deployment, marks: tuple[Path, dict[str, str]]) -> None:
    folder, env = marks
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 6, result
    assert "buildme ships no wheel this lock can use" in result.stderr
    assert 'allow-build = ["buildme"]' in result.stderr
    assert list(folder.iterdir()) == []  # its build backend never ran
    assert not (site.locks / "cu126").exists()


def test_an_allowed_build_locks_and_installs(site: Deployment, marks: tuple[Path, dict[str, str]]) -> None:
    folder, env = marks
    with (site.root / "envbuild.toml").open("a") as handle:
        handle.write('allow-build = ["BuildMe"]\n')  # [lock] is the file's last table; names normalized
    locked = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert locked.returncode == 0, locked
    pyproject = (site.locks / "cu126" / "pyproject.toml").read_text()
    assert "no-build = true" in pyproject and 'no-binary-package = ["buildme"]' in pyproject
    synced = run_cli(["sync", "--profile", "cu126"], env=env, cwd=site.root)
    assert synced.returncode == 0, synced
    assert list(folder.iterdir())  # built, as allowed


def test_allow_build_names_are_checked_where_read(tmp_path: Path, uv_env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    with (site.root / "envbuild.toml").open("a") as handle:
        handle.write('allow-build = ["ok", "not a name; rm -rf /"]\n')
    result = run_cli(["lock", "--check", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert result.returncode == 2 and "`lock.allow-build`" in result.stderr and "is not a package name" in result.stderr


@pytest.mark.network
def test_insightface_from_its_sdist_locks_once_allowed(tmp_path: Path, uv_env: dict[str, str]) -> None:
    """insightface 0.7.3 (the version face nodes pin) is an sdist only: refused by default, locked when allowed
    (uv builds its metadata: ~25 s against PyPI with a cold cache). Lock only, against the real PyPI."""
    env = {k: v for k, v in uv_env.items() if k != "UV_DEFAULT_INDEX"}
    site = make_deployment(tmp_path / "site", requirements="torch\ninsightface==0.7.3\n", manager=None,
                           profiles=("cu130-pypi",), requires_python=">=3.10,<3.13")
    refused = run_cli(["lock", "--profile", "cu130-pypi"], env=env, cwd=site.root, timeout=600)
    assert refused.returncode == 6 and 'allow-build = ["insightface"]' in refused.stderr, refused
    with (site.root / "envbuild.toml").open("a") as handle:
        handle.write('allow-build = ["insightface"]\n')
    locked = run_cli(["lock", "--profile", "cu130-pypi"], env=env, cwd=site.root, timeout=900)
    assert locked.returncode == 0, locked
    assert 'name = "insightface"\nversion = "0.7.3"' in (site.locks / "cu130-pypi" / "uv.lock").read_text()
