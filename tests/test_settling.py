"""A variant group that only dependencies bring (two `cv2` builds, no node asking for either) is settled
instead of refused: envbuild keeps one by the group's rule, records it in the fingerprint, locks again,
and renders the same pyproject from then on; a recorded choice it could not have made is an edited lock."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from envbuild.lock.settlements import check_recorded, with_settlements
from envbuild.pkgs.lockdir import Fingerprint
from envbuild.pkgs.merging import merge
from envbuild.pkgs.requirements import Origin, SourcedRequirement
from envbuild.torch.catalogue import load_catalogue
from envbuild.torch.variants import builtin_groups, deployment_group, overrides
from tests.support.catalogue import Catalogue
from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli

CV2 = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}


@pytest.fixture
def env(uv_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The loopback env, with uv behind a shim that counts its runs (a settled lock runs uv twice, no
    other lock more than once)."""
    import uv

    shim = tmp_path / "uv-shim"
    shim.write_text(f'#!/bin/sh\n[ "$1" = lock ] && echo lock >> "{tmp_path / "uv-runs"}"\n'
                    f'exec "{uv.find_uv_bin()}" "$@"\n')
    shim.chmod(0o755)
    return dict(uv_env, ENVBUILD_CACHE_DIR=str(tmp_path / "envbuild-cache"), ENVBUILD_UV=str(shim))


def _uv_locks(tmp_path: Path) -> int:
    runs = tmp_path / "uv-runs"
    return len(runs.read_text().split()) if runs.exists() else 0


def _site(tmp_path: Path) -> Deployment:
    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    site.add_node("node_tool", "cvtool\n")
    site.add_node("node_head", "headtool\n")
    return site


def _lock(site: Deployment, env: dict[str, str], *args: str) -> str:
    result = run_cli(["lock", "--profile", "cu126", *args], env=env, cwd=site.root)
    assert result.returncode == 0, result
    return result.stdout


def test_two_dependencies_bringing_two_cv2_builds_are_settled_on_headless(
    opencv_pypi: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    site = _site(tmp_path)
    folder = site.root / "locks/cu126"
    said = _lock(site, env)
    assert ("settled the `cv2` module: kept opencv-python-headless>=4.5 (ComfyUI has no GUI" in said
            and "bounds from cvtool 1.0 → opencv-python>=4.5, headtool 1.0 → opencv-python-headless>=4.5" in said
            and "dropped opencv-python (node node_tool → cvtool → opencv-python)" in said), said
    assert _uv_locks(tmp_path) == 2  # the first lock, then the one with the choice expressed
    locked = locked_versions(folder / "uv.lock")
    assert "opencv-python-headless" in locked and "opencv-python" not in locked
    assert {"cvtool", "headtool"} <= set(locked)
    pyproject = (folder / "pyproject.toml").read_text()
    assert '"opencv-python-headless>=4.5",' in pyproject  # a direct requirement, with the dependencies' bounds
    assert "'opencv-python; sys_platform == \"never\"'" in pyproject  # and the override that drops the other
    assert ("# Settled by envbuild (recorded in envbuild-lock.json): the `cv2` module from "
            "opencv-python-headless>=4.5.") in pyproject
    recorded = json.loads((folder / "envbuild-lock.json").read_text())
    assert recorded["settled"] == {"cv2": "opencv-python-headless>=4.5"}
    readme = (site.root / "locks/README.md").read_text()  # what reviewers of the committed locks read
    assert "- settled by envbuild after the lock: the `cv2` module from `opencv-python-headless>=4.5`" in readme
    first = {p.name: p.read_bytes() for p in folder.iterdir()}

    check = run_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=site.root)
    assert check.returncode == 0 and "cu126: current" in check.stdout, check
    fresh = dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "another-cache"))  # no remembered verdict: in full
    check = run_cli(["lock", "--check", "--profile", "cu126"], env=fresh, cwd=site.root)
    assert check.returncode == 0 and "cu126: current" in check.stdout, check
    again = _lock(site, fresh)
    assert "uv not run" in again and _uv_locks(tmp_path) == 2, again
    explain = run_cli(["merge", "--profile", "cu126", "--explain"], env=env, cwd=site.root)
    assert "envbuild: settles the cv2 module" in explain.stdout, explain

    upgraded = _lock(site, env, "--upgrade")  # a full re-resolve starts without the choice, and makes it again
    assert "settled the `cv2` module" in upgraded and _uv_locks(tmp_path) == 4, upgraded
    assert (folder / "pyproject.toml").read_bytes() == first["pyproject.toml"]
    assert (folder / "uv.lock").read_bytes() == first["uv.lock"]


def test_a_recorded_settlement_envbuild_never_makes_is_an_edited_lock(
    opencv_pypi: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    site = _site(tmp_path)
    _lock(site, env)
    path = site.root / "locks/cu126/envbuild-lock.json"
    data = json.loads(path.read_text())
    data["settled"] = {"cv2": "opencv-python"}  # the GUI build: no rule keeps it for ComfyUI
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    # The remembered verdict is not reused either: the record is part of its key.
    check = run_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=site.root)
    assert check.returncode == 5, check
    assert "envbuild-lock.json settles \"cv2\" on \"opencv-python\", which envbuild never keeps" in check.stderr
    sync = run_cli(["sync", "--profile", "cu126", "--dry-run"], env=env, cwd=site.root)
    assert sync.returncode == 5 and "envbuild-lock.json" in sync.stderr, sync
    relocked = _lock(site, env)  # re-locking regenerates the folder, settled as envbuild settles it
    assert "settled the `cv2` module: kept opencv-python-headless" in relocked, relocked
    assert json.loads(path.read_text())["settled"] == {"cv2": "opencv-python-headless>=4.5"}


def test_a_forged_settlement_envbuild_could_make_is_not_kept_by_the_next_lock(
    opencv_pypi: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    """Trust, round two, class 2: `"cv2": "opencv-python-headless==4.8.0.74"` made `lock --check` say edited,
    and the `envbuild lock` it advised then kept the record, locking a version nobody asked for."""
    site = _site(tmp_path)
    _lock(site, env)
    path = site.root / "locks/cu126/envbuild-lock.json"
    data = json.loads(path.read_text())
    data["settled"] = {"cv2": "opencv-python-headless==4.5.0"}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    check = run_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=site.root)
    assert check.returncode != 0, check
    relocked = _lock(site, env)
    assert "recorded settlements not reused (the folder was edited)" in relocked, relocked
    assert json.loads(path.read_text())["settled"] == {"cv2": "opencv-python-headless>=4.5"}


def test_a_lock_with_nothing_to_settle_runs_uv_once_and_records_no_settlement(
    opencv_pypi: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    site.add_node("node_head", "headtool\n")
    said = _lock(site, env)
    assert "settled" not in said and _uv_locks(tmp_path) == 1
    assert "settled" not in json.loads((site.root / "locks/cu126/envbuild-lock.json").read_text())


def test_a_settled_lock_is_current_where_the_folder_was_copied(
    opencv_pypi: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    """The choice travels with the committed folder: a fresh clone renders the same pyproject."""
    site = _site(tmp_path)
    _lock(site, env)
    clone = tmp_path / "clone"
    shutil.copytree(site.root, clone)
    fresh = dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "clone-cache"))
    check = run_cli(["lock", "--check", "--profile", "cu126"], env=fresh, cwd=clone)
    assert check.returncode == 0 and "cu126: current" in check.stdout, check


# -- validation of recorded settlements (no uv) -------------------------------------------------------

def _merged(*lines: str):  # type: ignore[no-untyped-def]
    from packaging.requirements import Requirement

    return merge([SourcedRequirement(Requirement(t), Origin("x.txt", 1, "node x"), t) for t in lines])


@pytest.mark.parametrize(("profile", "module", "kept", "usable"), [
    ("cu126", "cv2", "opencv-python-headless", True),
    ("cu126", "cv2", "opencv-contrib-python-headless", True),
    ("cu126", "cv2", "opencv-python", False),  # a member, but no rule keeps the GUI build
    ("cu126", "cv2", "opencv-contrib-python", False),
    ("cu126", "cv2", "numpy", False),  # not a member
    ("cu126", "onnxruntime", "onnxruntime-gpu", True),
    ("cu126", "onnxruntime", "onnxruntime", False),  # a CUDA profile always keeps the gpu build
    ("cpu", "onnxruntime", "onnxruntime", True),
    ("cpu", "onnxruntime", "onnxruntime-gpu", False),
    ("cu126", "PIL", "pillow", False),  # not a group
    ("cu126", "cv2", "opencv-python-headless<5,>=4.8", True),  # with the dependencies' bounds
    ("cu126", "cv2", "opencv-python<5,>=4.8", False),
    ("cu126", "cv2", "opencv-python-headless @ https://example.invalid/cv2.whl", False),  # only a version
    ("cu126", "cv2", 'opencv-python-headless>=4.8; sys_platform == "linux"', False),
    ("cu126", "cv2", "opencv-python-headless[extra]>=4.8", False),
    ("cu126", "cv2", "opencv-python-headless>=4.8 # and a comment", False),
])
def test_only_a_settlement_envbuild_could_make_is_used(profile: str, module: str, kept: str, usable: bool) -> None:
    found, problems = check_recorded({module: kept}, builtin_groups(), load_catalogue().get(profile),
                                     _merged("numpy"))
    assert (found == {module: kept}) is usable and bool(problems) is not usable, problems
    if problems:
        assert problems[0].startswith("envbuild-lock.json settles")


def test_choosable_members_follow_the_rules() -> None:
    groups = {g.module: g for g in builtin_groups()}
    cuda, cpu = load_catalogue().get("cu126"), load_catalogue().get("cpu")
    assert groups["cv2"].choosable(cuda) == {"opencv-python-headless", "opencv-contrib-python-headless"}
    assert groups["onnxruntime"].choosable(cuda) == {"onnxruntime-gpu"}
    assert groups["onnxruntime"].choosable(cpu) == {"onnxruntime"}
    own = deployment_group("cv2", ["opencv-python", "opencv-python-headless"])
    assert own.choosable(cpu) == {"opencv-python"}


def test_a_settlement_the_inputs_now_make_is_moot_and_an_applied_one_brings_the_overrides() -> None:
    profile = load_catalogue().get("cu126")
    found, problems = check_recorded({"cv2": "opencv-python-headless"}, builtin_groups(), profile,
                                     _merged("opencv-contrib-python-headless"))
    assert found == {} and problems == ()
    merged = with_settlements(_merged("numpy"), {"cv2": "opencv-python-headless"}, "locks/cu126/envbuild-lock.json")
    assert [r.pep508() for r in merged.requirements] == ["numpy", "opencv-python-headless"]
    assert merged.requirements[1].origins[0].origin.source == "envbuild: settles the cv2 module"
    assert set(overrides(merged, builtin_groups())) == {f'{m}; sys_platform == "never"'
                                                        for m in CV2 - {"opencv-python-headless"}}


def test_fingerprints_without_a_settlement_keep_their_bytes_and_old_files_still_read() -> None:
    base = Fingerprint(profile="cu126", render_version=3, uv_required_version=">=0.12.1", torch_source="pytorch",
                       index_url=None, profile_sha256="a", pyproject_sha256="b", inputs={})
    assert "settled" not in base.to_json()
    assert Fingerprint.from_json(base.to_json()) == base
    settled = base._replace(settled={"cv2": "opencv-python-headless"})
    assert Fingerprint.from_json(settled.to_json()) == settled
    bad = json.loads(settled.to_json())
    bad["settled"] = {"cv2": 3}
    assert Fingerprint.from_json(json.dumps(bad)) is None


def test_the_locks_readme_says_every_kind_of_settlement_and_keeps_forged_text_inside_its_code_span() -> None:
    from envbuild.uv.locks_readme import _settled

    said = _settled({"settled": {"cv2": "opencv-python-headless>=4.5"}, "bounds": {"triton-windows": ">=3.3,<3.4"},
                     "companions": ["xformers`; rm -rf"]})
    assert said == ("the `cv2` module from `opencv-python-headless>=4.5`", "`triton-windows>=3.3,<3.4` for the locked "
                    "torch", "`xformers'; rm -rf` asked for directly (a dependency's)")
    assert _settled({"settled": "garbage", "bounds": [1], "companions": {}}) == ()
