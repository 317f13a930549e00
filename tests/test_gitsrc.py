"""`envbuild fetch` and `[comfyui]/[manager] git + ref`: local repositories made by the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from envbuild.comfy.git import GitError, fetch_all, resolve_url, resolved_commits
from envbuild.core.errors import ConfigError
from envbuild.settings.config import load_config
from tests.support.deploy import run_cli
from tests.support.gitrepos import GIT_ENV, commit_files, git, make_repo


@pytest.fixture
def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV


@pytest.fixture
def upstream(tmp_path: Path) -> dict[str, str]:
    """ComfyUI with tags v1, v2 and a branch `dev` ahead of them."""
    repo = tmp_path / "upstream" / "ComfyUI"
    commits = {"v1": make_repo(repo, {"requirements.txt": "torch\n", "main.py": "print(1)\n"}, tag="v1")}
    commits["v2"] = commit_files(repo, {"requirements.txt": "torch\nnumpy\n"}, "v2", tag="v2")
    git(repo, "checkout", "-q", "-b", "dev")
    commits["dev"] = commit_files(repo, {"main.py": "print(3)\n"}, "dev")
    git(repo, "checkout", "-q", "main")
    return commits


def write_config(site: Path, ref: str, extra: str = "") -> None:
    site.mkdir(exist_ok=True)
    (site / "envbuild.toml").write_text(
        f'[comfyui]\ngit = "../upstream/ComfyUI"\nref = "{ref}"\nbase-directory = "data"\n{extra}', encoding="utf-8")


def head(path: Path) -> str:
    return git(path, "rev-parse", "HEAD")


def test_fetch_clones_pinned_then_moves_only_when_the_ref_does(
    tmp_path: Path, upstream: dict[str, str], env: dict[str, str]
) -> None:
    site = tmp_path / "site"
    write_config(site, "v1")
    result = run_cli(["fetch"], env=env, cwd=site)
    assert result.returncode == 0, result
    checkout = site / "ComfyUI"  # the default path of a git-sourced ComfyUI
    assert f"ComfyUI: cloned {tmp_path / 'upstream/ComfyUI'} at v1 ({upstream['v1'][:12]}) into ComfyUI" in result.stdout
    assert head(checkout) == upstream["v1"] and (checkout / "main.py").read_text() == "print(1)\n"
    detached = subprocess.run(["git", "-C", str(checkout), "symbolic-ref", "-q", "HEAD"], check=False)
    assert detached.returncode == 1  # HEAD is detached: a pinned checkout, not a branch
    assert "run `envbuild lock`" in result.stdout

    again = run_cli(["fetch"], env=env, cwd=site)
    assert f"ComfyUI: ComfyUI already at v1 ({upstream['v1'][:12]})" in again.stdout
    assert "envbuild lock" not in again.stdout

    write_config(site, "dev")
    moved = run_cli(["fetch"], env=env, cwd=site)
    assert moved.returncode == 0, moved
    assert f"moved from {upstream['v1'][:12]} to dev ({upstream['dev'][:12]})" in moved.stdout
    assert head(checkout) == upstream["dev"]
    # A branch ref follows the branch as the remote has it now.
    git(tmp_path / "upstream/ComfyUI", "checkout", "-q", "dev")
    newer = commit_files(tmp_path / "upstream/ComfyUI", {"main.py": "print(4)\n"}, "dev 2")
    assert run_cli(["fetch"], env=env, cwd=site).returncode == 0
    assert head(checkout) == newer
    assert resolved_commits(load_config(site)) == {"comfyui": newer}


def test_a_commit_ref_needs_no_network_once_present(tmp_path: Path, upstream: dict[str, str], env: dict[str, str]) -> None:
    site = tmp_path / "site"
    write_config(site, upstream["v2"])
    assert run_cli(["fetch"], env=env, cwd=site).returncode == 0
    assert head(site / "ComfyUI") == upstream["v2"]
    shutil.move(tmp_path / "upstream", tmp_path / "gone")  # the remote is unreachable now
    result = run_cli(["fetch"], env=env, cwd=site)
    assert result.returncode == 0, result
    assert "already at" in result.stdout


def test_local_changes_are_never_overwritten(tmp_path: Path, upstream: dict[str, str], env: dict[str, str]) -> None:
    site = tmp_path / "site"
    write_config(site, "v1")
    assert run_cli(["fetch"], env=env, cwd=site).returncode == 0
    (site / "ComfyUI" / "main.py").write_text("my patch\n", encoding="utf-8")
    (site / "ComfyUI" / "models.txt").write_text("untracked files are fine\n", encoding="utf-8")
    write_config(site, "v2")
    result = run_cli(["fetch"], env=env, cwd=site)
    assert result.returncode == 8 and "Traceback" not in result.stderr
    assert "has local changes (main.py)" in result.stderr and "commit or stash" in result.stderr
    assert head(site / "ComfyUI") == upstream["v1"]
    assert (site / "ComfyUI" / "main.py").read_text() == "my patch\n"


def test_refusals_name_the_problem(tmp_path: Path, upstream: dict[str, str], env: dict[str, str]) -> None:
    site = tmp_path / "site"
    write_config(site, "no-such-ref")
    with pytest.raises(GitError, match="ref `no-such-ref` is not a tag, branch or commit of"):
        fetch_all(load_config(site), environ=env)
    assert not (site / "ComfyUI").exists()  # no half-made clone is left behind

    write_config(site, "v1")
    (site / "ComfyUI").mkdir()
    (site / "ComfyUI" / "main.py").write_text("a copy, not a clone\n")
    with pytest.raises(GitError, match="exists and is not a git checkout"):
        fetch_all(load_config(site), environ=env)

    shutil.rmtree(site / "ComfyUI")
    make_repo(site / "ComfyUI", {"x": "other project\n"})
    git(site / "ComfyUI", "remote", "add", "origin", "https://example.invalid/other.git")
    with pytest.raises(GitError, match="is a checkout of https://example.invalid/other.git"):
        fetch_all(load_config(site), environ=env)


def test_manager_is_cloned_into_custom_nodes_and_both_commits_are_reported(
    tmp_path: Path, upstream: dict[str, str], env: dict[str, str]
) -> None:
    manager_commit = make_repo(tmp_path / "upstream" / "ComfyUI-Manager", {"requirements.txt": "pyyaml\n"}, tag="3.41")
    site = tmp_path / "site"
    write_config(site, "v2", '[manager]\ngit = "../upstream/ComfyUI-Manager"\nref = "3.41"\n')
    results = fetch_all(load_config(site), environ=env)
    assert [(r.name, r.action) for r in results] == [("ComfyUI", "cloned"), ("ComfyUI-Manager", "cloned")]
    assert results[1].path == site / "data" / "custom_nodes" / "comfyui-manager"
    assert resolved_commits(load_config(site)) == {"comfyui": upstream["v2"], "comfyui-manager": manager_commit}


def test_a_copy_inside_the_deployments_own_repository_has_no_commit(tmp_path: Path, env: dict[str, str]) -> None:
    site = tmp_path / "site"
    make_repo(site, {"envbuild.toml": '[comfyui]\npath = "ComfyUI"\n', "ComfyUI/requirements.txt": "torch\n"})
    assert resolved_commits(load_config(site)) == {}


def test_git_and_ref_go_together_and_relative_urls_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "envbuild.toml").write_text('[comfyui]\ngit = "https://github.com/Comfy-Org/ComfyUI"\n')
    with pytest.raises(ConfigError, match="`comfyui.ref` is missing"):
        load_config(tmp_path)
    (tmp_path / "envbuild.toml").write_text('[manager]\ngit = "x"\nref = "main"\n')
    with pytest.raises(ConfigError, match="`manager.git` needs `manager.path`"):
        load_config(tmp_path)
    assert resolve_url("https://github.com/Comfy-Org/ComfyUI", tmp_path) == "https://github.com/Comfy-Org/ComfyUI"
    assert resolve_url("git@github.com:Comfy-Org/ComfyUI.git", tmp_path) == "git@github.com:Comfy-Org/ComfyUI.git"
    assert resolve_url("../up/ComfyUI", tmp_path / "site") == str(tmp_path / "up" / "ComfyUI")
