"""Trust, round two, class 2: every committed file of a lock folder is covered by trust.

constraints.txt (the torch guard `run` and images point pip and uv at) edited to `torch>=0` passed
`verify`, `lock --check`, `sync` and `run`; a symlink in the folder was followed (to ~/.netrc, copied into
an image; to /dev/zero, read until memory ran out). Now each is "edited" before the file is opened."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.deploy import Deployment, make_deployment, run_cli

POSIX_ONLY = pytest.mark.skipif(os.name == "nt", reason="FIFOs and symlinks as a user makes them")
CHECK = ["lock", "--check", "--profile", "cu126"]


@pytest.fixture
def locked(tmp_path: Path, uv_env: dict[str, str]) -> Deployment:
    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result
    # The verdict is now in the per-user cache: every case below must not be answered from it.
    assert run_cli(CHECK, env=uv_env, cwd=site.root).returncode == 0
    return site


def test_an_edited_torch_guard_is_not_envbuilds(locked: Deployment, uv_env: dict[str, str]) -> None:
    constraints = locked.locks / "cu126" / "constraints.txt"
    constraints.write_text(constraints.read_text().replace("torch==", "torch>=0\n# was torch=="))
    check = run_cli(CHECK, env=uv_env, cwd=locked.root)
    assert check.returncode == 5, check
    assert "constraints.txt is not the torch guard envbuild writes from uv.lock" in check.output
    verify = run_cli(["verify", "--profile", "cu126"], env=uv_env, cwd=locked.root)
    assert verify.returncode != 0 and "constraints.txt" in verify.output, verify


@POSIX_ONLY
def test_a_symlinked_torch_guard_is_refused_before_it_is_read(locked: Deployment, uv_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    secret = tmp_path / "netrc"
    secret.write_text("machine example.com login bob password hunter2\n")
    constraints = locked.locks / "cu126" / "constraints.txt"
    constraints.unlink()
    constraints.symlink_to(secret)
    check = run_cli(CHECK, env=uv_env, cwd=locked.root)
    assert check.returncode == 5, check
    assert "cu126/constraints.txt is a symbolic link" in check.output and "hunter2" not in check.output


@POSIX_ONLY
@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_lock_file_that_never_ends_is_refused_at_once(locked: Deployment, uv_env: dict[str, str],
                                                        kind: str) -> None:
    uv_lock = locked.locks / "cu126" / "uv.lock"
    uv_lock.unlink()
    if kind == "fifo":
        os.mkfifo(uv_lock)
        expected = "uv.lock is a FIFO"
    else:
        uv_lock.symlink_to("/dev/zero")
        expected = "uv.lock is a symbolic link"
    started = time.monotonic()
    check = run_cli(CHECK, env=uv_env, cwd=locked.root, timeout=60)
    assert time.monotonic() - started < 30
    assert check.returncode == 5 and expected in check.output, check
    sync = run_cli(["sync", "--profile", "cu126"], env=uv_env, cwd=locked.root, timeout=60)
    assert sync.returncode == 5 and expected in sync.output, sync
