"""Variant groups hold for the whole resolution: one `cv2` provider in the lock even when a node's
dependency (not the node) asks for another build, the pyproject that says so reproducible, and the
audit allowing exactly the overrides envbuild writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from envbuild.core.errors import ConfigError
from envbuild.torch.catalogue import load_catalogue
from envbuild.torch.variants import builtin_groups, groups_for, is_rendered_override
from envbuild.uv.audit import audit_texts
from tests.support.catalogue import Catalogue
from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli


def _site(tmp_path: Path, nodes: dict[str, str]) -> Deployment:
    deployment = make_deployment(tmp_path / "site", profiles=("cu126",))
    for name, text in nodes.items():
        deployment.add_node(name, text)
    return deployment


def test_a_dependency_asking_for_another_cv2_build_ends_with_one_provider(
    opencv_pypi: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    site = _site(tmp_path, {"node_tool": "cvtool\n", "node_head": "opencv-python-headless>=4.8\n"})
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    locked = locked_versions(site.root / "locks/cu126/uv.lock")
    assert "cvtool" in locked and "opencv-python-headless" in locked
    assert "opencv-python" not in locked  # cvtool's own ask was dropped: one cv2 in the environment
    pyproject = (site.root / "locks/cu126/pyproject.toml").read_text()
    assert "override-dependencies" in pyproject and "opencv-python; sys_platform == " in pyproject
    # Reproducible: the freshness check re-renders the same bytes, and the audit accepts what was written.
    check = run_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=site.root)
    assert check.returncode == 0 and "cu126: current" in check.stdout, check
    fresh = dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "another-cache"))  # no remembered verdict: a full audit
    verify = run_cli(["verify", "--profile", "cu126"], env=fresh, cwd=site.root)
    assert verify.returncode == 0, verify


def test_two_builds_that_a_conditional_ask_keeps_apart_fail_naming_each_chain(
    opencv_pypi: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    """A node's own ask under a marker is not envbuild's to settle (tests/test_settling.py: the ones that are)."""
    site = _site(tmp_path, {"node_tool": 'opencv-python; sys_platform == "linux"\n', "node_head": "headtool\n"})
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 2, result
    assert "node node_tool → opencv-python (installs `cv2`)" in result.stderr, result
    assert "node node_head → headtool → opencv-python-headless (installs `cv2`)" in result.stderr, result
    assert "ask for opencv-python-headless" in result.stderr
    assert not (site.root / "locks/cu126").exists()  # no half lock


def test_a_deployment_group_replaces_the_builtin_choice(
    opencv_pypi: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    site = _site(tmp_path, {"node_a": "opencv-python-headless\n", "node_b": "opencv-python\n"})
    with (site.root / "envbuild.toml").open("a") as handle:
        handle.write('variant-groups = { cv2 = ["opencv-python", "opencv-python-headless"] }\n')
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    locked = locked_versions(site.root / "locks/cu126/uv.lock")
    assert "opencv-python" in locked and "opencv-python-headless" not in locked
    with (site.root / "envbuild.toml").open("a") as handle:
        handle.write("\n[nodes]\nexclude = []\n")
    text = (site.root / "envbuild.toml").read_text().replace('"opencv-python", "opencv-python-headless"',
                                                              '"opencv-python"')
    (site.root / "envbuild.toml").write_text(text)
    bad = run_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=site.root)
    assert bad.returncode == 2 and "lock.variant-groups.cv2` needs at least two" in bad.stderr, bad


def test_groups_are_data_with_a_source_and_a_member_in_two_groups_is_refused() -> None:
    groups = {g.module: g for g in builtin_groups()}
    assert {"opencv-python", "opencv-contrib-python-headless"} <= groups["cv2"].members
    assert all(g.source.startswith("https://") for g in groups.values())
    with pytest.raises(ConfigError, match="onnxruntime-gpu is in group"):
        groups_for({"ort": ("onnxruntime-gpu", "onnxruntime-rocm")})


def test_only_the_overrides_envbuild_renders_pass_the_audit() -> None:
    groups = builtin_groups()
    direct = ["opencv-python-headless", "numpy"]
    assert is_rendered_override('opencv-python; sys_platform == "never"', groups, direct)
    for forged in ('numpy; sys_platform == "never"', 'opencv-python>=4; sys_platform == "never"',
                   "opencv-python", 'opencv-python-headless; sys_platform == "never"',
                   'onnxruntime; sys_platform == "never"'):
        assert not is_rendered_override(forged, groups, direct), forged
    profile = load_catalogue().get("cpu")
    pyproject = (
        '[project]\nname = "x"\nversion = "0"\ndependencies = ["opencv-python-headless", "torch"]\n'
        "[tool.uv]\nenvironments = " + repr(list(profile.environments)) + "\n"
        "required-environments = " + repr(list(profile.required_environments)) + "\n"
        "override-dependencies = ['opencv-python; sys_platform == \"never\"', 'six==0.1']\n"
        '[tool.uv.sources]\ntorch = { index = "pytorch-cpu" }\ntorchvision = { index = "pytorch-cpu" }\n'
        'torchaudio = { index = "pytorch-cpu" }\n'
        '[[tool.uv.index]]\nname = "pytorch-cpu"\nurl = "https://download.pytorch.org/whl/cpu"\nexplicit = true\n'
    )
    lock = 'version = 1\nrevision = 3\nrequires-python = ">=3.10"\n'
    report = audit_texts(pyproject, lock, profile, folder=Path("x"),
                         indexes=("https://download.pytorch.org/whl/cpu", None, "simple"))
    assert [t for t in report.tampering if "override-dependencies" in t] == [
        "[tool.uv] override-dependencies has `six==0.1`, which envbuild never writes (it only drops the other "
        "members of a variant group)"]
