"""Indexes that misbehave on purpose, runs that are killed, and credentials that must stay secret.

Every fault is injected into the loopback index (`tests/support/index.py`): HTTP 500s, answers slower
than uv's timeout, connections dropped in the middle of a body, files whose bytes do not match the
sha256 the listing (and so the lock) gives, and wheels that disagree with their metadata. For each,
`lock` and `sync` must fail saying where (the URL, or the package and file) and what went wrong, and
the previous lock and venv must still work once the fault is gone. uv's retries are off and its
timeout is 1 s, so a fault costs at most a second.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli, torch_in_venv
from tests.support.wheels import build_family_wheel, build_torch_wheel, read_wheel_metadata
from tests.test_bad_inputs import isolated_env

FAST_FAIL = {"UV_HTTP_TIMEOUT": "1", "UV_HTTP_RETRIES": "0"}
SLOW = 3.0  # seconds a delayed answer takes: past uv's 1 s timeout
HANG = 30.0  # seconds a delayed answer takes when a run is to be killed while waiting for it

Arm = Callable[[Any, Path], None]  # (index_server, a scratch folder)


@pytest.fixture
def env(uv_env: dict[str, str]) -> dict[str, str]:
    return {**uv_env, **FAST_FAIL}


@pytest.fixture(scope="module")
def locked_template(tmp_path_factory: pytest.TempPathFactory, index_server: Any, uv_bin: Path) -> Path:
    """A deployment with current cu126 and cu128 locks, made once per process and copied by each test."""
    tmp = tmp_path_factory.mktemp("broken-indexes-template")
    root = make_deployment(tmp / "site").root
    for profile in ("cu126", "cu128"):
        result = run_cli(["lock", "--profile", profile], env=isolated_env(tmp, index_server, uv_bin), cwd=root)
        assert result.returncode == 0, result
    return root


@pytest.fixture
def site(tmp_path: Path, locked_template: Path) -> Deployment:
    shutil.copytree(locked_template, tmp_path / "site", symlinks=True)
    return Deployment(tmp_path / "site")


def cli(site: Deployment, env: dict[str, str], *args: str, ok: bool = True) -> Any:
    result = run_cli(list(args), env=env, cwd=site.root, timeout=120)
    if ok:
        assert result.returncode == 0, result
    assert "Traceback" not in result.output and "internal error" not in result.output, result
    return result


def committed(site: Deployment) -> dict[str, str]:
    """The committed lock files: what a killed or failed run must never change (scratch files aside)."""
    return {path: digest for path, digest in site.snapshot_locks().items() if not path.startswith(".")}


def venv_matches_lock(site: Deployment, profile: str, env: dict[str, str], uv_bin: Path) -> None:
    """uv itself confirms the venv holds exactly the lock: nothing to install, remove or change."""
    proc = subprocess.run(
        [str(uv_bin), "sync", "--locked", "--dry-run", "--no-install-project", "--project",
         str(site.locks / profile)],
        env={**env, "UV_PROJECT_ENVIRONMENT": str(site.venv)}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Would make no changes" in proc.stderr, proc.stderr


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------------- lock against a broken index

def _lying_metadata(index_server: Any, _scratch: Path) -> None:
    """The cu126 index's PEP 658 metadata for every torch wheel names another project."""
    index = index_server.torch_index("cu126")
    for entry in index.files("torch"):
        wheel = index_server.wheel_dir / "whl" / "cu126" / entry.filename
        assert entry.metadata is not None
        index.add(wheel, metadata=entry.metadata.replace(b"Name: torch", b"Name: torch-fake"))


@dataclass(frozen=True)
class Fault:
    name: str
    arm: Arm
    says: tuple[str, ...]  # substrings of stderr: where, and what kind of failure
    exit: int = 6  # uv failed (resolution, download); 5: the index serves other bytes than the lock trusts

    def __str__(self) -> str:
        return self.name


LOCK_FAULTS = [
    Fault("http-500", lambda s, _: s.server.fail("/whl/cu126/", 500),
          ("/whl/cu126/", "answered 500 Internal Server Error")),
    Fault("timeout", lambda s, _: s.server.delay("/whl/cu126/", SLOW),
          ("could not reach http://127.0.0.1:", "/whl/cu126/", "(timed out)")),
    Fault("dropped-connection", lambda s, _: s.server.drop_mid_body("/whl/cu126/", keep=40),
          ("/whl/cu126/", "the connection dropped while downloading", "end of file before message length reached")),
    Fault("metadata-disagrees", _lying_metadata, ("`torch-fake` does not match given name `torch`",)),
]


@pytest.mark.parametrize("fault", LOCK_FAULTS, ids=str)
def test_lock_against_a_broken_index_keeps_the_previous_lock(
    fault: Fault, site: Deployment, env: dict[str, str], index_server: Any, tmp_path: Path,
) -> None:
    before = site.snapshot_locks()
    # A cold cache, so that every page and metadata file is asked for again (and the fault hit).
    cold = {**env, "UV_CACHE_DIR": str(tmp_path / "cold-cache")}
    fault.arm(index_server, tmp_path)
    result = cli(site, cold, "lock", "--profile", "cu126", "--upgrade", ok=False)
    assert result.returncode == fault.exit, result
    for text in fault.says:
        assert text in result.stderr, f"{fault}: stderr lacks {text!r}\n{result!r}"
    assert site.snapshot_locks() == before, "a failed lock changed locks/"

    index_server.reset()  # the fault is gone: the previous lock is current, audited, and installs
    assert "cu126: current" in cli(site, env, "lock", "--check", "--profile", "cu126").stdout
    cli(site, env, "verify", "--profile", "cu126")
    cli(site, env, "sync", "--profile", "cu126", "--venv", str(site.venv))
    assert torch_in_venv(site.venv) == ("2.7.1+cu126", "12.6")


# ------------------------------------------------------------------------- sync from a broken index

def _tampered_torch(index_server: Any, tmp_path: Path) -> None:
    """The cu128 index serves another build (a CUDA 12.6 torch) under the locked file's name."""
    index = index_server.torch_index("cu128")
    entry = next(e for e in index.files("torch") if e.version == "2.8.0+cu128")
    impostor = build_torch_wheel(tmp_path / "impostor", "2.8.0+cu128", cuda="12.6")
    index.tamper(entry.filename, impostor.read_bytes())


SYNC_FAULTS = [
    Fault("http-500", lambda s, _: s.server.fail("/whl/cu128/files/", 500),
          ("/whl/cu128/files/", "answered 500 Internal Server Error")),
    Fault("timeout", lambda s, _: s.server.delay("/whl/cu128/files/", SLOW),
          ("/whl/cu128/files/", "timed out")),
    Fault("dropped-connection", lambda s, _: s.server.drop_mid_body("/whl/cu128/files/", keep=100),
          ("the connection dropped while downloading", "+cu128", "end of file before message length reached")),
    Fault("wrong-sha256", _tampered_torch,
          ("hash mismatch for torch==2.8.0+cu128 from http://127.0.0.1:", "/whl/cu128/files/torch-2.8.0%2Bcu128",
           "nothing was installed"), exit=5),
]


@pytest.mark.parametrize("fault", SYNC_FAULTS, ids=str)
def test_sync_from_a_broken_index_keeps_the_old_venv(
    fault: Fault, site: Deployment, env: dict[str, str], index_server: Any, tmp_path: Path, uv_bin: Path,
) -> None:
    cli(site, env, "sync", "--profile", "cu126", "--venv", str(site.venv))
    before = site.snapshot_locks()
    assert locked_versions(site.locks / "cu128" / "uv.lock")["torch"][0] == "2.8.0+cu128"

    # Switching the venv to cu128 needs the cu128 wheels: the index fails them.
    fault.arm(index_server, tmp_path)
    result = cli(site, env, "sync", "--profile", "cu128", "--venv", str(site.venv), ok=False)
    assert result.returncode == fault.exit, result
    for text in fault.says:
        assert text in result.stderr, f"{fault}: stderr lacks {text!r}\n{result!r}"
    assert site.snapshot_locks() == before
    # uv fails while downloading, before it touches the venv: the old build still imports.
    assert torch_in_venv(site.venv) == ("2.7.1+cu126", "12.6")
    venv_matches_lock(site, "cu126", env, uv_bin)

    index_server.reset()
    result = cli(site, env, "sync", "--profile", "cu128", "--venv", str(site.venv))
    assert "matches the profile" in result.stdout
    assert torch_in_venv(site.venv) == ("2.8.0+cu128", "12.8")
    venv_matches_lock(site, "cu128", env, uv_bin)


def test_a_wheel_that_disagrees_with_its_metadata_is_refused_at_install(
    site: Deployment, env: dict[str, str], index_server: Any, tmp_path: Path, uv_bin: Path,
) -> None:
    """The index's PEP 658 metadata says torchaudio 2.8.0 and so does the file name, but the wheel
    inside is 2.8.1. `uv lock` reads only the metadata, so the lock is made; uv refuses the wheel when
    it installs it. That happens after uv began switching the venv, so envbuild must say the venv is
    incomplete now, and a sync once the index is fixed (and the lock refreshed) must end whole."""
    cli(site, env, "sync", "--profile", "cu126", "--venv", str(site.venv))
    shutil.rmtree(site.locks / "cu128")  # locked below, against the lying index
    index = index_server.torch_index("cu128")
    entry = next(e for e in index.files("torchaudio") if e.version == "2.8.0+cu128")
    liar = build_family_wheel(tmp_path / "liar", "torchaudio", "2.8.1+cu128", "2.8.0+cu128")
    index.tamper(entry.filename, liar.read_bytes(), rehash=True)  # the listing's hash is the liar's own
    assert read_wheel_metadata(liar)[1]["Version"] != entry.version
    cli(site, env, "lock", "--profile", "cu128")

    result = cli(site, env, "sync", "--profile", "cu128", "--venv", str(site.venv), ok=False)
    assert result.returncode == 6, result
    assert "torchaudio-2.8.0+cu128-py3-none-any.whl" in result.stderr
    assert "Wheel version does not match filename (2.8.1+cu128 != 2.8.0+cu128)" in result.stderr
    assert f"{site.venv} was not switched: it still points at the environment it had" in result.stderr

    index_server.reset()
    cli(site, env, "lock", "--profile", "cu128", "--upgrade-package", "torchaudio")
    cli(site, env, "sync", "--profile", "cu128", "--venv", str(site.venv))
    assert torch_in_venv(site.venv) == ("2.8.0+cu128", "12.8")
    venv_matches_lock(site, "cu128", env, uv_bin)


# ------------------------------------------------------------------------- killed runs

def _start(site: Deployment, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """envbuild in its own process group, so the kill reaches uv as well (as Ctrl-C or a dying shell would)."""
    return subprocess.Popen([sys.executable, "-m", "envbuild", *args], cwd=site.root, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _kill(proc: subprocess.Popen[str]) -> None:
    assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.communicate()[0]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


@pytest.mark.skipif(os.name == "nt", reason="process groups and SIGKILL are POSIX")
def test_a_sync_killed_mid_switch_is_repaired_by_the_next_sync(
    site: Deployment, env: dict[str, str], index_server: Any, uv_bin: Path,
) -> None:
    cli(site, env, "sync", "--profile", "cu128", "--venv", str(site.venv))
    server = index_server.server
    server.delay("/whl/cu126/files/torch-", HANG)  # the torch download hangs: the run is mid-sync
    server.clear_log()
    proc = _start(site, {**env, "UV_HTTP_TIMEOUT": "120"}, "sync", "--profile", "cu126", "--venv", str(site.venv))
    _wait_for(lambda: bool(server.requests_for("/whl/cu126/files/torch-")), "uv to download torch")
    _kill(proc)
    server.clear_faults()
    assert torch_in_venv(site.venv)[1] == "12.8"  # killed before uv changed it: the old build still imports

    result = cli(site, env, "sync", "--profile", "cu126", "--venv", str(site.venv))
    assert "torch 2.7.1+cu126 (CUDA 12.6)" in result.stdout and "matches the profile" in result.stdout
    assert torch_in_venv(site.venv) == ("2.7.1+cu126", "12.6")
    venv_matches_lock(site, "cu126", env, uv_bin)


@pytest.mark.skipif(os.name == "nt", reason="process groups and SIGKILL are POSIX")
def test_a_lock_killed_mid_resolve_leaves_the_previous_lock_and_no_phantom_profile(
    site: Deployment, env: dict[str, str], index_server: Any,
) -> None:
    before = committed(site)
    server = index_server.server
    server.delay("/whl/cu126/", HANG)
    server.clear_log()
    proc = _start(site, {**env, "UV_HTTP_TIMEOUT": "120"}, "lock", "--profile", "cu126", "--upgrade")
    _wait_for(lambda: bool(server.requests_for("/whl/cu126/")), "uv to ask the cu126 index")
    staged = [p.name for p in site.locks.iterdir() if p.name.startswith(".cu126.staging-")]
    assert staged, "the run was not killed mid-lock"
    _kill(proc)
    server.clear_faults()

    assert committed(site) == before
    assert (site.locks / staged[0]).is_dir()  # SIGKILL runs no cleanup: the staging copy is still there
    check = cli(site, env, "lock", "--check", "--all")
    assert "cu126: current" in check.stdout and "cu128: current" in check.stdout
    verify = cli(site, env, "verify", "--all")
    assert "staging" not in check.output + verify.output
    assert verify.stdout.count(": current (") == 2
    # Without a profile list, the committed locks are what a command offers: never the staging copy.
    (site.root / "envbuild.toml").write_text('[comfyui]\npath = "ComfyUI"\nbase-directory = "data"\n')
    which = cli(site, env, "sync", ok=False)
    assert which.returncode == 2 and "committed locks: cu126, cu128" in which.stderr, which

    # The next lock of the profile clears what the killed one left.
    cli(site, env, "lock", "--profile", "cu126", "--upgrade")
    assert not [p for p in site.locks.iterdir() if p.name.startswith(".cu126.staging-")]
    cli(site, env, "verify", "--profile", "cu126")


# ------------------------------------------------------------------------- credentials

USER = "envbuild-ci-user"
PASSWORD = "pa55-w0rd-never-written"  # noqa: S105 - a test secret, looked for in every file


@pytest.mark.skipif(os.name == "nt", reason="scans POSIX venv layout")
def test_index_credentials_never_reach_a_file_envbuild_writes(
    tmp_path: Path, env: dict[str, str], index_server: Any,
) -> None:
    site = make_deployment(tmp_path / "fresh-site")  # nothing locked yet: every step goes through the index
    index_server.server.require_auth("/whl/cu126/", USER, PASSWORD)
    # Without credentials the index refuses, and envbuild says so.
    result = cli(site, env, "lock", "--profile", "cu126", ok=False)
    assert result.returncode == 6 and "401 Unauthorized" in result.stderr, result
    assert "wants credentials" in result.stderr and "UV_INDEX_<NAME>_USERNAME" in result.stderr

    # Inline credentials in ENVBUILD_PYTORCH_INDEX would be written into pyproject.toml: refused, not echoed.
    inline = index_server.pytorch_base.replace("http://", f"http://{USER}:{PASSWORD}@")
    result = cli(site, {**env, "ENVBUILD_PYTORCH_INDEX": inline}, "lock", "--profile", "cu126", ok=False)
    assert result.returncode == 2, result
    assert "ENVBUILD_PYTORCH_INDEX" in result.stderr and "carries a user name or password" in result.stderr
    assert "UV_INDEX_PYTORCH_CU126_USERNAME and UV_INDEX_PYTORCH_CU126_PASSWORD" in result.stderr
    assert PASSWORD not in result.output

    # uv's own per-index variables: everything works, and no file anywhere holds them.
    authed = {**env, "UV_INDEX_PYTORCH_CU126_USERNAME": USER, "UV_INDEX_PYTORCH_CU126_PASSWORD": PASSWORD}
    outputs = [
        cli(site, authed, "-v", "lock", "--profile", "cu126"),
        cli(site, authed, "-v", "sync", "--profile", "cu126", "--venv", str(site.venv)),
        cli(site, authed, "verify", "--all"),
        cli(site, authed, "export", "--profile", "cu126", "--format", "requirements",
            "-o", str(site.root / "requirements-cu126.txt")),
        cli(site, authed, "export", "--profile", "cu126", "--format", "pylock",
            "-o", str(site.root / "pylock.cu126.toml")),
    ]
    assert torch_in_venv(site.venv) == ("2.7.1+cu126", "12.6")
    assert any(r.path.startswith("/whl/cu126/files/") for r in index_server.server.requests)  # really via auth
    written = [site.locks / name for name in ("README.md", ".gitignore")]
    written += [site.locks / "cu126" / name for name in ("pyproject.toml", "uv.lock", "envbuild-lock.json",
                                                          "constraints.txt")]
    written += [site.root / "requirements-cu126.txt", site.root / "pylock.cu126.toml"]
    assert all(path.is_file() for path in written), [p for p in written if not p.is_file()]
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    secrets = [s.encode() for s in (USER, PASSWORD, token)]
    leaks = [str(path) for path in sorted(site.root.rglob("*"))
             if path.is_file() and not path.is_symlink() and any(s in path.read_bytes() for s in secrets)]
    assert leaks == [], f"credentials written to {leaks}"
    for result in outputs:
        assert PASSWORD not in result.output and token not in result.output
    assert re.search(r'url = "http://127\.0\.0\.1:\d+/whl/cu126"', (site.locks / "cu126" / "pyproject.toml").read_text())
