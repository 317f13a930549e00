"""The broken-input corpus (`tests/bad_inputs/`) through the real CLI.

Each case folder is a fragment laid over one small, already locked deployment (the cu126 and cu128
locks are made once per test process, against the loopback index, so nothing in the corpus depends
on a port). Its `case.toml` says which command to run and what envbuild must answer:

    args = ["lock", "--profile", "cu126"]   # the CLI arguments ({root}: the deployment folder)
    exit = 2                                # the exit code
    stderr = ["ComfyUI/requirements.txt:4"] # substrings of stderr: the place (file:line, key, URL), the fix
    absent = ["s3cr3t"]                     # substrings that must appear nowhere (secrets)
    env = { ENVBUILD_UV = "{root}/x" }      # extra environment
    remove = ["ComfyUI/requirements.txt"]   # deleted from the deployment before the fragment is laid over
    executable = ["old-uv"]                 # fragment files to mark executable (POSIX only)
    [[edit]]                                # edits of the locked deployment, after the fragment:
    path = "locks/cu126/uv.lock"            #   `sub = [regex, replacement]` (must match) or
    truncate = 700                          #   `truncate = N` (keep the first N bytes)

Every case must also: print no traceback and no "internal error", leave every byte under locks/
as it was, and build no venv.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.deploy import make_deployment, run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomlkit as tomllib  # type: ignore[no-redef, unused-ignore]

CORPUS = Path(__file__).parent / "bad_inputs"
CASE_FILE = "case.toml"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / CASE_FILE).is_file())
_KEYS = {"args", "exit", "stderr", "absent", "env", "remove", "executable", "edit"}
_EDIT_KEYS = {"path", "sub", "truncate"}
# Network failures in the corpus (a refused port) must fail at once, not after uv's retries.
_FAST_NETWORK = {"UV_HTTP_RETRIES": "0", "UV_HTTP_TIMEOUT": "10"}


@dataclass(frozen=True)
class Case:
    name: str
    folder: Path
    args: tuple[str, ...]
    exit: int
    stderr: tuple[str, ...]
    absent: tuple[str, ...]
    env: Mapping[str, str]
    remove: tuple[str, ...]
    executable: tuple[str, ...]
    edits: tuple[Mapping[str, Any], ...]

    @classmethod
    def load(cls, name: str) -> Case:
        """A typo in the corpus must fail the case, not quietly check less."""
        folder = CORPUS / name
        data = tomllib.loads((folder / CASE_FILE).read_text(encoding="utf-8"))
        unknown = set(data) - _KEYS
        assert not unknown, f"{name}/{CASE_FILE}: unknown keys {sorted(unknown)}"
        assert data.get("stderr"), f"{name}/{CASE_FILE}: a case must name what the message says"
        edits = tuple(data.get("edit", ()))
        for edit in edits:
            assert set(edit) <= _EDIT_KEYS and "path" in edit, f"{name}: bad [[edit]] {edit}"
        return cls(name, folder, tuple(data["args"]), int(data["exit"]), tuple(data["stderr"]),
                   tuple(data.get("absent", ())), dict(data.get("env", {})), tuple(data.get("remove", ())),
                   tuple(data.get("executable", ())), edits)

    def lay_over(self, root: Path) -> None:
        """Remove, copy the fragment in (a file may replace a folder or the other way round), then edit."""
        for removed in self.remove:
            _delete(root / removed)
        for source in sorted(self.folder.rglob("*")):
            rel = source.relative_to(self.folder)
            if source.is_dir() or rel.as_posix() == CASE_FILE:
                continue
            target = root / rel
            for parent in reversed(target.parents):
                if parent.is_file():
                    parent.unlink()
            if target.is_dir():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        for script in self.executable:
            (root / script).chmod(0o755)
        for edit in self.edits:
            _apply_edit(root / edit["path"], edit, self.name)


def _delete(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _apply_edit(path: Path, edit: Mapping[str, Any], case: str) -> None:
    data = path.read_bytes()
    if "truncate" in edit:
        assert len(data) > edit["truncate"], f"{case}: {path.name} is too short to truncate"
        path.write_bytes(data[: edit["truncate"]])
    if "sub" in edit:
        pattern, replacement = edit["sub"]
        text, count = re.subn(pattern, replacement, data.decode("utf-8"), count=1)
        assert count == 1, f"{case}: `{pattern}` does not match {path.name}: the corpus is out of date"
        path.write_text(text, encoding="utf-8")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file (scratch files and staging folders included) with its sha256."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def isolated_env(tmp: Path, index_server: Any, uv_bin: Path) -> dict[str, str]:
    """What the `uv_env` fixture gives, for a deployment shared by a module's tests."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UV_", "PIP_")) and k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env.update(UV_CACHE_DIR=str(tmp / "uv-cache"), UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1",
               UV_DEFAULT_INDEX=index_server.pypi_url, ENVBUILD_PYTORCH_INDEX=index_server.pytorch_base,
               PIP_CONFIG_FILE=os.devnull, UV_PYTHON=sys.executable, XDG_CONFIG_HOME=str(tmp / "xdg-config"),
               ENVBUILD_CACHE_DIR=str(tmp / "envbuild-cache"),
               PATH=os.pathsep.join([str(uv_bin.parent), env.get("PATH", "")]))
    return env


@pytest.fixture(scope="module")
def locked_site(tmp_path_factory: pytest.TempPathFactory, index_server: Any, uv_bin: Path) -> Path:
    """The standard test deployment with current cu126 and cu128 locks, made once per process."""
    tmp = tmp_path_factory.mktemp("bad-inputs-base")
    root = make_deployment(tmp / "site").root
    env = isolated_env(tmp, index_server, uv_bin)
    for profile in ("cu126", "cu128"):
        result = run_cli(["lock", "--profile", profile], env=env, cwd=root)
        assert result.returncode == 0, result
    return root


@pytest.mark.parametrize("name", CASES)
def test_bad_input(name: str, locked_site: Path, tmp_path: Path, uv_env: dict[str, str]) -> None:
    case = Case.load(name)
    if case.executable and os.name == "nt":
        pytest.skip("the fake uv is a POSIX shell script")
    root = tmp_path / "site"
    shutil.copytree(locked_site, root, symlinks=True)
    case.lay_over(root)
    locks_before = snapshot(root / "locks")

    def fill(text: str) -> str:
        return text.replace("{root}", str(root))

    env = {**uv_env, **_FAST_NETWORK, **{k: fill(v) for k, v in case.env.items()}}
    result = run_cli([fill(a) for a in case.args], env=env, cwd=root, timeout=60)

    assert result.returncode == case.exit, result
    for expected in case.stderr:
        assert fill(expected) in result.stderr, f"{name}: stderr lacks {fill(expected)!r}\n{result!r}"
    for secret in case.absent:
        assert secret not in result.output, f"{name}: {secret!r} was shown"
    assert "Traceback" not in result.output and "internal error" not in result.output, result
    assert snapshot(root / "locks") == locks_before, f"{name}: locks/ was written"
    assert not (root / ".venv").exists(), f"{name}: a venv was built"


def test_every_corpus_folder_is_a_well_formed_case() -> None:
    """A folder without case.toml would be skipped in silence; a malformed case.toml fails here first."""
    assert CASES == sorted(p.name for p in CORPUS.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert len(CASES) >= 112  # the corpus only grows: a case removed by accident is caught
    for name in CASES:
        Case.load(name)


def test_lock_never_keeps_a_hand_edited_uv_lock(locked_site: Path, tmp_path: Path, uv_env: dict[str, str]) -> None:
    """uv keeps a previous lock that still fits as it is: envbuild must not hand it a hand-edited one
    as the starting point, or re-locking would bless an edited hash (or URL) into a trusted lock."""
    root = tmp_path / "site"
    shutil.copytree(locked_site, root, symlinks=True)
    uv_lock = root / "locks" / "cu126" / "uv.lock"
    original = uv_lock.read_text(encoding="utf-8")
    good = re.search(r"sha256:[0-9a-f]{64}", original)
    assert good is not None
    forged = "sha256:" + "0" * 64
    uv_lock.write_text(original.replace(good.group(0), forged, 1), encoding="utf-8")

    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=root)
    assert result.returncode == 0, result
    assert "uv.lock was changed outside envbuild" in result.stdout
    relocked = uv_lock.read_text(encoding="utf-8")
    assert forged not in relocked and good.group(0) in relocked
    assert relocked == original
    assert run_cli(["verify", "--profile", "cu126"], env=uv_env, cwd=root).returncode == 0
