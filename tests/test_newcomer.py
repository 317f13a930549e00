"""The newcomer's trial, each step through the real CLI: what a first-time user runs into, answered.

Selection flags that mean the same everywhere, a sibling lock named with the exact command, the
deployment found from a subfolder, `init`, `sync --dry-run`, choices written into envbuild.toml, a
lock folder envbuild owns, and one exit code per kind of failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.deploy import Deployment, make_deployment, run_cli


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site")


def test_cuda_majors_and_profile_names_in_any_case(deployment: Deployment, env: dict[str, str]) -> None:
    for flags, profile in ((["--cuda", "13"], "cu130"), (["--cuda", "13.0"], "cu130"), (["--cuda", "12"], "cu128"),
                           (["--profile", "CU126"], "cu126")):
        result = run_cli(["lock", "--check", *flags], env=env, cwd=deployment.root)
        assert result.returncode == 4, result  # no lock yet: missing, and named
        assert f"{profile}: missing" in result.stderr, result
    result = run_cli(["lock", "--check", "--profile", "cu12"], env=env, cwd=deployment.root)
    assert result.returncode == 2 and "did you mean `cu132`?" in result.stderr, result


def test_deployment_is_found_from_a_subfolder_and_missing_one_is_one_error(
    deployment: Deployment, env: dict[str, str], tmp_path: Path
) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    inside = deployment.nodes / "comfyui-manager"
    result = run_cli(["lock", "--check"], env=env, cwd=inside)
    assert result.returncode == 0 and "cu126: current (locks/cu126)" in result.stdout, result
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    result = run_cli(["lock", "--all"], env=env, cwd=empty)
    assert result.returncode == 2, result
    assert result.stderr.count("error:") == 1 and "no envbuild.toml in" in result.stderr, result
    assert "envbuild init" in result.stderr


def test_a_missing_lock_with_a_committed_sibling_names_the_exact_command(
    deployment: Deployment, env: dict[str, str]
) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    for command in (["sync"], ["run"], ["verify"], ["export", "--format", "requirements"], ["check"]):
        result = run_cli([*command, "--profile", "cu126", "--torch-source", "pypi"], env=env, cwd=deployment.root)
        assert result.returncode == 4, (command, result)
        assert "no lock for profile cu126-pypi" in result.stderr, result
        assert "there is one for cu126 (torch from the PyTorch index)" in result.stderr, result
        assert f"envbuild {command[0]} --profile cu126 --torch-source pytorch-index" in result.stderr, result
        assert "syncing" not in result.stdout  # nothing announced before the precondition failed


def test_lock_flags_are_written_into_envbuild_toml_so_sync_agrees(
    deployment: Deployment, env: dict[str, str]
) -> None:
    deployment.add_node("node_big", "scipy\n")
    extra = deployment.root / "extra.txt"
    extra.write_text("requests\n")
    with (deployment.root / "envbuild.toml").open("a") as handle:
        handle.write("# a comment that must survive\n")
    result = run_cli(["lock", "--profile", "cu126", "--exclude-node", "node_big", "--extra-requirements", "extra.txt"],
                     env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert "envbuild.toml updated: nodes.exclude += 'node_big'" in result.stdout, result
    text = (deployment.root / "envbuild.toml").read_text()
    assert "# a comment that must survive" in text
    assert '"node_big"' in text and '"extra.txt"' in text
    sync = run_cli(["sync", "--profile", "cu126", "--venv", str(deployment.venv)], env=env, cwd=deployment.root)
    assert sync.returncode == 0, sync
    again = run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root)
    assert "cu126: current" in again.stdout and "uv not run" in again.stdout, again


def test_a_failed_lock_writes_nothing_into_envbuild_toml(deployment: Deployment, env: dict[str, str]) -> None:
    deployment.add_node("node_old", "numpy<1.0\n")
    before = (deployment.root / "envbuild.toml").read_bytes()
    result = run_cli(["lock", "--profile", "cu126", "--torch-source", "pypi"], env=env, cwd=deployment.root)
    assert result.returncode == 2 and "conflicting requirements for numpy" in result.stderr, result
    assert (deployment.root / "envbuild.toml").read_bytes() == before


def test_sync_dry_run_says_what_would_change_and_installs_nothing(
    deployment: Deployment, env: dict[str, str]
) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    result = run_cli(["sync", "--profile", "cu126", "--dry-run", "--venv", str(deployment.venv)], env=env,
                     cwd=deployment.root)
    assert result.returncode == 0, result
    assert "would install" in result.stdout and "+ torch==2." in result.stdout, result
    assert "downloading up to" in result.stdout
    assert not (deployment.venv / "bin" / "python").exists()


def test_init_writes_a_commented_file_and_never_overwrites(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "fresh"
    checkout = root / "ComfyUI"
    (checkout / "comfy").mkdir(parents=True)
    (checkout / "main.py").write_text("print('ComfyUI')\n")
    (checkout / "requirements.txt").write_text("torch\ntorchvision\nnumpy\n")
    (root / "data" / "custom_nodes" / "node_a").mkdir(parents=True)
    result = run_cli(["init"], env=env, cwd=root)
    assert result.returncode == 0, result
    text = (root / "envbuild.toml").read_text()
    assert 'path = "ComfyUI"' in text and 'base-directory = "data"' in text and "#   node_a" in text
    assert "profiles = [" in text
    again = run_cli(["init"], env=env, cwd=root)
    assert again.returncode == 2 and "never overwrites" in again.stderr, again
    check = run_cli(["lock", "--check"], env=env, cwd=checkout)  # found from inside the checkout
    assert check.returncode == 4 and ": missing" in check.stderr, check


def test_init_never_writes_a_folder_name_as_toml(tmp_path: Path, env: dict[str, str]) -> None:
    """Trust, round two, class 8: a node folder named with a newline wrote its own TOML into envbuild.toml."""
    from envbuild.core.tomlfile import parse_toml

    root = tmp_path / "fresh"
    (root / "ComfyUI" / "comfy").mkdir(parents=True)
    (root / "ComfyUI" / "main.py").write_text("print('ComfyUI')\n")
    (root / "ComfyUI" / "requirements.txt").write_text("torch\n")
    (root / "data" / "custom_nodes" / 'evil\n[lock]\nprofiles = ["x"]').mkdir(parents=True)
    result = run_cli(["init"], env=env, cwd=root)
    assert result.returncode == 0, result
    data = parse_toml((root / "envbuild.toml").read_text(), root / "envbuild.toml")
    assert data["lock"]["profiles"] != ["x"]
    assert "(not a usable node folder name)" in (root / "envbuild.toml").read_text()


@pytest.mark.parametrize("lock_dir", [".", "ComfyUI", "data"])
def test_a_lock_dir_envbuild_does_not_own_is_refused(
    deployment: Deployment, env: dict[str, str], lock_dir: str
) -> None:
    (deployment.root / "README.md").write_text("# my deployment\n")
    result = run_cli(["lock", "--profile", "cu126", "--lock-dir", lock_dir], env=env, cwd=deployment.root)
    assert result.returncode == 2, result
    assert "lock folder" in result.stderr and "[lock] dir" in result.stderr, result
    assert (deployment.root / "README.md").read_text() == "# my deployment\n"
    assert not (deployment.root / ".gitignore").exists()


def test_export_never_writes_into_the_lock_folder(deployment: Deployment, env: dict[str, str]) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    before = deployment.snapshot_locks()
    result = run_cli(["export", "--profile", "cu126", "--format", "requirements", "-o", "locks/cu126/uv.lock"],
                     env=env, cwd=deployment.root)
    assert result.returncode == 2 and "inside the lock folder" in result.stderr, result
    assert deployment.snapshot_locks() == before


def test_profiles_prints_a_table_with_headers(deployment: Deployment, env: dict[str, str]) -> None:
    result = run_cli(["profiles"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    header = result.stdout.splitlines()[0]
    for title in ("PROFILE", "ACCELERATOR", "VERSION", "TORCH", "TORCH FROM", "DESCRIPTION"):
        assert title in header


def test_an_unreachable_pytorch_index_names_the_ways_around_it(deployment: Deployment, env: dict[str, str]) -> None:
    blocked = dict(env, ENVBUILD_PYTORCH_INDEX="http://127.0.0.1:9/whl", UV_HTTP_RETRIES="0", UV_HTTP_TIMEOUT="5")
    result = run_cli(["lock", "--profile", "cu126"], env=blocked, cwd=deployment.root)
    assert result.returncode == 6, result
    assert "envbuild lock --profile cu126 --torch-source pypi" in result.stderr, result
    assert "--mirror" in result.stderr
    assert not (deployment.locks / "cu126").exists()


def test_fingerprint_with_wrong_types_is_not_trusted(deployment: Deployment, env: dict[str, str]) -> None:
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    (deployment.locks / "cu126" / "envbuild-lock.json").write_text("[]\n")
    fresh = dict(env, ENVBUILD_CACHE_DIR=str(deployment.root / "other-cache"))
    for command in (["lock", "--check"], ["verify"]):
        result = run_cli([*command, "--profile", "cu126"], env=fresh, cwd=deployment.root)
        assert result.returncode == 5, (command, result)
        assert "envbuild-lock.json is missing or unreadable" in result.stderr, result
        assert "internal error" not in result.stderr


def test_a_missing_profiles_dir_is_an_error(deployment: Deployment, env: dict[str, str]) -> None:
    with (deployment.root / "envbuild.toml").open("a") as handle:
        handle.write('profiles-dir = "my-profiles"\n')  # still inside [lock]
    result = run_cli(["lock", "--check"], env=env, cwd=deployment.root)
    assert result.returncode == 2 and "`lock.profiles-dir`" in result.stderr and "not a folder" in result.stderr, \
        result
