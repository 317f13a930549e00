"""Locks a team can commit: `lock --all` in parallel, one writer per profile, the fast no-op path."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

from envbuild.deploy.deployment import load_deployment
from envbuild.lock.trust import CURRENT, remembered
from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site", profiles=("cu126", "cu128", "cpu"))


def test_lock_all_locks_in_parallel_and_one_broken_profile_stops_no_other(
    deployment: Deployment, uv_env: dict[str, str]
) -> None:
    profiles = deployment.root / "profiles"
    profiles.mkdir()
    (profiles / "broken.toml").write_text(
        'name = "broken"\naccelerator = "cuda"\naccelerator-version = "12.6"\n'
        '[index]\nname = "pytorch-broken"\nurl = "https://download.pytorch.org/whl/cu999"\n'
        '[packages]\ntorch = ">=2.6"\ntorchvision = ">=0.21"\ntorchaudio = ">=2.6"\n', encoding="utf-8")
    deployment.write_config("""\
        [comfyui]
        path = "ComfyUI"
        base-directory = "data"
        [lock]
        profiles = ["cu126", "broken", "cu128", "cpu"]
        """)
    result = run_cli(["lock", "--all", "--jobs", "3"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 6, result  # uv failed
    for name in ("cu126", "cu128", "cpu", "broken"):
        assert f"{name}: started" in result.stdout
    assert "broken: failed: uv lock failed: Because torch was not found in the package registry" in result.stderr
    summary = result.stdout[result.stdout.index("profile  "):].splitlines()
    assert [line.split()[:2] for line in summary[1:]] == [
        ["cu126", "locked"], ["broken", "FAILED"], ["cu128", "locked"], ["cpu", "locked"]]
    assert "error: broken: uv lock failed; uv said:" in result.stderr
    for name in ("cu126", "cu128", "cpu"):
        assert (deployment.locks / name / "uv.lock").is_file()
    assert not (deployment.locks / "broken").exists()
    # Second run: every good profile is a no-op (uv is not needed), the broken one fails again.
    again = run_cli(["lock", "--all"], env=dict(uv_env, ENVBUILD_UV="/nonexistent"), cwd=deployment.root)
    assert again.returncode == 3, again  # the broken profile needs uv, and there is none
    assert "cu126: current (locks/cu126, 11 packages; uv not run)" in again.stdout, again
    assert "cpu: current (locks/cpu, 11 packages; uv not run)" in again.stdout, again


def test_two_concurrent_locks_of_one_profile_do_not_corrupt_it(
    deployment: Deployment, uv_env: dict[str, str]
) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-m", "envbuild", "lock", "--profile", "cu126"], cwd=deployment.root,
                         env=uv_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    statuses = sorted("cu126: current (locks/cu126, 11 packages; uv not run)" in out for out, _ in outputs)
    assert statuses == [False, True], outputs  # one locked, the other waited and found it current
    folder = deployment.locks / "cu126"
    fingerprint = json.loads((folder / "envbuild-lock.json").read_text())
    import hashlib

    assert fingerprint["uv_lock_sha256"] == hashlib.sha256((folder / "uv.lock").read_bytes()).hexdigest()
    assert locked_versions(folder / "uv.lock")["torch"][0] == "2.7.1+cu126"
    assert sorted(p.name for p in deployment.locks.iterdir() if not p.name.endswith(".lock")) == [".gitignore", "README.md", "cu126"]


def test_a_held_profile_lock_makes_the_second_run_wait_then_fail_clearly(
    deployment: Deployment, uv_env: dict[str, str]
) -> None:
    deployment.locks.mkdir()
    with open(deployment.locks / ".cu126.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        result = run_cli(["lock", "--profile", "cu126"], env=dict(uv_env, ENVBUILD_LOCK_TIMEOUT="1"),
                         cwd=deployment.root)
    assert result.returncode == 9, result
    assert "cu126: waiting for another envbuild locking it" in result.stderr
    assert "another envbuild has held" in result.stderr and "Traceback" not in result.stderr
    assert not (deployment.locks / "cu126").exists()


def test_only_comments_changed_refreshes_the_fingerprint_without_uv(
    deployment: Deployment, uv_env: dict[str, str]
) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    lock_before = (deployment.locks / "cu126" / "uv.lock").read_bytes()
    with (deployment.comfyui / "requirements.txt").open("a") as handle:
        handle.write("# pinned by hand? no: just a comment\n")
    no_uv = dict(uv_env, ENVBUILD_UV="/nonexistent")
    first = run_cli(["lock", "--profile", "cu126"], env=no_uv, cwd=deployment.root)
    assert first.returncode == 0 and "cu126: current (locks/cu126, 11 packages; uv not run)" in first.stdout, first
    assert (deployment.locks / "cu126" / "uv.lock").read_bytes() == lock_before
    fingerprint = json.loads((deployment.locks / "cu126" / "envbuild-lock.json").read_text())
    import hashlib

    raw = hashlib.sha256((deployment.comfyui / "requirements.txt").read_bytes()).hexdigest()
    assert fingerprint["raw_inputs"]["ComfyUI/requirements.txt"] == raw
    assert fingerprint["extra"]["locked-at"]
    # Trust is never read from the folder (anyone can edit it): the verdict is in the per-user cache,
    # under the new bytes, so the next sync reuses it without a re-audit.
    assert "audited" not in fingerprint and "unhashed" not in fingerprint
    deployment_now = load_deployment(deployment.root, no_uv)
    known = remembered(deployment_now, deployment_now.catalogue.get("cu126"))
    assert known is not None and known.state == CURRENT and known.compared_with_inputs, known


def test_a_changed_requires_python_makes_the_lock_stale(deployment: Deployment, uv_env: dict[str, str]) -> None:
    """It lives in envbuild.toml, not in any requirement file: the fast no-op path must still see it."""
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    config = deployment.root / "envbuild.toml"
    text = config.read_text()
    assert 'requires-python = ">=3.10"' in text
    config.write_text(text.replace('requires-python = ">=3.10"', 'requires-python = ">=3.10,<3.14"'))
    check = run_cli(["lock", "--check", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert check.returncode == 4, check
    assert "cu126: stale (locks/cu126" in check.stderr, check
    assert "lock.requires-python changed (>=3.10 → >=3.10,<3.14)" in check.stderr, check
    relock = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert relock.returncode == 0 and "locked" in relock.stdout, relock
    assert 'requires-python = ">=3.10,<3.14"' in (deployment.locks / "cu126" / "pyproject.toml").read_text()


def test_node_warnings_are_recorded_and_repeated_on_a_no_op(deployment: Deployment, uv_env: dict[str, str]) -> None:
    deployment.add_node("messy", "six\nnumpy<1.24>=1.18\n--extra-index-url https://example.invalid/simple\n")
    first = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert first.returncode == 0, first
    again = run_cli(["lock", "--profile", "cu126"], env=dict(uv_env, ENVBUILD_UV="/nonexistent"), cwd=deployment.root)
    for result in (first, again):
        assert "data/custom_nodes/messy/requirements.txt:2 (node messy)" in result.stderr
        assert "Ignored `--extra-index-url" in result.stderr
    recorded = json.loads((deployment.locks / "cu126" / "envbuild-lock.json").read_text())["warnings"]
    assert len(recorded) == 2


def test_a_lock_records_the_comfyui_commit_and_goes_stale_when_it_moves(
    deployment: Deployment, uv_env: dict[str, str]
) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=deployment.comfyui, check=True)
    subprocess.run([*git, "add", "-A"], cwd=deployment.comfyui, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=deployment.comfyui, check=True)
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=deployment.comfyui, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    recorded = json.loads((deployment.locks / "cu126" / "envbuild-lock.json").read_text())
    assert recorded["extra"]["comfyui-commit"] == first
    (deployment.comfyui / "main.py").write_text("print('ComfyUI, newer')\n")
    subprocess.run([*git, "commit", "-qam", "two"], cwd=deployment.comfyui, check=True)
    result = run_cli(["lock", "--check", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 4, result
    assert f"ComfyUI moved from {first[:12]} to " in result.stderr, result
