"""The real-node corpus (tests/data/real_nodes: 28 of the most installed custom nodes' requirement files,
copied from their repositories at the commits in its SOURCES.md) locked with the shipped ComfyUI and pip
Manager requirements (deploy/ComfyUI) against the real PyPI, through the real CLI.

Lock only: uv reads metadata (PEP 658 or range requests), no wheel is installed; each test has its own
uv cache under tmp_path. Four nodes cannot be locked with today's ComfyUI, each for its own reason, and
are left out with `[nodes] exclude` as a user would:
- ComfyUI-Florence2 (`transformers<=4.49.0`) and was-node-suite-comfyui (`transformers==4.26.1`) against
  ComfyUI's `transformers>=4.50.3`: refused before uv, naming file:line and the node;
- ComfyUI_LayerStyle against itself: torchscale needs fairscale==0.4.0, image-reward>=1.1 fairscale==0.4.13,
  so uv falls back to image-reward 1.0, an sdist whose setup.py imports pkg_resources (gone in setuptools 82);
- ComfyUI-Frame-Interpolation: taichi has no Linux aarch64 wheel, and the -pypi profiles lock aarch64 too.
The last two fail in uv, whose message names only the generated project: envbuild's hint names the node's
file:line and `--exclude-node`.
Deselect the network tests with `-m "not network"`.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parent / "data" / "real_nodes"
SHIPPED = ROOT / "deploy" / "ComfyUI"
PROFILES = ("cu132-pypi", "cu130-pypi")
CONFLICTING = ("ComfyUI-Florence2", "was-node-suite-comfyui")
UNLOCKABLE = ("ComfyUI_LayerStyle", "ComfyUI-Frame-Interpolation")
CV2 = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}
ONNXRUNTIME = {"onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
               "onnxruntime-rocm", "onnxruntime-qnn"}


def _corpus_deployment(root: Path, exclude: tuple[str, ...]) -> Deployment:
    """The shipped ComfyUI (its requirements and manager_requirements.txt) with the 28 nodes in custom_nodes."""
    # Python 3.13 is left out: the nodes' numpy<2 caps meet numpy 1.26.4, which ships no cp313 wheel, and
    # envbuild builds nothing it is not allowed to (numpy would be refused, named, with that fix).
    site = make_deployment(root, requirements=(SHIPPED / "requirements.txt").read_text(encoding="utf-8"),
                           manager=None, profiles=PROFILES, requires_python=">=3.11,<3.13",
                           manager_requirements=(SHIPPED / "manager_requirements.txt").read_text(encoding="utf-8"))
    shutil.rmtree(site.nodes)
    shutil.copytree(CORPUS, site.nodes, ignore=shutil.ignore_patterns("SOURCES.md"))
    _exclude(site, exclude)
    return site


# The corpus's packages that ship only a source distribution, whose build a user allows by name:
# fvcore (comfyui_controlnet_aux) and pyamdgpuinfo (ComfyUI-Crystools).
ALLOWED_BUILDS = ("fvcore", "pyamdgpuinfo")


def _allow_builds(site: Deployment) -> None:
    config = site.root / "envbuild.toml"
    listed = ", ".join(f'"{name}"' for name in ALLOWED_BUILDS)
    config.write_text(config.read_text(encoding="utf-8").replace("[lock]\n", f"[lock]\nallow-build = [{listed}]\n", 1),
                      encoding="utf-8")


def _exclude(site: Deployment, names: tuple[str, ...]) -> None:
    config = site.root / "envbuild.toml"
    text = config.read_text(encoding="utf-8").split("\n[nodes]\n")[0]
    listed = ", ".join(f'"{name}"' for name in names)
    config.write_text(f"{text}\n[nodes]\nexclude = [{listed}]\n", encoding="utf-8")


def _pypi_env(uv_env: dict[str, str]) -> dict[str, str]:
    env = dict(uv_env)
    del env["UV_DEFAULT_INDEX"]  # the real PyPI
    return env


def test_corpus_has_28_nodes_each_with_a_file_a_lock_reads() -> None:
    nodes = sorted(p for p in CORPUS.iterdir() if p.is_dir())
    assert len(nodes) == 28
    for node in nodes:
        assert (node / "requirements.txt").is_file() or (node / "pyproject.toml").is_file(), node.name
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    files = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file() and p.parent != CORPUS)
    for file in files:  # every copied file has its row: folder | repository | path | commit
        folder, path = file.split("/", 1)
        assert f"| {folder} | " in sources and f" | {path} | " in sources, file


def test_corpus_conflicts_with_comfyui_are_refused_before_uv_naming_file_line_and_node(
        tmp_path: Path, uv_env: dict[str, str]) -> None:
    env = dict(uv_env, ENVBUILD_UV="/nonexistent")  # refused before uv: no uv, no network
    site = _corpus_deployment(tmp_path / "site", exclude=())
    first = run_cli(["lock", "--profile", "cu132-pypi"], env=env, cwd=site.root)
    assert first.returncode != 0, first
    assert "transformers>=4.50.3 from ComfyUI/requirements.txt:9 (ComfyUI)" in first.stderr, first
    assert ("transformers>=4.39.0,<=4.49.0 from data/custom_nodes/ComfyUI-Florence2/requirements.txt:1 "
            "(node ComfyUI-Florence2)") in first.stderr, first
    assert '[nodes] exclude = ["ComfyUI-Florence2"]' in first.stderr
    _exclude(site, ("ComfyUI-Florence2",))
    second = run_cli(["lock", "--profile", "cu132-pypi"], env=env, cwd=site.root)
    assert second.returncode != 0, second
    assert ("transformers==4.26.1 from data/custom_nodes/was-node-suite-comfyui/requirements.txt:17 "
            "(node was-node-suite-comfyui)") in second.stderr, second
    assert not site.locks.exists()


@pytest.mark.network
@pytest.mark.skipif(sys.version_info < (3, 11), reason="torch 2.15 (cu132-pypi) needs Python >= 3.11")
def test_corpus_locks_for_cu132_and_cu130_pypi_with_one_cv2_and_one_onnxruntime(
        tmp_path: Path, uv_env: dict[str, str]) -> None:
    env = _pypi_env(uv_env)
    site = _corpus_deployment(tmp_path / "site", exclude=(*CONFLICTING, *UNLOCKABLE))
    refused = run_cli(["lock", "--profile", "cu132-pypi"], env=env, cwd=site.root, timeout=900)
    assert refused.returncode == 6 and "ships no wheel this lock can use" in refused.stderr, refused
    assert any(f'allow-build = ["{name}"]' in refused.stderr for name in ALLOWED_BUILDS), refused
    _allow_builds(site)
    # The two that uv cannot lock, each shown failing on its own before it is left out.
    _exclude(site, (*CONFLICTING, "ComfyUI-Frame-Interpolation"))
    layerstyle = run_cli(["lock", "--profile", "cu132-pypi"], env=env, cwd=site.root, timeout=900)
    # image-reward 1.0 (the only release fairscale's pins leave) ships no wheel: refused, and who asks is named.
    assert layerstyle.returncode != 0 and 'allow-build = ["image-reward"]' in layerstyle.stderr, layerstyle
    assert ("`image-reward` from data/custom_nodes/ComfyUI_LayerStyle/requirements.txt:26 (node ComfyUI_LayerStyle)"
            in layerstyle.stderr)
    _exclude(site, (*CONFLICTING, "ComfyUI_LayerStyle"))
    interpolation = run_cli(["lock", "--profile", "cu132-pypi"], env=env, cwd=site.root, timeout=900)
    assert interpolation.returncode != 0 and "aarch64" in interpolation.stderr, interpolation
    assert ("`taichi` from data/custom_nodes/ComfyUI-Frame-Interpolation/requirements.txt:10 (node "
            "ComfyUI-Frame-Interpolation)" in interpolation.stderr)
    assert "`envbuild lock --exclude-node ComfyUI-Frame-Interpolation`" in interpolation.stderr
    assert not (site.locks / "cu132-pypi" / "uv.lock").exists()  # a failed lock leaves nothing behind

    _exclude(site, (*CONFLICTING, *UNLOCKABLE))
    for profile, torch_minor in (("cu132-pypi", "2.15."), ("cu130-pypi", "2.14.")):
        started = time.perf_counter()
        result = run_cli(["lock", "--profile", profile], env=env, cwd=site.root, timeout=900)
        seconds = time.perf_counter() - started
        assert result.returncode == 0, result
        versions = locked_versions(site.locks / profile / "uv.lock")
        print(f"{profile}: {len(versions)} packages in {seconds:.1f} s")
        assert len(versions) > 200
        assert versions["torch"][0].startswith(torch_minor) and versions["torch"][1] == "https://pypi.org/simple"
        assert CV2 & versions.keys() == {"opencv-python-headless"}, CV2 & versions.keys()
        assert ONNXRUNTIME & versions.keys() == {"onnxruntime-gpu"}, ONNXRUNTIME & versions.keys()
        # The nodes' caps hold together: numpy<2 (Inspire, GGUF, segment-anything-2's <=1.26.4), the Manager's pin.
        assert versions["numpy"][0].startswith("1.") and versions["comfyui-manager"][0] == "4.2.2"
        for name in ("ultralytics", "insightface", "diffusers", "segment-anything", "gguf", "peft", "facexlib"):
            assert name in versions, name  # a node from each corner of the corpus is in the lock
        for node in (*CONFLICTING, *UNLOCKABLE):
            assert f"custom node skipped: {node} (excluded)" in result.stderr, result
