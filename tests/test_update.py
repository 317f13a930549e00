"""`envbuild update` through the real CLI: refs and inputs re-locked into staging, installed as a new
generation, checked with ComfyUI's quick test, and swapped in only when everything passed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.deploy import DEFAULT_COMFY_REQUIREMENTS, Deployment, make_deployment, run_cli
from tests.test_gitsrc import GIT_ENV, commit_files, head, make_repo
from tests.test_smoke import FAKE_MAIN, fake_comfyui, node

pytestmark = pytest.mark.skipif(os.name != "posix", reason="generations are POSIX only (see README)")


@pytest.fixture
def env(uv_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in uv_env.items() if not k.startswith("GIT_")}
    return clean | GIT_ENV | {"ENVBUILD_CACHE_DIR": str(tmp_path / "envbuild-cache")}


def cli(root: Path, env: dict[str, str], *args: str, code: int = 0):  # type: ignore[no-untyped-def]
    result = run_cli(list(args), env=env, cwd=root)
    assert result.returncode == code, result
    return result


def _fetched_and_locked(tmp_path: Path, env: dict[str, str]) -> Deployment:
    """A deployment whose ComfyUI is tmp_path/upstream/ComfyUI at tag v1: fetched, then locked for cu126."""
    site = Deployment(tmp_path / "site")
    site.nodes.mkdir(parents=True)
    site.write_config("""\
        [comfyui]
        git = "../upstream/ComfyUI"
        ref = "v1"
        base-directory = "data"

        [lock]
        profiles = ["cu126"]
        """)
    cli(site.root, env, "fetch")
    cli(site.root, env, "lock", "--profile", "cu126")
    return site


def test_update_dry_run_shows_the_diff_and_a_failed_check_changes_nothing(tmp_path: Path,
                                                                          env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site", manager=None)
    fake_comfyui(site)
    node(site, "node_picky", "import importlib.util\nif importlib.util.find_spec('six'):\n"
                            "    raise RuntimeError('breaks with six')\nNODE_CLASS_MAPPINGS = {}\n")
    cli(site.root, env, "lock", "--profile", "cu126")
    cli(site.root, env, "sync", "--profile", "cu126", "--check")
    venv, before = site.root / ".venv", (site.root / ".venv").resolve()
    (site.nodes / "node_picky" / "requirements.txt").write_text("six\n")  # the node's new version
    locks, config = site.snapshot_locks(), (site.root / "envbuild.toml").read_text()

    dry = cli(site.root, env, "update", "--profile", "cu126", "--dry-run")
    assert "six" in dry.stdout and "committed" in dry.stdout and "updated" in dry.stdout, dry
    assert "dry run: nothing installed" in dry.stdout
    assert site.snapshot_locks() == locks and venv.resolve() == before
    assert len(list((site.root / ".envbuild-generations").glob("cu126-*"))) == 1  # nothing installed

    failed = cli(site.root, env, "update", "--profile", "cu126", code=1)
    assert "FAILED node_picky" in failed.stderr, failed
    assert "update failed its check: locks/cu126" in failed.stderr
    assert site.snapshot_locks() == locks and venv.resolve() == before
    assert (site.root / "envbuild.toml").read_text() == config
    assert not list(site.locks.glob(".cu126.staging-*"))  # the staged lock is gone


def test_update_moves_comfyui_to_a_new_ref_and_back_when_it_fails(tmp_path: Path, env: dict[str, str]) -> None:
    upstream = tmp_path / "upstream" / "ComfyUI"
    files = {"main.py": FAKE_MAIN, "comfy_core.py": "import yaml\n"}
    make_repo(upstream, {**files, "requirements.txt": DEFAULT_COMFY_REQUIREMENTS}, tag="v1")
    v2 = commit_files(upstream, {"requirements.txt": DEFAULT_COMFY_REQUIREMENTS + "six\n",
                                 "comfy_core.py": "import yaml, six\n"}, "v2", tag="v2")
    commit_files(upstream, {"requirements.txt": DEFAULT_COMFY_REQUIREMENTS + "six\n",
                            "comfy_core.py": "raise SystemExit('v3 is broken')\n"}, "v3", tag="v3")
    site = _fetched_and_locked(tmp_path, env)
    cli(site.root, env, "sync", "--profile", "cu126")
    venv, first = site.root / ".venv", (site.root / ".venv").resolve()

    updated = cli(site.root, env, "update", "--profile", "cu126", "--comfyui-ref", "v2")
    assert "ComfyUI: ComfyUI moved from" in updated.stdout and f"to v2 ({v2[:12]})" in updated.stdout, updated
    assert "envbuild.toml updated: comfyui.ref = 'v2'" in updated.stdout
    assert head(site.comfyui) == v2 and 'ref = "v2"' in (site.root / "envbuild.toml").read_text()
    assert 'name = "six"' in (site.locks / "cu126" / "uv.lock").read_text()
    second = venv.resolve()
    assert second != first and (second / "envbuild-check.json").is_file()
    cli(site.root, env, "lock", "--check", "--profile", "cu126")  # the committed lock is current for v2

    locks = site.snapshot_locks()
    failed = cli(site.root, env, "update", "--profile", "cu126", "--comfyui-ref", "v3", code=1)
    assert "v3 is broken" in failed.stderr or "FAILED ComfyUI" in failed.stderr, failed
    assert head(site.comfyui) == v2 and 'ref = "v2"' in (site.root / "envbuild.toml").read_text()
    assert site.snapshot_locks() == locks and venv.resolve() == second
    cli(site.root, env, "rollback")
    assert venv.resolve() == first


def test_an_update_killed_with_its_checkout_moved_is_undone_by_the_next_command(tmp_path: Path,
                                                                                env: dict[str, str]) -> None:
    """Trust, round two, class 7: a SIGKILL during `update --comfyui-ref v2` left ComfyUI at v2 while
    envbuild.toml said v1, and the next `envbuild lock` locked v2 for every clone. The state a kill leaves
    (the checkout moved, the journal written before the move) is made here by hand."""
    import json
    import subprocess

    upstream = tmp_path / "upstream" / "ComfyUI"
    v1 = make_repo(upstream, {"main.py": FAKE_MAIN, "requirements.txt": DEFAULT_COMFY_REQUIREMENTS}, tag="v1")
    commit_files(upstream, {"requirements.txt": DEFAULT_COMFY_REQUIREMENTS + "six\n"}, "v2", tag="v2")
    site = _fetched_and_locked(tmp_path, env)
    subprocess.run(["git", "-C", str(site.comfyui), "checkout", "-q", "--detach", "v2"], env=env, check=True)
    journal = site.locks / ".update-journal.json"
    journal.write_text(json.dumps({"started": "2026-12-06 10:00:00", "checkouts": [
        {"name": "ComfyUI", "url": "../upstream/ComfyUI", "path": str(site.comfyui), "commit": v1}]}))
    checked = cli(site.root, env, "lock", "--check", "--profile", "cu126")
    assert "an interrupted `envbuild update` (started 2026-12-06 10:00:00) was undone" in checked.stderr, checked
    assert head(site.comfyui) == v1 and not journal.exists()
    assert "current" in checked.stdout


def test_a_live_updates_journal_is_left_alone(tmp_path: Path, env: dict[str, str]) -> None:
    """While an update holds the deployment's update lock its journal is live: no command undoes it, and a
    second update waits for it (then gives up, saying so) instead of moving the same checkout."""
    import fcntl

    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    cli(site.root, env, "lock", "--profile", "cu126")
    journal = site.locks / ".update-journal.json"
    journal.write_text('{"started": "now", "checkouts": []}')
    with open(site.locks / ".update.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        listed = cli(site.root, env, "node", "list")
        assert "interrupted" not in listed.stderr and journal.exists()
        busy = run_cli(["update", "--profile", "cu126", "--no-check"], env=dict(env, ENVBUILD_LOCK_TIMEOUT="1"),
                       cwd=site.root)
        assert busy.returncode == 9 and ".update.lock" in busy.stderr, busy


def test_git_is_needed_only_to_fetch(tmp_path: Path, env: dict[str, str]) -> None:
    """Issue: with ComfyUI a git checkout, `lock --check`, `sync` and `run` exited 8 without git on PATH
    (a service with a minimal PATH). Commits are read from the checkout's files now."""
    import shutil

    upstream = tmp_path / "upstream" / "ComfyUI"
    make_repo(upstream, {"main.py": FAKE_MAIN, "requirements.txt": DEFAULT_COMFY_REQUIREMENTS}, tag="v1")
    site = _fetched_and_locked(tmp_path, env)
    bare = tmp_path / "bin-without-git"
    bare.mkdir()
    uv = shutil.which("uv", path=env["PATH"])
    assert uv is not None
    (bare / "uv").symlink_to(uv)
    no_git = dict(env, PATH=str(bare))
    assert shutil.which("git", path=no_git["PATH"]) is None
    cli(site.root, no_git, "lock", "--check", "--profile", "cu126")
    cli(site.root, no_git, "sync", "--profile", "cu126")
    cli(site.root, no_git, "lock", "--profile", "cu126")  # a no-op: current, no uv, no git


def test_update_with_nothing_to_change_runs_no_lock_and_no_quick_test(tmp_path: Path, env: dict[str, str]) -> None:
    """It re-locked and ran an 18 s quick test before; now it says so and leaves everything (no uv at all)."""
    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    cli(site.root, env, "lock", "--profile", "cu126")
    cli(site.root, env, "sync", "--profile", "cu126")
    before = (site.root / ".venv").resolve()
    no_uv = dict(env, ENVBUILD_UV="/nonexistent/uv")
    result = cli(site.root, no_uv, "update", "--profile", "cu126")
    assert "nothing to update: the lock is current and the venv holds it" in result.stdout, result
    assert "already up to date" in result.stdout
    assert (site.root / ".venv").resolve() == before
