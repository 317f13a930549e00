"""Today's catalogue against the real PyPI: torch 2.15 (CUDA 13.2) for today's ComfyUI requirements, aarch64
CUDA wheels in the lock, and torchaudio matched to torch's minor or refused. Lock only: uv reads metadata (PEP 658
or range requests), no wheel is downloaded. Deselect with `-m "not network"`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.deploy import locked_versions, make_deployment, run_cli

pytestmark = pytest.mark.network

TODAY = Path("/work/shared/fixtures/comfyui/requirements.txt")  # ComfyUI ≈ v0.37-0.39 (Oct 2026)
FIXTURE = TODAY if TODAY.is_file() else Path(__file__).parent / "fixtures" / "comfyui" / "requirements.txt"


def _pypi_env(uv_env: dict[str, str]) -> dict[str, str]:
    env = dict(uv_env)
    del env["UV_DEFAULT_INDEX"]  # the real PyPI
    return env


def _wheels(uv_lock: Path, name: str) -> list[str]:
    import tomllib

    data = tomllib.loads(uv_lock.read_text(encoding="utf-8"))
    return [w["url"].rsplit("/", 1)[1] for p in data["package"] if p["name"] == name for w in p.get("wheels", [])]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib; torch 2.15 needs Python >= 3.11 anyway")
def test_cu132_pypi_locks_torch_2_15_for_todays_comfyui_with_aarch64_cuda(tmp_path: Path,
                                                                          uv_env: dict[str, str]) -> None:
    # torch 2.15.0 requires Python >= 3.11 (no cp310 wheel): a >=3.10 deployment cannot take it.
    site = make_deployment(tmp_path / "site", requirements=FIXTURE.read_text(encoding="utf-8"), manager=None,
                           profiles=("cu132-pypi",), requires_python=">=3.11,<3.14")
    result = run_cli(["lock", "--profile", "cu132-pypi"], env=_pypi_env(uv_env), cwd=site.root, timeout=900)
    assert result.returncode == 0, result
    lock = site.locks / "cu132-pypi" / "uv.lock"
    versions = locked_versions(lock)
    assert versions["torch"][0].startswith("2.15.") and versions["torch"][1] == "https://pypi.org/simple"
    assert versions["torchvision"][0].startswith("0.29.")
    assert "torchaudio" not in versions
    # The aarch64 environment holds aarch64 wheels of torch and of its CUDA runtime (cuda-toolkit 13.2).
    assert any("manylinux_2_28_aarch64" in w for w in _wheels(lock, "torch"))
    runtime = _wheels(lock, "nvidia-cuda-runtime")
    assert any("aarch64" in w for w in runtime) and any("x86_64" in w for w in runtime), runtime
    assert versions["nvidia-cuda-runtime"][0].startswith("13.2")
    # ComfyUI's compiled packages are locked, never stripped, and judged for this profile.
    assert "comfy-kitchen" in versions and "comfy-aimdo" in versions
    assert "ComfyUI's compiled packages on cu132-pypi: comfy-aimdo: DynamicVRAM; comfy-kitchen: its CUDA kernels" \
        in result.stdout, result
    constraints = (site.locks / "cu132-pypi" / "constraints.txt").read_text(encoding="utf-8")
    assert f"torch=={versions['torch'][0]}" in constraints


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the deployment locks cu132-pypi, whose torch 2.15 needs Python >= 3.11")
def test_torchaudio_is_refused_before_uv_or_matched_to_torchs_minor(tmp_path: Path, uv_env: dict[str, str]) -> None:
    old = "torch\ntorchvision\ntorchaudio\nnumpy>=1.25.0\neinops\n"  # ComfyUI up to about v0.33 listed torchaudio
    site = make_deployment(tmp_path / "site", requirements=old, manager=None,
                           profiles=("cu132-pypi", "cu128-pypi"), requires_python=">=3.11,<3.13")
    env = _pypi_env(uv_env)
    refused = run_cli(["lock", "--profile", "cu132-pypi"], env=dict(env, ENVBUILD_UV="/nonexistent"), cwd=site.root)
    assert refused.returncode == 2, refused  # before uv: ENVBUILD_UV points nowhere
    assert "ComfyUI/requirements.txt:3: `torchaudio` (ComfyUI)" in refused.stderr, refused
    assert '[lock] exclude = ["torchaudio"]' in refused.stderr
    matched = run_cli(["lock", "--profile", "cu128-pypi"], env=env, cwd=site.root, timeout=900)
    assert matched.returncode == 0, matched
    versions = locked_versions(site.locks / "cu128-pypi" / "uv.lock")
    torch, audio = versions["torch"][0], versions["torchaudio"][0]
    assert torch.startswith("2.10.") and audio.split(".")[:2] == torch.split(".")[:2]
    pins = (site.locks / "cu128-pypi" / "constraints.txt").read_text(encoding="utf-8")
    assert f"torchaudio=={audio}" in pins
