"""Picking the profile for this machine through the real CLI: detect, --cuda auto, sync auto, doctor.

The machine has no GPU, so the tests play one: a fake `nvidia-smi` on PATH printing a real
card's output, or envbuild's ENVBUILD_CUDA_DRIVER_VERSION / ENVBUILD_GPU_COMPUTE_CAP overrides.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.support.deploy import Deployment, make_deployment, run_cli

RTX_4070 = dict(ENVBUILD_CUDA_DRIVER_VERSION="570.133.07", ENVBUILD_GPU_COMPUTE_CAP="8.9")
GTX_1080 = dict(ENVBUILD_CUDA_DRIVER_VERSION="535.183.01", ENVBUILD_GPU_COMPUTE_CAP="6.1")


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site")


def fake_nvidia_smi(folder: Path, query: str, header_cuda: str) -> Path:
    """An executable that answers like nvidia-smi: the CSV query, or the banner with "CUDA Version"."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    driver = query.split(", ")[1]
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f"  *--query-gpu*) printf '%s\\n' '{query}' ;;\n"
        f"  *) printf '| NVIDIA-SMI {driver}    Driver Version: {driver}    CUDA Version: {header_cuda}     |\\n' ;;\n"
        "esac\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


def test_detect_with_a_fake_nvidia_smi_recommends_and_explains(tmp_path: Path, uv_env: dict[str, str]) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", "NVIDIA GeForce RTX 5090, 575.57.08, 12.0", "12.9")
    env = dict(uv_env, PATH=f"{bin_dir}{os.pathsep}{uv_env['PATH']}")
    result = run_cli(["detect"], env=env, cwd=tmp_path)
    assert result.returncode == 0, result
    assert "gpu: nvidia NVIDIA GeForce RTX 5090 (sm_120, compute 12.0)" in result.stdout
    assert "nvidia driver: 575.57.08 (from nvidia-smi)" in result.stdout
    assert "recommended profile: cu128" in result.stdout
    assert "Blackwell, sm_120" in result.stdout and "needs cu128 or newer" in result.stdout
    data = json.loads(run_cli(["detect", "--json"], env=env, cwd=tmp_path).stdout)
    assert data["recommendation"]["profile"] == "cu128"
    assert data["machine"]["gpus"][0]["arch"] == "sm_120"
    assert sorted(data) == ["machine", "recommendation"]
    assert sorted(data["recommendation"]) == ["action", "fits", "profile", "reason"]


def test_detect_pypi_source_and_old_driver_says_what_to_do(tmp_path: Path, uv_env: dict[str, str]) -> None:
    env = dict(uv_env, **RTX_4070)
    result = run_cli(["detect", "--torch-source", "pypi"], env=env, cwd=tmp_path)
    assert "recommended profile: cu128-pypi" in result.stdout, result
    old = dict(uv_env, ENVBUILD_CUDA_DRIVER_VERSION="470.256.02", ENVBUILD_GPU_COMPUTE_CAP="7.0")
    result = run_cli(["detect"], env=old, cwd=tmp_path)
    assert "recommended profile: none" in result.stdout
    assert "upgrade the NVIDIA driver to ≥ 525.60.13" in result.stdout


def test_lock_cuda_auto_uses_the_recommendation(deployment: Deployment, uv_env: dict[str, str]) -> None:
    result = run_cli(["lock", "--cuda", "auto"], env=dict(uv_env, **RTX_4070), cwd=deployment.root)
    assert result.returncode == 0, result
    assert (deployment.locks / "cu128" / "uv.lock").is_file()
    result = run_cli(["lock", "--cuda", "auto"], env=dict(uv_env, ENVBUILD_CUDA_DRIVER_VERSION="470.256.02",
                                                         ENVBUILD_GPU_COMPUTE_CAP="7.0"), cwd=deployment.root)
    assert result.returncode == 7 and "no profile fits this machine" in result.stderr
    assert "525.60.13" in result.stderr and "Traceback" not in result.stderr


def test_sync_auto_picks_the_committed_lock_that_fits(deployment: Deployment, uv_env: dict[str, str]) -> None:
    for profile in ("cu126", "cu128"):
        assert run_cli(["lock", "--profile", profile], env=uv_env, cwd=deployment.root).returncode == 0
    venv = str(deployment.venv)
    # A Pascal card: cu128 builds carry no sm_6x kernels, so the cu126 lock is the one.
    result = run_cli(["sync", "--profile", "auto", "--venv", venv], env=dict(uv_env, **GTX_1080), cwd=deployment.root)
    assert result.returncode == 0, result
    assert "auto: chose cu126" in result.stdout and "(CUDA 12.6)" in result.stdout
    result = run_cli(["sync", "--profile", "auto", "--venv", venv], env=dict(uv_env, **RTX_4070), cwd=deployment.root)
    assert "auto: chose cu128" in result.stdout, result


def test_sync_auto_with_no_fitting_lock_lists_both_sides(deployment: Deployment, uv_env: dict[str, str]) -> None:
    assert run_cli(["lock", "--profile", "cu130"], env=uv_env, cwd=deployment.root).returncode == 0
    result = run_cli(["sync", "--profile", "auto"], env=dict(uv_env, **RTX_4070), cwd=deployment.root)
    assert result.returncode == 7, result
    assert "none of the committed locks (cu130) fits this machine" in result.stderr
    assert "profiles that would fit:" in result.stderr and "cu128" in result.stderr


def test_sync_warns_for_a_profile_the_machine_cannot_run_and_strict_refuses(
    deployment: Deployment, uv_env: dict[str, str]
) -> None:
    assert run_cli(["lock", "--profile", "cu128"], env=uv_env, cwd=deployment.root).returncode == 0
    gtx = dict(uv_env, **GTX_1080)
    result = run_cli(["sync", "--profile", "cu128", "--venv", str(deployment.venv)], env=gtx, cwd=deployment.root)
    assert result.returncode == 0, result
    assert "warning: this machine cannot run profile cu128" in result.stderr
    result = run_cli(["sync", "--profile", "cu128", "--strict", "--venv", str(deployment.root / "v2")], env=gtx,
                     cwd=deployment.root)
    assert result.returncode == 7 and "cannot run profile cu128" in result.stderr
    assert not (deployment.root / "v2").exists()


def test_a_broken_gpu_override_is_a_warning_for_sync_and_an_error_with_strict(
    deployment: Deployment, uv_env: dict[str, str]
) -> None:
    """The fit check is advice (it runs while uv installs); only --strict makes it a gate, before installing."""
    assert run_cli(["lock", "--profile", "cu128"], env=uv_env, cwd=deployment.root).returncode == 0
    broken = dict(uv_env, ENVBUILD_CUDA_DRIVER_VERSION="five-seventy")
    result = run_cli(["sync", "--profile", "cu128", "--venv", str(deployment.venv)], env=broken, cwd=deployment.root)
    assert result.returncode == 0, result
    assert "warning: could not tell whether this machine can run profile cu128" in result.stderr
    assert "'five-seventy' is not an NVIDIA driver version" in result.stderr
    result = run_cli(["sync", "--profile", "cu128", "--strict", "--venv", str(deployment.root / "v2")], env=broken,
                     cwd=deployment.root)
    assert result.returncode == 7 and "'five-seventy' is not an NVIDIA driver version" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (deployment.root / "v2").exists()


def test_doctor_pass_and_mismatch(deployment: Deployment, uv_env: dict[str, str]) -> None:
    for profile in ("cu126", "cu128"):
        assert run_cli(["lock", "--profile", profile], env=uv_env, cwd=deployment.root).returncode == 0
    venv = str(deployment.venv)
    gpu = dict(uv_env, FAKE_TORCH_CUDA_DEVICES="1", **RTX_4070)
    assert run_cli(["sync", "--profile", "cu126", "--venv", venv], env=gpu, cwd=deployment.root).returncode == 0
    result = run_cli(["doctor", "--profile", "cu126", "--venv", venv, "--json"], env=gpu, cwd=deployment.root)
    report = json.loads(result.stdout)
    assert result.returncode == 0, result
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses == {
        "uv": "pass", "lock present": "pass", "lock state": "pass", "venv matches lock": "pass",
        "venv generation": "pass", "torch build": "pass", "torch imports": "pass", "machine runs profile": "pass",
        "ComfyUI check": "skip", "ComfyUI-Manager": "pass", "index reachable": "pass"}
    manager = next(c["detail"] for c in report["checks"] if c["name"] == "ComfyUI-Manager")
    assert manager.startswith("legacy clone at data/custom_nodes/comfyui-manager (loaded as a custom node"), manager
    state = next(c["detail"] for c in report["checks"] if c["name"] == "lock state")
    assert state.startswith("current: ") and "only the audit ran" not in state, state
    probed = [c["detail"] for c in report["checks"] if c["name"] == "index reachable"]
    assert any("/whl/cu126" in d and "named in the lock" in d for d in probed), probed
    # The venv was built for cu126; asking about cu128 must fail on the torch build and the venv.
    result = run_cli(["doctor", "--profile", "cu128", "--venv", venv], env=gpu, cwd=deployment.root)
    assert result.returncode == 1
    assert "FAIL  torch build: profile cu128 wants CUDA 12.8, but torch 2.7.1+cu126 was built for CUDA 12.6" \
        in result.stdout
    assert "FAIL  venv matches lock: sync would change" in result.stdout
    # A GPU is detected but torch cannot use it: said plainly.
    no_device = dict(gpu, FAKE_TORCH_CUDA_DEVICES="0")
    result = run_cli(["doctor", "--profile", "cu126", "--venv", venv], env=no_device, cwd=deployment.root)
    assert result.returncode == 1 and "torch.cuda.is_available() is False" in result.stdout
