"""Mirrors, for networks where download.pytorch.org (or PyPI) cannot be reached.

Loopback "mirrors" copy the canonical loopback indexes' files (or serve altered ones); the tests
prove both modes: locking through a mirror, and installing a canonical lock through one with
every byte checked against the lock's own sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from envbuild.core.errors import ConfigError
from envbuild.pkgs.uvlock import parse_uv_lock
from envbuild.settings.mirrors import Mirrors, install_rules, resolve_mirrors, rewrite_lock_text
from envbuild.torch.profile import CANONICAL_PYTORCH_BASE
from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli, torch_in_venv
from tests.support.wheels import build_torch_wheel


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site")


def copy_index(index_server, source, prefix: str, tmp_path: Path, *, skip: tuple[str, ...] = (),
               replace: dict[str, Path] | None = None, flat: bool = False):
    """A mirror of `source` at `/<prefix>/`: same files (or altered/missing ones), same file names."""
    mirror = index_server.extra_index(prefix)
    mirror.flat = flat
    folder = tmp_path / prefix.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    for entry in source.files():
        if entry.project in skip:
            continue
        path = (replace or {}).get(entry.project)
        if path is None:
            path = folder / entry.filename
            path.write_bytes(entry.data)
        mirror.add(path)
    return mirror


def mirror_torch(index_server, tmp_path: Path, variant: str = "cu126", **kwargs):
    return copy_index(index_server, index_server.torch_index(variant), f"mirror/whl/{variant}", tmp_path, **kwargs)


def mirror_pypi(index_server, tmp_path: Path):
    return copy_index(index_server, index_server.pypi, "mirror-pypi/simple", tmp_path)


# ---------------------------------------------------------------- settings (pure)

def test_settings_precedence_flag_env_team_user_with_origins(tmp_path: Path) -> None:
    user = tmp_path / "user.toml"
    user.write_text('[mirrors]\npytorch = "https://user.example/whl"\npypi = "https://user.example/simple"\n'
                    'timeout = 9\n')
    env = {"ENVBUILD_USER_CONFIG": str(user), "ENVBUILD_PYPI_MIRROR": "https://env.example/simple"}
    team = {"pytorch": "https://team.example/whl"}
    mirrors = resolve_mirrors(team, tmp_path / "envbuild.toml", env, {"pytorch-layout": "flat"})
    assert mirrors.pytorch == "https://team.example/whl"
    assert mirrors.pypi == "https://env.example/simple"
    assert mirrors.timeout == 9 and mirrors.pytorch_layout == "flat"
    assert mirrors.origins == {"pytorch": str(tmp_path / "envbuild.toml"), "pypi": "ENVBUILD_PYPI_MIRROR",
                               "timeout": str(user), "pytorch-layout": "flag"}
    # A mirror the team committed is locked through; one from this machine only installs through.
    assert mirrors.mode == "lock"
    assert resolve_mirrors({}, None, env).mode == "install"
    flagged = resolve_mirrors(team, tmp_path / "envbuild.toml", env, {"pytorch": "https://f.example", "mode": "install"})
    assert flagged.pytorch == "https://f.example" and flagged.mode == "install"
    assert "mirror pypi = https://env.example/simple (from ENVBUILD_PYPI_MIRROR)" in mirrors.describe()


@pytest.mark.parametrize(("team", "message"), [
    ({"pytorch-layout": "zigzag", "pytorch": "https://m"}, "layout `zigzag`"),
    ({"mode": "sometimes", "pytorch": "https://m"}, "mode `sometimes`"),
    ({"pytorch": "mirror.example/whl"}, "must be an http(s) URL"),
    ({"timeout": "soon", "pytorch": "https://m"}, "timeout must be a number"),
])
def test_bad_mirror_settings_are_errors(team: dict[str, str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_mirrors(team, tmp_path / "envbuild.toml", {"ENVBUILD_USER_CONFIG": str(tmp_path / "none")})


def test_rewrite_keeps_hashes_and_maps_pypi_files(tmp_path: Path) -> None:
    lock = (
        '[[package]]\nname = "torch"\nversion = "2.7.1+cu126"\n'
        'source = { registry = "https://download.pytorch.org/whl/cu126" }\n'
        'wheels = [{ url = "https://download.pytorch.org/whl/cu126/torch-2.7.1%2Bcu126-cp312.whl", '
        'hash = "sha256:aa" }, { url = "https://download-r2.pytorch.org/whl/cu126/torch-2.7.1%2Bcu126-cp313.whl", '
        'hash = "sha256:cc" }]\n\n[[package]]\nname = "six"\nversion = "1.17.0"\n'
        'source = { registry = "https://pypi.org/simple" }\n'
        'wheels = [{ url = "https://files.pythonhosted.org/packages/b7/ce/six-1.17.0.whl", hash = "sha256:bb" }]\n'
    )
    mirrors = Mirrors(pytorch="https://mirrors.example.cn/pytorch-wheels", pypi="https://pypi.example.cn/simple")
    out = rewrite_lock_text(lock, install_rules(parse_uv_lock(lock, "uv.lock"), mirrors, CANONICAL_PYTORCH_BASE))
    assert 'url = "https://mirrors.example.cn/pytorch-wheels/cu126/torch-2.7.1%2Bcu126-cp312.whl"' in out
    assert 'url = "https://mirrors.example.cn/pytorch-wheels/cu126/torch-2.7.1%2Bcu126-cp313.whl"' in out
    assert 'registry = "https://pypi.example.cn/simple"' in out
    assert 'url = "https://pypi.example.cn/packages/b7/ce/six-1.17.0.whl"' in out
    assert out.count("sha256:aa") == 1 and out.count("sha256:bb") == 1


# ---------------------------------------------------------------- install a canonical lock through a mirror

def test_canonical_index_down_mirror_up_sync_works(deployment: Deployment, uv_env: dict[str, str],
                                                  index_server, tmp_path: Path) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    canonical_lock = (deployment.locks / "cu126" / "uv.lock").read_bytes()
    mirror_torch(index_server, tmp_path)
    mirror_pypi(index_server, tmp_path)
    index_server.server.fail("/whl/", 503)
    index_server.server.fail("/simple/", 503)
    env = dict(uv_env, UV_CACHE_DIR=str(tmp_path / "fresh-cache"))  # nothing may come from a warm cache
    result = run_cli(["-v", "sync", "--profile", "cu126", "--venv", str(deployment.venv),
                      "--mirror", f"{index_server.url}/mirror/whl", "--pypi-mirror", f"{index_server.url}/mirror-pypi/simple"],
                     env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert torch_in_venv(deployment.venv) == ("2.7.1+cu126", "12.6")
    assert "mirror pytorch = " in result.stderr and "(from flag)" in result.stderr
    assert (deployment.locks / "cu126" / "uv.lock").read_bytes() == canonical_lock  # the lock stays canonical
    fetched = [path for _, path in index_server.server.requests if path.endswith(".whl")]
    assert fetched and all(path.startswith(("/mirror/whl/", "/mirror-pypi/simple/")) for path in fetched)


def test_a_mirror_serving_other_bytes_fails_on_the_locks_hash_and_installs_nothing(
    deployment: Deployment, uv_env: dict[str, str], index_server, tmp_path: Path
) -> None:
    for profile in ("cu126", "cu128"):
        assert run_cli(["lock", "--profile", profile], env=uv_env, cwd=deployment.root).returncode == 0
    assert run_cli(["sync", "--profile", "cu126", "--venv", str(deployment.venv)], env=uv_env,
                   cwd=deployment.root).returncode == 0
    # The mirror's torch has the same file name but other bytes; its own listing carries the right
    # sha256 *of those bytes*, so only the lock's hash can catch it.
    evil = build_torch_wheel(tmp_path / "evil", "2.8.0+cu128", cuda="12.8", requires_dist=("filelock",))
    mirror = mirror_torch(index_server, tmp_path, "cu128", replace={"torch": evil})
    assert mirror.get(evil.name).listed_sha256 == hashlib.sha256(evil.read_bytes()).hexdigest()
    locked = json.dumps(locked_versions(deployment.locks / "cu128" / "uv.lock")["torch"])
    mirror_pypi(index_server, tmp_path)
    env = dict(uv_env, UV_CACHE_DIR=str(tmp_path / "fresh-cache"))
    result = run_cli(["sync", "--profile", "cu128", "--venv", str(deployment.venv),
                      "--mirror", f"{index_server.url}/mirror/whl", "--pypi-mirror", f"{index_server.url}/mirror-pypi/simple"],
                     env=env, cwd=deployment.root)
    assert result.returncode == 5, result
    assert "hash mismatch" in result.stderr.lower() and "torch" in result.stderr, locked
    assert f"{index_server.url}/mirror/whl/cu128/files/torch-2.8.0%2Bcu128" in result.stderr
    assert "nothing was installed" in result.stderr
    lock_text = (deployment.locks / "cu128" / "uv.lock").read_text()
    evil_hash = hashlib.sha256(evil.read_bytes()).hexdigest()
    assert evil_hash in result.stderr and evil_hash not in lock_text
    assert torch_in_venv(deployment.venv) == ("2.7.1+cu126", "12.6")  # the old venv is untouched


def test_a_mirror_missing_a_file_fails_naming_the_url(deployment: Deployment, uv_env: dict[str, str],
                                                       index_server, tmp_path: Path) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    mirror_torch(index_server, tmp_path, skip=("torchvision",))
    env = dict(uv_env, UV_CACHE_DIR=str(tmp_path / "fresh-cache"))
    result = run_cli(["sync", "--profile", "cu126", "--venv", str(deployment.venv),
                      "--mirror", f"{index_server.url}/mirror/whl"], env=env, cwd=deployment.root)
    assert result.returncode == 6, result
    assert f"{index_server.url}/mirror/whl/cu126/files/torchvision-0.22.1" in result.stderr
    assert "404" in result.stderr and "Traceback" not in result.stderr


def test_a_slow_mirror_past_the_timeout_fails_clearly(deployment: Deployment, uv_env: dict[str, str],
                                                      index_server, tmp_path: Path) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    mirror_torch(index_server, tmp_path)
    index_server.server.delay("/mirror/whl/", 4)
    env = dict(uv_env, UV_CACHE_DIR=str(tmp_path / "fresh-cache"), ENVBUILD_MIRROR_TIMEOUT="1", UV_HTTP_RETRIES="0")
    result = run_cli(["sync", "--profile", "cu126", "--venv", str(deployment.venv),
                      "--mirror", f"{index_server.url}/mirror/whl"], env=env, cwd=deployment.root, timeout=120)
    assert result.returncode == 6, result
    assert "timed out" in result.stderr and "/mirror/whl/cu126/" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- lock through a mirror

def test_team_mirror_in_envbuild_toml_locks_through_it(deployment: Deployment, uv_env: dict[str, str],
                                                       index_server, tmp_path: Path) -> None:
    mirror_torch(index_server, tmp_path)
    mirror_pypi(index_server, tmp_path)
    index_server.server.fail("/whl/", 503)
    with (deployment.root / "envbuild.toml").open("a") as handle:
        handle.write(f'\n[mirrors]\npytorch = "{index_server.url}/mirror/whl"\n'
                     f'pypi = "{index_server.url}/mirror-pypi/simple"\n')
    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    versions = locked_versions(deployment.locks / "cu126" / "uv.lock")
    assert versions["torch"] == ("2.7.1+cu126", f"{index_server.url}/mirror/whl/cu126")
    assert versions["six" if "six" in versions else "numpy"][1] == f"{index_server.url}/mirror-pypi/simple"
    pyproject = (deployment.locks / "cu126" / "pyproject.toml").read_text()
    assert 'name = "pypi-mirror"' in pyproject and "default = true" in pyproject
    result = run_cli(["sync", "--profile", "cu126", "--venv", str(deployment.venv)], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert torch_in_venv(deployment.venv)[1] == "12.6"


def test_flat_mirror_locks_through_a_find_links_page(deployment: Deployment, uv_env: dict[str, str],
                                                     index_server, tmp_path: Path) -> None:
    mirror_torch(index_server, tmp_path, flat=True)
    env = dict(uv_env, ENVBUILD_PYTORCH_MIRROR=f"{index_server.url}/mirror/whl", ENVBUILD_PYTORCH_MIRROR_LAYOUT="flat",
               ENVBUILD_MIRROR_MODE="lock")
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    pyproject = (deployment.locks / "cu126" / "pyproject.toml").read_text()
    assert 'format = "flat"' in pyproject and f"{index_server.url}/mirror/whl/cu126" in pyproject
    assert locked_versions(deployment.locks / "cu126" / "uv.lock")["torch"][0] == "2.7.1+cu126"
    assert run_cli(["sync", "--profile", "cu126", "--venv", str(deployment.venv)], env=env,
                   cwd=deployment.root).returncode == 0
    assert torch_in_venv(deployment.venv)[1] == "12.6"
    # Without the mirror setting the lock no longer matches what this machine would lock: said plainly.
    result = run_cli(["sync", "--profile", "cu126", "--venv", str(deployment.venv)], env=uv_env, cwd=deployment.root)
    assert result.returncode == 4 and "the torch index changed" in result.stderr


def test_user_file_mirror_installs_but_never_enters_the_committed_lock(
    deployment: Deployment, uv_env: dict[str, str], index_server, tmp_path: Path
) -> None:
    mirror_torch(index_server, tmp_path)
    user = tmp_path / "user-config.toml"
    user.write_text(f'[mirrors]\npytorch = "{index_server.url}/mirror/whl"\n')
    env = dict(uv_env, ENVBUILD_USER_CONFIG=str(user))
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    committed = ""
    for name in ("pyproject.toml", "uv.lock", "envbuild-lock.json"):
        committed += (deployment.locks / "cu126" / name).read_text()
    assert "/mirror/" not in committed
    index_server.server.fail("/whl/", 503)
    result = run_cli(["-v", "sync", "--profile", "cu126", "--venv", str(deployment.venv)],
                     env=dict(env, UV_CACHE_DIR=str(tmp_path / "fresh")), cwd=deployment.root)
    assert result.returncode == 0, result
    assert f"(from {user})" in result.stderr


def test_a_mirror_password_is_never_printed_by_doctor_or_sync(deployment: Deployment, uv_env: dict[str, str],
                                                               index_server, tmp_path: Path) -> None:
    """A machine's mirror with credentials (mode install: never written anywhere) shows as `***` in every
    line envbuild prints or logs: doctor's settings and probes, and `sync -v`'s commands."""
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    mirror_torch(index_server, tmp_path)
    with_password = index_server.url.replace("http://", "http://bob:s3cr3t@") + "/mirror/whl"
    env = dict(uv_env, ENVBUILD_PYTORCH_MIRROR=with_password, UV_CACHE_DIR=str(tmp_path / "fresh-cache"))
    doctor = run_cli(["doctor", "--profile", "cu126", "--no-import"], env=env, cwd=deployment.root)
    assert "mirror pytorch = http://***@" in doctor.output, doctor
    synced = run_cli(["-vv", "sync", "--profile", "cu126", "--venv", str(deployment.venv)], env=env,
                     cwd=deployment.root)
    assert synced.returncode == 0, synced
    assert "***@" in synced.stderr, synced
    for result in (doctor, synced):
        assert "s3cr3t" not in result.output, result
