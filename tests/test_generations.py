"""Venv generations through the real CLI: sync installs each lock into a folder of its own and switches
the venv path (a symlink) to it; a failed check or install leaves the path where it was; rollback,
the listing, pruning, adoption of a venv made before generations, and a running ComfyUI's generation
kept (its flock, held across exec)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envbuild.env import generations
from envbuild.pkgs.lockdir import LockFolder
from tests.support.deploy import Deployment, make_deployment, run_cli, torch_in_venv

pytestmark = pytest.mark.skipif(os.name != "posix", reason="generations are POSIX only (see README)")


@pytest.fixture
def site(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site", manager=None)


def cli(site: Deployment, env: dict[str, str], *args: str, code: int = 0):  # type: ignore[no-untyped-def]
    result = run_cli(list(args), env=env, cwd=site.root)
    assert result.returncode == code, result
    return result


def generation_of(site: Deployment, profile: str) -> Path:
    digest = generations.lock_digest(LockFolder(site.locks, profile))
    return site.root / ".envbuild-generations" / f"{profile}-{digest}"


def test_sync_builds_a_generation_switches_to_it_and_rollback_switches_back(site: Deployment,
                                                                            env: dict[str, str]) -> None:
    venv = site.root / ".venv"
    cli(site, env, "lock", "--profile", "cu126")
    cli(site, env, "lock", "--profile", "cu128")
    first = cli(site, env, "sync", "--profile", "cu126")
    cu126 = generation_of(site, "cu126")
    assert venv.is_symlink() and venv.resolve() == cu126, first
    assert os.readlink(venv) == os.path.join(".envbuild-generations", cu126.name)  # relative: the site can move
    assert f".venv -> .envbuild-generations/{cu126.name}" in first.stdout
    again = cli(site, env, "sync", "--profile", "cu126")  # the same lock: its generation reused, no switch
    assert "->" not in again.stdout and venv.resolve() == cu126
    assert [p.name for p in (site.root / ".envbuild-generations").iterdir() if not p.name.startswith(".")] \
        == [cu126.name]

    cli(site, env, "sync", "--profile", "cu128")
    cu128 = generation_of(site, "cu128")
    assert venv.resolve() == cu128 and torch_in_venv(venv)[1] == "12.8"
    assert torch_in_venv(cu126)[1] == "12.6"  # the previous generation is untouched

    answer = json.loads(cli(site, env, "generations", "--json").stdout)
    listed = answer["generations"]
    # Two generations of one venv share the files uv links from its cache: together is less than the sum.
    assert 0 < answer["total_size"] < sum(row["size"] for row in listed)
    assert "together: " in cli(site, env, "generations").stdout
    rows = {row["name"]: row for row in listed}
    assert rows[cu128.name]["current"] and rows[cu126.name]["previous"]
    assert rows[cu126.name]["profile"] == "cu126" and rows[cu126.name]["digest"] == cu126.name[-12:]
    assert all(row["complete"] and row["size"] > 0 and row["created"] for row in listed)

    back = cli(site, env, "rollback")
    assert venv.resolve() == cu126 and torch_in_venv(venv)[1] == "12.6"
    assert f"from {cu128.name} (lock locks/cu128 {cu128.name[-12:]}) to {cu126.name}" in back.stdout
    assert "warning" not in back.stderr  # the committed cu126 lock still matches it
    cli(site, env, "run", "--profile", "cu126")  # the rolled-back generation holds the committed lock
    cli(site, env, "rollback")  # a second rollback switches forth again
    assert venv.resolve() == cu128


def test_a_venv_made_before_generations_is_adopted_never_deleted(site: Deployment, env: dict[str, str]) -> None:
    venv = site.root / ".venv"
    cli(site, env, "lock", "--profile", "cu126")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / "my-notes.txt").write_text("keep me")
    assert "WARN  venv generation: " in _doctor(site, env) and "made before generations" in _doctor(site, env)
    synced = cli(site, env, "sync", "--profile", "cu126")
    assert "kept the venv made before generations as .envbuild-generations/adopted-venv-" in synced.stdout
    (adopted,) = (site.root / ".envbuild-generations").glob("adopted-venv-*")
    assert (adopted / "my-notes.txt").read_text() == "keep me"
    assert venv.resolve() == generation_of(site, "cu126")
    cu126 = generation_of(site, "cu126").name
    assert f"PASS  venv generation: .venv -> {cu126} (lock locks/cu126 {cu126[-12:]}), made " in _doctor(site, env)
    cli(site, env, "rollback")
    assert venv.resolve() == adopted and (venv / "my-notes.txt").is_file()
    assert "(a venv made before generations, adopted)" in _doctor(site, env)


def _doctor(site: Deployment, env: dict[str, str]) -> str:
    return run_cli(["doctor", "--profile", "cu126", "--no-import", "--no-probe"], env=env, cwd=site.root).stdout


def test_sync_check_failure_leaves_the_venv_path_on_the_old_generation(site: Deployment,
                                                                       env: dict[str, str]) -> None:
    from tests.test_smoke import fake_comfyui, node

    venv = site.root / ".venv"
    fake_comfyui(site)
    node(site, "node_ok", "import yaml\nNODE_CLASS_MAPPINGS = {}\n")
    cli(site, env, "lock", "--profile", "cu126")
    cli(site, env, "lock", "--profile", "cu128")
    cli(site, env, "sync", "--profile", "cu126", "--check")
    cu126 = generation_of(site, "cu126")
    assert venv.resolve() == cu126
    node(site, "node_broken", "import torch\nraise RuntimeError('needs a newer torch')\n")
    failed = cli(site, env, "sync", "--profile", "cu128", "--check", code=1)
    assert "FAILED node_broken" in failed.stderr, failed
    assert f"{venv} was not switched: it stays on {cu126.name}" in failed.stderr
    assert venv.resolve() == cu126
    assert generation_of(site, "cu128").is_dir()  # built and kept: a fixed node needs no reinstall


def test_old_generations_are_pruned_beyond_keep_never_current_previous_or_in_use(
    site: Deployment, env: dict[str, str]
) -> None:
    venv = site.root / ".venv"
    with (site.root / "envbuild.toml").open("a") as handle:
        handle.write("\n[generations]\nkeep = 1\n")
    cli(site, env, "lock", "--profile", "cu126")
    cli(site, env, "lock", "--profile", "cu128")
    cli(site, env, "sync", "--profile", "cu126")
    cu126 = generation_of(site, "cu126")
    holder = _hold(cu126)  # a ComfyUI started in cu126 is still running
    try:
        cli(site, env, "sync", "--profile", "cu128")
        (site.root / "extra.txt").write_text("requests\n")  # a third lock for cu126: a new generation
        cli(site, env, "lock", "--profile", "cu126", "--extra-requirements", "extra.txt")
        third = cli(site, env, "sync", "--profile", "cu126")
        assert venv.resolve() == generation_of(site, "cu126") != cu126
        assert cu126.is_dir(), third  # beyond keep = 1, but in use
        assert generation_of(site, "cu128").is_dir()  # the previous one
    finally:
        holder.kill()
        holder.wait()
    cli(site, env, "lock", "--profile", "cu128", "--extra-requirements", "extra.txt")
    fourth = cli(site, env, "sync", "--profile", "cu128")
    assert f"removed old generation {cu126.name}" in fourth.stdout, fourth
    assert not cu126.exists()


def test_generations_keep_is_validated(site: Deployment, env: dict[str, str]) -> None:
    with (site.root / "envbuild.toml").open("a") as handle:
        handle.write("\n[generations]\nkeep = 0\n")
    result = cli(site, env, "generations", code=2)
    assert "`generations.keep` must be at least 1, not 0" in result.stderr


def _hold(generation: Path) -> subprocess.Popen[bytes]:
    """A process holding the generation as `envbuild run` leaves ComfyUI holding it."""
    code = ("import sys, time; from envbuild.env.generations import hold_in_use; from pathlib import Path; "
            "hold_in_use(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(generation)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
    deadline = time.monotonic() + 10
    while not generations.in_use(generation) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def test_run_starts_comfyui_in_the_generation_and_holds_it_across_a_switch(site: Deployment,
                                                                          env: dict[str, str]) -> None:
    venv = site.root / ".venv"
    (site.comfyui / "main.py").write_text(
        "import os, sys, time\nprint(sys.executable, os.environ['VIRTUAL_ENV'], flush=True)\ntime.sleep(120)\n")
    cli(site, env, "lock", "--profile", "cu126")
    cli(site, env, "lock", "--profile", "cu128")
    cli(site, env, "sync", "--profile", "cu126")
    cu126 = generation_of(site, "cu126")
    assert not generations.in_use(cu126)
    proc = subprocess.Popen([sys.executable, "-m", "envbuild", "-q", "run", "--profile", "cu126"], cwd=site.root,
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        python, virtual_env = proc.stdout.readline().split()
        assert Path(virtual_env) == cu126 and Path(python).parent.parent == cu126  # the real path, not .venv
        assert generations.in_use(cu126)  # ComfyUI (envbuild exec'd into it) holds the flock
        cli(site, env, "sync", "--profile", "cu128")  # the switch does not touch the running one
        assert venv.resolve() == generation_of(site, "cu128") and proc.poll() is None
        (site.root / "extra.txt").write_text("requests\n")
        cli(site, env, "lock", "--profile", "cu126", "--extra-requirements", "extra.txt")
        with (site.root / "envbuild.toml").open("a") as handle:
            handle.write("\n[generations]\nkeep = 1\n")
        cli(site, env, "sync", "--profile", "cu126")
        assert cu126.is_dir()  # neither current nor previous, beyond keep, but in use
    finally:
        proc.kill()
        proc.wait()
    assert not generations.in_use(cu126)  # the kernel dropped the lock with the process


def test_sync_refuses_to_change_a_generation_a_running_comfyui_uses(site: Deployment, env: dict[str, str],
                                                                   uv_bin: Path) -> None:
    cli(site, env, "lock", "--profile", "cu126")
    cli(site, env, "sync", "--profile", "cu126")
    cu126 = generation_of(site, "cu126")
    subprocess.run([str(uv_bin), "pip", "install", "-q", "--python", str(cu126 / "bin" / "python"), "six"],
                   env=env, check=True)  # a node installed a package at runtime: an exact sync would remove it
    holder = _hold(cu126)
    try:
        refused = cli(site, env, "sync", "--profile", "cu126", code=2)
        assert f"a running ComfyUI uses {cu126}, and this sync would change packages under it" in refused.stderr
        assert list((cu126 / "lib").glob("python3*/site-packages/six-*.dist-info")), "the live generation was changed"
    finally:
        holder.kill()
        holder.wait()
    cli(site, env, "sync", "--profile", "cu126")  # ComfyUI stopped: the sync makes it exact again
    assert not list((cu126 / "lib").glob("python3*/site-packages/six-*.dist-info"))


def test_rollback_without_generations_says_so_and_makes_nothing(site: Deployment, env: dict[str, str]) -> None:
    result = cli(site, env, "rollback", code=2)
    assert "is not a generation envbuild made, so there is nothing to roll back to" in result.stderr
    assert not (site.root / ".envbuild-generations").exists()


# -- Trust, round two, class 5: what is not envbuild's is never taken or deleted -----------------------

@pytest.mark.parametrize("target", [".", "locks", "ComfyUI", "data", "data/custom_nodes"])
def test_sync_venv_never_names_the_deployment_or_its_folders(site: Deployment, env: dict[str, str],
                                                             target: str) -> None:
    cli(site, env, "lock", "--profile", "cu126")
    before = sorted(p.relative_to(site.root) for p in site.root.rglob("*") if ".venv" not in p.parts)
    refused = run_cli(["sync", "--profile", "cu126", "--venv", target], env=env, cwd=site.root)
    assert refused.returncode == 2 and "envbuild would move it aside" in refused.stderr, refused
    assert sorted(p.relative_to(site.root) for p in site.root.rglob("*") if ".venv" not in p.parts) == before
    assert not (site.root / ".envbuild-generations").exists()


def test_a_folder_that_is_no_venv_is_never_adopted_nor_a_file_replaced(site: Deployment,
                                                                     env: dict[str, str]) -> None:
    cli(site, env, "lock", "--profile", "cu126")
    models = site.root / "models"
    models.mkdir()
    (models / "sd15.safetensors").write_bytes(b"weights")
    refused = run_cli(["sync", "--profile", "cu126", "--venv", "models"], env=env, cwd=site.root)
    assert refused.returncode == 2 and "not a virtual environment (no pyvenv.cfg)" in refused.stderr, refused
    assert (models / "sd15.safetensors").read_bytes() == b"weights" and not models.is_symlink()
    notes = site.root / ".venv"  # the default venv path, a file of the user's
    notes.write_text("mine")
    refused = run_cli(["sync", "--profile", "cu126"], env=env, cwd=site.root)
    assert refused.returncode == 2 and "exists and is not a folder" in refused.stderr, refused
    assert notes.read_text() == "mine" and not notes.is_symlink()


def test_an_adopted_venv_is_never_pruned(site: Deployment, env: dict[str, str]) -> None:
    venv = site.root / ".venv"
    with (site.root / "envbuild.toml").open("a") as handle:
        handle.write("\n[generations]\nkeep = 1\n")
    cli(site, env, "lock", "--profile", "cu126")
    cli(site, env, "lock", "--profile", "cu128")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    cli(site, env, "sync", "--profile", "cu126")  # adopts the venv; previous = adopted
    cli(site, env, "sync", "--profile", "cu128")  # adopted is no longer previous: beyond keep = 1
    cli(site, env, "sync", "--profile", "cu126")
    assert len(list((site.root / ".envbuild-generations").glob("adopted-venv-*"))) == 1


def test_a_file_where_the_generations_folder_belongs_is_said_not_a_crash(site: Deployment,
                                                                          env: dict[str, str]) -> None:
    """Trust, round two, class 8: this ended in exit 70 (an internal error) before."""
    cli(site, env, "lock", "--profile", "cu126")
    (site.root / ".envbuild-generations").write_text("mine")
    result = run_cli(["sync", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 10, result
    assert ".envbuild-generations" in result.stderr and "hint:" in result.stderr
    assert (site.root / ".envbuild-generations").read_text() == "mine"
