"""Every command × every setting that decides which lock folder a deployment uses, through the real CLI.

One deployment per setting (a row) is locked once; every command of the row must then act on the
lock folder that `lock` wrote — sync installs the torch it holds, verify and `lock --check` call it
current, export writes from it, diff finds it, run and check start ComfyUI under its torch guard,
doctor's lock checks pass, locks/README.md lists it — or fail with the message that names the fix.
Settings given to `lock` as flags are written into envbuild.toml; the row's later commands run
without the flag and must agree. The loopback index is this module's own (tests/support/matrix.py),
so the locks survive from one test to the next.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.deploy import Result, locked_versions, make_deployment, run_cli, torch_in_venv
from tests.support.matrix import EXTRA_PACKAGE, RTX_4070, MatrixIndex, isolated_env, matrix_index

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomlkit as tomllib  # type: ignore[no-redef]

# ComfyUI's main.py in every row: says which torch it got and which torch guard envbuild set.
MAIN_PY = """\
import os
import torch
print("ComfyUI torch", torch.__version__, "guard", os.environ.get("PIP_CONSTRAINT"))
"""
OVERRIDE_PROFILE_FROM = 'torch = ">=2.6.0,<2.15"\ntorchvision = ">=0.21.0,<0.30"\ntorchaudio = ">=2.6.0,<2.12"\n'
OVERRIDE_PROFILE_TO = 'torch = ">=2.6.0,<2.7"\ntorchvision = ">=0.21.0,<0.22"\ntorchaudio = ">=2.6.0,<2.7"\n'


@dataclass(frozen=True)
class Setting:
    """One row: how the deployment differs from the plain one, and what its lock must then hold.

    Strings may name the row's indexes as {pytorch}, {pypi_cuda}, {mirror}, {mirror_pypi}."""

    id: str
    config: str = ""  # appended to envbuild.toml (which ends inside [lock])
    env: dict[str, str] = field(default_factory=dict)
    lock_flags: tuple[str, ...] = ()  # given to the first `lock` only
    persisted: tuple[tuple[str, str, Any], ...] = ()  # (table, key, value) `lock` must write
    profiles: tuple[str, str] = ("cu126", "cu128")
    torch: tuple[str, str] = ("2.7.1+cu126", "{pytorch}/cu126")  # the first profile's locked torch
    second_torch: str = "2.8.0+cu128"
    lock_dir: str = "locks"
    cwd: str = "."
    present: tuple[str, ...] = ()  # packages the lock must hold
    absent: tuple[str, ...] = ()  # ...and must not
    down_for_all: tuple[str, ...] = ()  # canonical index paths that answer 503 throughout the row
    down_for_sync: tuple[str, ...] = ()  # ...only while the row syncs (with an empty uv cache)


PYPI_ROWS = dict(env={"UV_DEFAULT_INDEX": "{pypi_cuda}"}, profiles=("cu126-pypi", "cu128-pypi"),
                 torch=("2.7.1", "{pypi_cuda}"), second_torch="2.8.0")
SETTINGS = [
    Setting("torch-source-file", config='torch-source = "pypi"\n', **PYPI_ROWS),  # type: ignore[arg-type]
    Setting("torch-source-flag", lock_flags=("--torch-source", "pypi"),
            persisted=(("lock", "torch-source", "pypi"),), **PYPI_ROWS),  # type: ignore[arg-type]
    Setting("lock-mirror-in-file", config='\n[mirrors]\npytorch = "{mirror}"\npypi = "{mirror_pypi}"\n',
            torch=("2.7.1+cu126", "{mirror}/cu126"), down_for_all=("/whl/", "/simple/")),
    Setting("install-mirror-from-env", env={"ENVBUILD_PYTORCH_MIRROR": "{mirror}",
                                            "ENVBUILD_PYPI_MIRROR": "{mirror_pypi}"},
            down_for_sync=("/whl/", "/simple/")),
    Setting("excluded-node", lock_flags=("--exclude-node", "node-six"), persisted=(("nodes", "exclude", ["node-six"]),),
            absent=("six",)),
    Setting("extra-requirements", lock_flags=("--extra-requirements", "extra/more.txt"),
            persisted=(("lock", "extra-requirements", ["extra/more.txt"]),), present=(EXTRA_PACKAGE,)),
    Setting("profile-replacing-builtin", torch=("2.6.0+cu126", "{pytorch}/cu126")),
    Setting("lock-dir-elsewhere", config='dir = "deps/locks"\n', lock_dir="deps/locks"),
    Setting("lock-dir-flag", lock_flags=("--lock-dir", "deps/locks"), persisted=(("lock", "dir", "deps/locks"),),
            lock_dir="deps/locks"),
    Setting("run-from-subfolder", cwd="ComfyUI/comfy_extras"),
    # Flags given in a subfolder: their paths are written relative to envbuild.toml, not to the subfolder.
    Setting("flags-from-subfolder", cwd="ComfyUI/comfy_extras",
            lock_flags=("--extra-requirements", "../../extra/more.txt", "--exclude-node", "node-six"),
            persisted=(("lock", "extra-requirements", ["extra/more.txt"]), ("nodes", "exclude", ["node-six"])),
            present=(EXTRA_PACKAGE,), absent=("six",)),
]


class Row:
    """One setting's deployment, locked once; the commands of its tests run against it."""

    def __init__(self, setting: Setting, index: MatrixIndex, root: Path, uv_bin: Path, uv_cache: Path) -> None:
        self.setting, self.index, self.root = setting, index, root
        self.site = make_deployment(root / "site")
        (self.site.comfyui / "main.py").write_text(MAIN_PY, encoding="utf-8")
        (self.site.comfyui / "comfy_extras").mkdir()
        # A node asking for six: left out by the flag in one row, disabled (".disabled") in the others.
        excluding = "--exclude-node" in setting.lock_flags
        self.site.add_node("node-six" if excluding else "node-six.disabled", "six\n")
        (self.site.root / "extra").mkdir()  # read only where a row names it
        (self.site.root / "extra" / "more.txt").write_text(f"{EXTRA_PACKAGE}>=1\n", encoding="utf-8")
        if setting.id == "profile-replacing-builtin":
            from envbuild.torch.catalogue import builtin_profiles_dir

            text = (builtin_profiles_dir() / "cu126.toml").read_text(encoding="utf-8")
            assert OVERRIDE_PROFILE_FROM in text
            (self.site.root / "profiles").mkdir()
            (self.site.root / "profiles" / "cu126.toml").write_text(
                text.replace(OVERRIDE_PROFILE_FROM, OVERRIDE_PROFILE_TO), encoding="utf-8")
        with (self.site.root / "envbuild.toml").open("a", encoding="utf-8") as handle:
            handle.write(self.fill(setting.config))
        self.env = isolated_env(index, uv_bin, uv_cache=uv_cache, envbuild_cache=root / "envbuild-cache",
                                home=root, extra={k: self.fill(v) for k, v in setting.env.items()})
        self.cwd = (self.site.root / setting.cwd).resolve()
        self.config_before = (self.site.root / "envbuild.toml").read_text(encoding="utf-8")
        self.first_lock = self.cli("lock", *setting.lock_flags)

    def fill(self, text: str) -> str:
        index = self.index
        return text.format(pytorch=index.pytorch_base, pypi_cuda=index.pypi_cuda_url, mirror=index.mirror_base,
                           mirror_pypi=index.mirror_pypi_url)

    def cli(self, *args: str, env: dict[str, str] | None = None, down: tuple[str, ...] = ()) -> Result:
        server = self.index.server
        for prefix in (*self.setting.down_for_all, *down):
            server.fail(prefix, 503)
        try:
            return run_cli(list(args), env=env or self.env, cwd=self.cwd)
        finally:
            server.clear_faults()

    @property
    def first(self) -> str:
        return self.setting.profiles[0]

    @property
    def second(self) -> str:
        return self.setting.profiles[1]

    @property
    def lock_dir(self) -> Path:
        return self.site.root / self.setting.lock_dir

    def shown(self, profile: str) -> str:
        """A lock folder as envbuild names it (relative to envbuild.toml's folder)."""
        return f"{self.setting.lock_dir}/{profile}"

    def torch_locked(self, profile: str) -> tuple[str, str]:
        return locked_versions(self.lock_dir / profile / "uv.lock")["torch"]

    @functools.cached_property
    def lock_all(self) -> Result:
        return self.cli("lock", "--all")

    @functools.cached_property
    def synced(self) -> Result:
        """`sync` with no flags: the default venv beside the checkout. A row that installs through a
        mirror syncs with an empty uv cache and the canonical indexes down."""
        env = self.env
        if self.setting.down_for_sync:
            env = dict(env, UV_CACHE_DIR=str(self.root / "fresh-uv-cache"))
            self.index.server.clear_log()
        return self.cli("-v", "sync", env=env, down=self.setting.down_for_sync)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatrixIndex]:
    with matrix_index(tmp_path_factory.mktemp("matrix-wheels")) as served:
        yield served


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("matrix-uv-cache")


# One xdist group per row: under `--dist loadgroup` a row's cells share one worker (one lock, one sync).
@pytest.fixture(scope="module", params=[pytest.param(s, id=s.id, marks=pytest.mark.xdist_group(f"matrix-{s.id}"))
                                        for s in SETTINGS])
def row(request: pytest.FixtureRequest, index: MatrixIndex, uv_bin: Path, uv_cache: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Row:
    setting: Setting = request.param
    return Row(setting, index, tmp_path_factory.mktemp(setting.id), uv_bin, uv_cache)


def _toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- lock

def test_lock(row: Row) -> None:
    result, setting = row.first_lock, row.setting
    assert result.returncode == 0, result
    assert f"{row.first}: locked" in result.stdout and row.shown(row.first) in result.stdout, result
    assert row.torch_locked(row.first) == (setting.torch[0], row.fill(setting.torch[1]))
    packages = locked_versions(row.lock_dir / row.first / "uv.lock")
    for name in setting.present:
        assert name in packages, name
    for name in setting.absent:
        assert name not in packages, name
    folders = [p.parent.relative_to(row.site.root).as_posix() for p in row.site.root.rglob("uv.lock")]
    assert row.shown(row.first) in folders
    assert all(f.startswith(f"{row.setting.lock_dir}/") for f in folders), f"a lock folder elsewhere: {folders}"
    committed = "".join((row.lock_dir / row.first / name).read_text(encoding="utf-8")
                        for name in ("pyproject.toml", "uv.lock", "envbuild-lock.json"))
    # Only a mirror the team committed in envbuild.toml (mode "lock") may be named by the lock.
    assert ("/mirror" in committed) == (row.setting.id == "lock-mirror-in-file")
    config = _toml(row.site.root / "envbuild.toml")
    for table, key, value in setting.persisted:
        assert config[table][key] == value, (table, key, config)
        assert f"envbuild.toml updated: {table}.{key}" in result.stdout, result
    if not setting.persisted:
        assert (row.site.root / "envbuild.toml").read_text(encoding="utf-8") == row.config_before
        assert "envbuild.toml updated" not in result.stdout


def test_lock_again_without_the_flags_is_a_no_op(row: Row) -> None:
    before = row.site.snapshot_locks() if row.setting.lock_dir == "locks" else None
    no_uv = dict(row.env, ENVBUILD_UV=str(row.root / "no-such-uv"))
    result = row.cli("lock", env=no_uv)
    assert result.returncode == 0, result
    assert f"{row.first}: current ({row.shown(row.first)}" in result.stdout and "uv not run" in result.stdout, result
    if before is not None:
        assert row.site.snapshot_locks() == before


def test_lock_check(row: Row) -> None:
    result = row.cli("lock", "--check")
    assert result.returncode == 0, result
    assert f"{row.first}: current ({row.shown(row.first)})" in result.stdout, result


def test_lock_all(row: Row) -> None:
    result = row.lock_all
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == [row.first, "current"] for line in lines), result
    assert any(line.split()[:2] == [row.second, "locked"] for line in lines), result
    torch = row.torch_locked(row.second)
    assert torch[0] == row.setting.second_torch
    assert torch[1] == row.fill(row.setting.torch[1]).replace("cu126", "cu128")


def test_lock_check_all(row: Row) -> None:
    assert row.lock_all.returncode == 0, row.lock_all
    result = row.cli("lock", "--check", "--all")
    assert result.returncode == 0, result
    for profile in row.setting.profiles:
        assert f"{profile}: current ({row.shown(profile)})" in result.stdout, result


# ---------------------------------------------------------------- the offline readers

def test_verify(row: Row) -> None:
    result = row.cli("verify")
    assert result.returncode == 0, result
    assert f"{row.first}: current ({row.shown(row.first)}: " in result.stdout, result
    assert "only the audit ran" not in result.stdout


def test_verify_all(row: Row) -> None:
    assert row.lock_all.returncode == 0, row.lock_all
    result = row.cli("verify", "--all", "--json")
    assert result.returncode == 0, result
    rows = {r["profile"]: r for r in json.loads(result.stdout)}
    assert sorted(rows) == sorted(row.setting.profiles)
    for profile, found in rows.items():
        assert (found["state"], found["lock"], found["compared_with_inputs"]) == ("current", row.shown(profile), True)


def test_export(row: Row) -> None:
    target = row.root / f"export-{row.first}.txt"
    result = row.cli("export", "--format", "requirements", "-o", str(target))
    assert result.returncode == 0, result
    assert f"{row.first}: wrote" in result.stdout and f"from {row.shown(row.first)}/uv.lock" in result.stdout
    lines = target.read_text(encoding="utf-8").splitlines()
    assert any(line.startswith(f"torch=={row.setting.torch[0]}") for line in lines), lines


def test_diff(row: Row) -> None:
    assert row.lock_all.returncode == 0, row.lock_all
    result = row.cli("diff", "--json", row.first, row.second)
    assert result.returncode == 0, result
    data = json.loads(result.stdout)
    assert (data["a"], data["b"]) == (row.first, row.second)
    torch = next(d for d in data["differences"] if d["name"] == "torch")
    assert (torch["a"]["versions"], torch["b"]["versions"]) == ([row.setting.torch[0]], [row.setting.second_torch])


def test_locks_readme(row: Row) -> None:
    assert row.lock_all.returncode == 0, row.lock_all
    readme = (row.lock_dir / "README.md").read_text(encoding="utf-8")
    public = row.setting.torch[0].split("+")[0]
    assert f"| `{row.first}` | {public}" in readme, readme
    assert f"| `{row.second}` | {row.setting.second_torch.split('+')[0]}" in readme, readme
    stray = [p for p in row.site.root.rglob("README.md") if p.parent != row.lock_dir]
    assert not stray, stray


# ---------------------------------------------------------------- the venv

def test_sync(row: Row) -> None:
    result = row.synced
    assert result.returncode == 0, result
    venv = row.site.root / ".venv"
    version, _ = torch_in_venv(venv)
    assert version == row.torch_locked(row.first)[0] == row.setting.torch[0]
    if row.setting.down_for_sync:
        fetched = [r.path for r in row.index.server.requests if r.path.endswith(".whl")]
        assert fetched and all(p.startswith(("/mirror/whl/", "/mirror-pypi/simple/")) for p in fetched), fetched


def test_run(row: Row) -> None:
    assert row.synced.returncode == 0, row.synced
    result = row.cli("run")
    assert result.returncode == 0, result
    guard = row.lock_dir.resolve() / row.first / "constraints.txt"
    assert f"ComfyUI torch {row.setting.torch[0]} guard {guard}" in result.stdout, result


def test_check(row: Row) -> None:
    assert row.synced.returncode == 0, row.synced
    result = row.cli("check", "--json")
    assert result.returncode == 0, result
    data = json.loads(result.stdout)
    assert (data["profile"], data["status"]) == (row.first, "passed"), data
    guard = row.lock_dir.resolve() / row.first / "constraints.txt"
    assert f"ComfyUI torch {row.setting.torch[0]} guard {guard}" in data["log_tail"], data


def test_doctor(row: Row) -> None:
    assert row.synced.returncode == 0, row.synced
    result = row.cli("doctor", "--no-import", "--json")
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["lock present"] == {**checks["lock present"], "status": "pass", "detail": row.shown(row.first)}
    assert checks["lock state"]["status"] == "pass", checks
    assert checks["venv matches lock"]["status"] == "pass", checks
    probes = [c for c in report["checks"] if c["name"] == "index reachable"]  # one per index the lock names
    assert probes and all(c["status"] == "pass" for c in probes), probes
    assert any(c["detail"].startswith(row.fill(row.setting.torch[1]) + " ") for c in probes), probes
    failed = {name for name, c in checks.items() if c["status"] == "fail"}
    assert failed <= {"machine runs profile"}, checks  # this machine has no GPU
    assert result.returncode == (1 if failed else 0), result


def test_detect(row: Row) -> None:
    result = row.cli("detect", "--json", env=dict(row.env, **RTX_4070))
    assert result.returncode == 0, result
    suffix = "-pypi" if row.first.endswith("-pypi") else ""
    assert json.loads(result.stdout)["recommendation"]["profile"] == f"cu128{suffix}"


# ---------------------------------------------------------------- the other torch source: the fix is named

def test_the_other_torch_source_names_the_committed_lock(row: Row) -> None:
    """Asking for the sibling (cu126 when cu126-pypi is committed, or the reverse) fails before
    anything is installed, naming the lock that exists and the flag that uses it."""
    pypi = row.first.endswith("-pypi")
    asked, other = ("pytorch-index", "pypi") if pypi else ("pypi", "pytorch-index")
    wanted = row.first.removesuffix("-pypi") if pypi else f"{row.first}-pypi"
    venv = row.root / "never-built"
    result = row.cli("sync", "--torch-source", asked, "--venv", str(venv))
    assert result.returncode == 4, result
    assert f"no lock for profile {wanted} at {row.shown(wanted)}, but there is one for {row.first}" in result.stderr
    assert f"--torch-source {other}" in result.stderr and f"envbuild lock --profile {wanted}" in result.stderr
    assert not venv.exists()


# ---------------------------------------------------------------- a changed input: the fix is named

def test_a_changed_input_names_the_lock_and_the_fix(row: Row) -> None:
    """A copy of the row's deployment with one more requirement: `lock --check` and `sync` call the
    row's lock folder stale, say which file changed, and name the `lock` that fixes it."""
    copy = row.root / "changed"
    shutil.copytree(row.site.root, copy, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
    with (copy / "ComfyUI" / "requirements.txt").open("a", encoding="utf-8") as handle:
        handle.write("typing-extensions>=4\n")
    cwd = copy / row.setting.cwd
    checked = run_cli(["lock", "--check"], env=row.env, cwd=cwd)
    assert checked.returncode == 4, checked
    assert f"{row.first}: stale ({row.shown(row.first)}): ComfyUI/requirements.txt changed" in checked.stderr
    assert f"envbuild lock --profile {row.first}" in checked.stderr
    venv = row.root / "never-synced"
    synced = run_cli(["sync", "--venv", str(venv)], env=row.env, cwd=cwd)
    assert synced.returncode == 4, synced
    assert "out of date" in synced.stderr and "ComfyUI/requirements.txt changed" in synced.stderr
    assert f"envbuild lock --profile {row.first}" in synced.stderr
    assert not venv.exists()
