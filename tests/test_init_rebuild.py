"""`envbuild init` writes a deployment another machine can rebuild (issue 24, point 6): ComfyUI and a
legacy Manager clone pinned from their own files, a requires-python the profile's torch serves, a
.gitignore for what envbuild makes; and `lock --check` says when ComfyUI or the Manager is unpinned."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from envbuild.settings.config import GitSource, load_config
from tests.support.deploy import invoke_cli
from tests.support.gitrepos import commit_files, file_url, git, make_repo


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home"),
            "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config")}


def comfyui_upstream(tmp_path: Path) -> Path:
    upstream = tmp_path / "upstream" / "ComfyUI"
    make_repo(upstream, {"main.py": "print('ComfyUI')\n", "requirements.txt": "torch\nnumpy\n",
                         "comfy/__init__.py": ""})
    git(upstream, "tag", "-a", "v0.3.64", "-m", "release")  # annotated: peeled in the clone's packed-refs
    return upstream


def manager_upstream(tmp_path: Path) -> Path:
    upstream = tmp_path / "upstream" / "ComfyUI-Manager"
    make_repo(upstream, {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n", "requirements.txt": "GitPython\n"},
              tag="3.41")
    return upstream


def test_init_pins_comfyui_and_the_legacy_manager_from_their_clones(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "site"
    root.mkdir()
    git(root, "clone", "-q", file_url(comfyui_upstream(tmp_path)), "ComfyUI")
    git(root / "ComfyUI", "remote", "set-url", "origin", "https://someone:ghp_secret@example.com/Comfy-Org/ComfyUI.git")
    (root / "data" / "custom_nodes").mkdir(parents=True)
    manager = manager_upstream(tmp_path)
    git(root / "data" / "custom_nodes", "clone", "-q", file_url(manager), "ComfyUI-Manager")
    (root / ".gitignore").write_text("/.venv\n*.log")
    result = invoke_cli(["init", "--profile", "cu126", "--mirror", "https://mirror.example/whl/",
                         "--pypi-mirror", "https://pypi.example/simple"], env=env, cwd=root)
    assert result.returncode == 0, result
    written = (root / "envbuild.toml").read_text()
    assert "ghp_secret" not in written and "someone" not in written
    config = load_config(root)
    assert config.comfyui_git == GitSource("https://example.com/Comfy-Org/ComfyUI.git", "v0.3.64")
    assert config.manager_git == GitSource(file_url(manager), "3.41")
    assert config.manager == root / "data" / "custom_nodes" / "ComfyUI-Manager"
    assert dict(config.mirrors) == {"pytorch": "https://mirror.example/whl", "pypi": "https://pypi.example/simple"}
    assert config.requires_python == ">=3.10" and config.profiles == ("cu126",)
    assert ("ComfyUI pinned: git https://example.com/Comfy-Org/ComfyUI.git, ref v0.3.64 (the tag v0.3.64 at HEAD, "
            "commit ") in result.stdout
    assert "; the credentials in its origin URL left out)" in result.stdout
    assert f"ComfyUI-Manager pinned: git {file_url(manager)}, ref 3.41 (the tag 3.41 at HEAD" in result.stdout
    assert (f"ComfyUI-Manager's origin {file_url(manager)} is a path on this machine: another machine cannot fetch "
            "it; set its `git` in envbuild.toml to the URL it was cloned from") in result.stderr
    assert "ComfyUI's origin" not in result.stderr
    assert (root / ".gitignore").read_text() == (
        "/.venv\n*.log\n\n"
        "# envbuild: the venv, its generations, fetched checkouts, staging and exports (envbuild init)\n"
        "/.envbuild-generations/\n/.envbuild-staging/\n/ComfyUI/\n/data/custom_nodes/ComfyUI-Manager/\n"
        "/pylock.cu126.toml\n/requirements-cu126.txt\n")
    assert ("added 6 patterns to the existing .gitignore: /.envbuild-generations/ /.envbuild-staging/ /ComfyUI/ "
            "/data/custom_nodes/ComfyUI-Manager/ /pylock.cu126.toml /requirements-cu126.txt") in result.stdout
    check = invoke_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=root)
    assert "does not pin" not in check.output, check


def test_lock_check_says_when_comfyui_or_the_manager_is_unpinned(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "site"
    root.mkdir()
    git(root, "clone", "-q", file_url(comfyui_upstream(tmp_path)), "ComfyUI")
    head = commit_files(root / "ComfyUI", {"local.txt": "x\n"}, "a local commit: no tag at HEAD")
    (root / "data" / "custom_nodes").mkdir(parents=True)
    git(root / "data" / "custom_nodes", "clone", "-q", file_url(manager_upstream(tmp_path)), "ComfyUI-Manager")
    (root / "envbuild.toml").write_text('[comfyui]\npath = "ComfyUI"\nbase-directory = "data"\n'
                                        '[lock]\nprofiles = ["cu126"]\n')
    check = invoke_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=root)
    assert check.returncode == 4, check  # no lock yet
    upstream = file_url(tmp_path / "upstream" / "ComfyUI")
    assert (f"ComfyUI (ComfyUI) is a git checkout at {head[:12]} that envbuild.toml does not pin: another machine "
            f'cannot fetch it; add to [comfyui]: git = "{upstream}", ref = "{head}"') in check.stderr
    manager = file_url(tmp_path / "upstream" / "ComfyUI-Manager")
    assert ("the ComfyUI-Manager clone (data/custom_nodes/ComfyUI-Manager) is a git checkout at ") in check.stderr
    assert (f'add to [manager]: path = "data/custom_nodes/ComfyUI-Manager", git = "{manager}", ref = "3.41"'
            in check.stderr)


def test_init_chooses_a_requires_python_the_profiles_torch_serves(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "site"
    (root / "ComfyUI" / "comfy").mkdir(parents=True)
    (root / "ComfyUI" / "main.py").write_text("")
    (root / "ComfyUI" / "requirements.txt").write_text("torch\n")
    result = invoke_cli(["init", "--profile", "cu132", "--torch-source", "pypi"], env=env, cwd=root)
    assert result.returncode == 0, result
    config = load_config(root)
    assert config.profiles == ("cu132-pypi",) and config.torch_source == "pypi"
    assert config.requires_python == ">=3.11" and config.comfyui_git is None
    assert ("requires-python >=3.11 (cu132-pypi's torch has no wheel for Python 3.10 (its profile says "
            "requires-python >=3.11))") in result.stdout
    assert (root / ".gitignore").read_text() == (
        "# envbuild: the venv, its generations, fetched checkouts, staging and exports (envbuild init)\n"
        "/.venv\n/.envbuild-generations/\n/.envbuild-staging/\n/pylock.cu132-pypi.toml\n"
        "/requirements-cu132-pypi.txt\n")


@pytest.mark.parametrize("flag", ["--mirror", "--pypi-mirror"])
def test_init_refuses_a_mirror_with_credentials(tmp_path: Path, env: dict[str, str], flag: str) -> None:
    root = tmp_path / "site"
    (root / "ComfyUI" / "comfy").mkdir(parents=True)
    (root / "ComfyUI" / "main.py").write_text("")
    (root / "ComfyUI" / "requirements.txt").write_text("torch\n")
    result = invoke_cli(["init", "--profile", "cu126", flag, "https://me:pw@mirror.example/x"], env=env, cwd=root)
    assert result.returncode == 2, result
    assert "is not an http(s) URL without credentials" in result.stderr
    assert not (root / "envbuild.toml").exists()


def test_a_checkout_without_origin_is_not_pinned_and_said(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "site"
    commit = make_repo(root / "ComfyUI", {"main.py": "", "requirements.txt": "torch\n", "comfy/__init__.py": ""})
    result = invoke_cli(["init", "--profile", "cu126"], env=env, cwd=root)
    assert result.returncode == 0, result
    assert ("ComfyUI not pinned (no `origin` remote): another machine cannot fetch it; add `git` and `ref` to "
            "envbuild.toml by hand") in result.stderr
    assert "# not pinned (no `origin` remote): add git and ref by hand" in (root / "envbuild.toml").read_text()
    assert load_config(root).comfyui_git is None
    check = invoke_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=root)
    assert (f"ComfyUI (ComfyUI) is a git checkout at {commit[:12]} that envbuild.toml does not pin: another machine "
            "cannot fetch it (no `origin` remote); add git and ref to [comfyui] by hand") in check.stderr


def test_tags_and_origin_are_read_from_files_loose_annotated_lightweight_and_packed(tmp_path: Path) -> None:
    from envbuild.settings.pins import read_head, read_origin, read_tags_at

    upstream = comfyui_upstream(tmp_path)  # a loose annotated tag: its tag object is peeled from objects/
    git(upstream, "tag", "latest")  # a loose lightweight tag at the same commit
    head = read_head(upstream)
    assert head is not None and read_tags_at(upstream, head) == ("latest", "v0.3.64")
    assert read_origin(upstream) is None
    git(upstream, "pack-refs", "--all")
    assert read_tags_at(upstream, head) == ("latest", "v0.3.64")
    git(upstream, "remote", "add", "origin", "https://example.com/x.git")
    assert read_origin(upstream) == "https://example.com/x.git"
    assert read_tags_at(upstream, "0" * 40) == ()
