"""One definition of staleness, two ways to reach it: the raw-bytes fast path must never disagree.

A real lock is made once through the CLI (its verdict goes into the per-user cache). Then each
mutation — every kind of input file, every setting that reaches a lock — is applied to a copy of
the deployment (with a copy of that cache), and the two paths are asked:

- the full check, `trust.assess(..., full=True)`: parses and renders everything;
- the fast path, `trust.remembered(...)`: a cached verdict for the exact bytes, else None.

The full check must say stale (current for a change that asks for nothing new), and the fast path
must say nothing unless the full check says current. A forged lock folder (pyproject and uv.lock
re-made by hand with numpy routed to the torch index, fingerprint rewritten to match) must be
refused by every command that uses a lock, with an empty cache and with the one that vouched for
the real lock.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from envbuild.deploy.deployment import load_deployment
from envbuild.deploy.selection import ProfileRequest, profile_to_lock
from envbuild.lock.trust import CURRENT, MISSING, STALE, assess, remembered
from envbuild.pkgs.lockdir import sha256_text
from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli
from tests.support.matrix import MatrixIndex, isolated_env, matrix_index

PROFILE = "cu126"


# ---------------------------------------------------------------- the locked deployment, made once

@dataclass(frozen=True)
class Locked:
    site: Deployment
    cache: Path  # the ENVBUILD_CACHE_DIR the lock was made with
    env: dict[str, str]
    index: MatrixIndex


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false",
                    *args], cwd=cwd, check=True, capture_output=True)


def _build(root: Path) -> Deployment:
    """A deployment with one input of every kind: ComfyUI (a git checkout), the Manager, a node's
    requirements.txt with an -r include, a node's pyproject, a disabled node, an extra requirements
    file and a deployment profile replacing the built-in cu126."""
    site = make_deployment(root, profiles=(PROFILE,))
    node_a = site.add_node("node-a", "six\n-r common.txt\n")
    (node_a / "common.txt").write_text("einops>=0.7\n", encoding="utf-8")
    node_b = site.add_node("node-b", "")
    (node_b / "requirements.txt").unlink()
    (node_b / "pyproject.toml").write_text('[project]\nname = "node-b"\nversion = "1"\ndependencies = ["requests>=2"]\n',
                                           encoding="utf-8")
    site.add_node("node-c.disabled", "numpy<2\n")
    (site.root / "extra.txt").write_text("filelock\n", encoding="utf-8")
    with (site.root / "envbuild.toml").open("a", encoding="utf-8") as handle:
        handle.write('extra-requirements = ["extra.txt"]\n')
    from envbuild.torch.catalogue import builtin_profiles_dir

    (site.root / "profiles").mkdir()
    shutil.copy(builtin_profiles_dir() / f"{PROFILE}.toml", site.root / "profiles" / f"{PROFILE}.toml")
    _git(site.comfyui, "init", "-q")
    _git(site.comfyui, "add", "-A")
    _git(site.comfyui, "commit", "-q", "-m", "ComfyUI")
    return site


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, uv_bin: Path) -> Iterator[Locked]:
    root = tmp_path_factory.mktemp("freshness")
    with matrix_index(root / "wheels") as index:
        env = isolated_env(index, uv_bin, uv_cache=root / "uv-cache", envbuild_cache=root / "cache", home=root)
        site = _build(root / "site")
        result = run_cli(["lock"], env=env, cwd=site.root)
        assert result.returncode == 0 and f"{PROFILE}: locked" in result.stdout, result
        yield Locked(site, root / "cache", env, index)


def _copy(locked: Locked, target: Path) -> tuple[Path, dict[str, str]]:
    """The locked deployment and the cache that vouches for it, copied: each mutation gets its own."""
    shutil.copytree(locked.site.root, target / "site", symlinks=True)
    shutil.copytree(locked.cache, target / "cache")
    return target / "site", dict(locked.env, ENVBUILD_CACHE_DIR=str(target / "cache"))


# ---------------------------------------------------------------- the mutations

Mutation = Callable[[Path, dict[str, str]], None]  # edits the deployment at root and/or the environment
CONFIG = "envbuild.toml"
PROFILE_FILE = f"profiles/{PROFILE}.toml"
NODE_A = "data/custom_nodes/node-a"


def _append(relative: str, text: str) -> Mutation:
    def mutate(root: Path, env: dict[str, str]) -> None:
        with (root / relative).open("a", encoding="utf-8") as handle:
            handle.write(text)
    return mutate


def _replace(relative: str, old: str, new: str) -> Mutation:
    def mutate(root: Path, env: dict[str, str]) -> None:
        path = root / relative
        text = path.read_text(encoding="utf-8")
        assert old in text, (relative, old)
        path.write_text(text.replace(old, new), encoding="utf-8")
    return mutate


def _environ(**values: str) -> Mutation:
    def mutate(root: Path, env: dict[str, str]) -> None:
        env.update(values)
    return mutate


def _new_node(root: Path, env: dict[str, str]) -> None:
    Deployment(root).add_node("node-d", "pyyaml>=6\n")


def _new_node_without_requirements(root: Path, env: dict[str, str]) -> None:
    (root / "data" / "custom_nodes" / "node-e").mkdir()
    (root / "data" / "custom_nodes" / "node-e" / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")


def _remove_node(root: Path, env: dict[str, str]) -> None:
    shutil.rmtree(root / "data" / "custom_nodes" / "node-a")


def _disable_node(root: Path, env: dict[str, str]) -> None:
    nodes = root / "data" / "custom_nodes"
    (nodes / "node-b").rename(nodes / "node-b.disabled")


def _node_pyproject_beside_requirements(root: Path, env: dict[str, str]) -> None:
    (root / NODE_A / "pyproject.toml").write_text('[project]\nname = "node-a"\nversion = "1"\n'
                                                  'dependencies = ["numpy<2"]\n', encoding="utf-8")


def _crlf(relative: str) -> Mutation:
    def mutate(root: Path, env: dict[str, str]) -> None:
        path = root / relative
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    return mutate


def _new_comfyui_commit(root: Path, env: dict[str, str]) -> None:
    _git(root / "ComfyUI", "commit", "-q", "--allow-empty", "-m", "another ComfyUI commit")


MUTATIONS: list[tuple[str, Mutation, str]] = [
    # (id, mutation, the full check's state)
    ("nothing", lambda root, env: None, CURRENT),
    ("comfyui-requirement-line", _append("ComfyUI/requirements.txt", "typing-extensions>=4\n"), STALE),
    # six is asked for by node-a already: the rendered pyproject, hence the lock, stays the same
    ("comfyui-line-already-required", _append("ComfyUI/requirements.txt", "six\n"), CURRENT),
    ("comfyui-comment-only", _append("ComfyUI/requirements.txt", "# a comment\n\n"), CURRENT),
    ("manager-requirements", _append("data/custom_nodes/comfyui-manager/requirements.txt", "pillow>=10\n"), STALE),
    ("node-requirements", _replace(f"{NODE_A}/requirements.txt", "six\n", "six>=1.16\n"), STALE),
    ("node-pyproject-dependencies", _replace("data/custom_nodes/node-b/pyproject.toml", '"requests>=2"',
                                             '"requests>=2", "typing-extensions"'), STALE),
    ("new-node", _new_node, STALE),
    ("new-node-without-requirements", _new_node_without_requirements, CURRENT),
    ("removed-node", _remove_node, STALE),
    ("disabled-node", _disable_node, STALE),
    ("disabled-node-edited", _append("data/custom_nodes/node-c.disabled/requirements.txt", "six\n"), CURRENT),
    ("node-pyproject-beside-requirements", _node_pyproject_beside_requirements, CURRENT),  # requirements.txt wins
    ("comfyui-crlf-line-endings", _crlf("ComfyUI/requirements.txt"), CURRENT),
    ("include-content", _replace(f"{NODE_A}/common.txt", "einops>=0.7", "einops>=0.8"), STALE),
    ("include-comment-only", _append(f"{NODE_A}/common.txt", "# pinned for node-a\n"), CURRENT),
    ("extra-requirements-file", _append("extra.txt", "requests>=2.30\n"), STALE),
    ("profile-torch-bound", _replace(PROFILE_FILE, 'torch = ">=2.6.0,<2.15"', 'torch = ">=2.7.0,<2.15"'), STALE),
    ("profile-comment-only", _append(PROFILE_FILE, "# reviewed\n"), CURRENT),
    ("config-comment-only", _append(CONFIG, "# reviewed\n"), CURRENT),
    ("requires-python", _replace(CONFIG, 'requires-python = ">=3.10"', 'requires-python = ">=3.11"'), STALE),
    ("torch-source", _append(CONFIG, 'torch-source = "pypi"\n'), MISSING),  # selects cu126-pypi: no lock yet
    ("exclude-node", _append(CONFIG, '\n[nodes]\nexclude = ["node-a"]\n'), STALE),
    ("exclude-unknown-node", _append(CONFIG, '\n[nodes]\nexclude = ["no-such-node"]\n'), CURRENT),
    ("pytorch-index-env", _environ(ENVBUILD_PYTORCH_INDEX="http://127.0.0.1:9/whl"), STALE),
    ("lock-mirror-in-file", _append(CONFIG, '\n[mirrors]\npytorch = "https://mirror.example/whl"\n'), STALE),
    ("lock-mirror-from-env", _environ(ENVBUILD_PYTORCH_MIRROR="https://mirror.example/whl",
                                      ENVBUILD_MIRROR_MODE="lock"), STALE),
    ("lock-pypi-mirror-from-env", _environ(ENVBUILD_PYPI_MIRROR="https://pypi-mirror.example/simple",
                                           ENVBUILD_MIRROR_MODE="lock"), STALE),
    ("install-mirror-from-env", _environ(ENVBUILD_PYTORCH_MIRROR="https://mirror.example/whl"), CURRENT),
    ("manager-disabled", _append(CONFIG, "\n[manager]\nenabled = false\n"), STALE),
    ("comfyui-commit", _new_comfyui_commit, STALE),
]


@pytest.mark.parametrize(("mutate", "expected"), [pytest.param(m, e, id=i) for i, m, e in MUTATIONS])
def test_fast_path_agrees_with_the_full_check(locked: Locked, tmp_path: Path, mutate: Mutation,
                                              expected: str) -> None:
    root, env = _copy(locked, tmp_path)
    mutate(root, env)
    deployment = load_deployment(root, env)
    profile = profile_to_lock(deployment, ProfileRequest())
    fast = remembered(deployment, profile)  # first: the full check below teaches the cache
    full = assess(deployment, profile, full=True)
    assert full.state == expected, full.reasons
    assert bool(full.reasons) == (expected == STALE), full.reasons  # a stale lock says what changed
    if full.state != CURRENT:
        assert fast is None, (fast, full.reasons)
    if fast is not None:
        assert fast.state == full.state
    if expected == CURRENT:
        learned = remembered(load_deployment(root, env), profile)  # a later command: the cache knows now
        assert learned is not None and learned.state == CURRENT


def test_the_cache_vouches_for_an_unchanged_copy(locked: Locked, tmp_path: Path) -> None:
    """Without this the test above proves nothing: the fast path must answer for the bytes it saw."""
    root, env = _copy(locked, tmp_path)
    deployment = load_deployment(root, env)
    fast = remembered(deployment, profile_to_lock(deployment, ProfileRequest()))
    assert fast is not None and fast.state == CURRENT and fast.cached


# ---------------------------------------------------------------- a forged lock folder

def _forge(root: Path, env: dict[str, str]) -> None:
    """What someone with write access to the repository could do: route numpy to the torch index
    in the pyproject, re-lock with the real uv, and write the new digests into the fingerprint."""
    folder = root / "locks" / PROFILE
    pyproject = folder / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    anchor = 'torch = {index = "pytorch-cu126"}'
    assert anchor in text, text
    pyproject.write_text(text.replace(anchor, f'{anchor}\nnumpy = {{index = "pytorch-cu126"}}', 1), encoding="utf-8")
    proc = subprocess.run(["uv", "lock", "--project", str(folder)], env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert locked_versions(folder / "uv.lock")["numpy"][0] == "99.0.0"  # the planted one, from the torch index
    record = folder / "envbuild-lock.json"
    data = json.loads(record.read_text(encoding="utf-8"))
    data["pyproject_sha256"] = sha256_text(pyproject.read_bytes())
    data["uv_lock_sha256"] = sha256_text((folder / "uv.lock").read_bytes())
    record.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def forged(locked: Locked, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root, env = _copy(locked, tmp_path_factory.mktemp("forged"))
    _forge(root, env)
    return root, env


COMMANDS = {
    "lock-check": ["lock", "--check"],
    "sync": ["sync", "--venv", "{tmp}/venv"],
    "run": ["run", "--venv", "{tmp}/venv"],
    "export": ["export", "--format", "requirements", "-o", "{tmp}/requirements.txt"],
}


@pytest.mark.parametrize("cache", ["fresh-cache", "the-lock's-cache"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_forged_lock_folder_is_refused(forged: tuple[Path, dict[str, str]], tmp_path: Path, command: str,
                                         cache: str) -> None:
    root, env = forged
    if cache == "fresh-cache":
        env = dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "empty-cache"))
    before = {p: p.read_bytes() for p in (root / "locks").rglob("*") if p.is_file()}
    args = [a.format(tmp=tmp_path) for a in COMMANDS[command]]
    result = run_cli(args, env=env, cwd=root)
    assert result.returncode == 5, result
    assert "edited" in result.stderr or "cannot be trusted" in result.stderr, result
    assert "Traceback" not in result.output
    assert not (tmp_path / "venv").exists() and not (tmp_path / "requirements.txt").exists()
    assert {p: p.read_bytes() for p in (root / "locks").rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("command", ["sync", "export"])
def test_a_forged_lock_folder_alone_is_refused_by_the_audit(forged: tuple[Path, dict[str, str]], tmp_path: Path,
                                                             command: str) -> None:
    """A fresh machine has locks/ only: no inputs to re-render, so the audit alone must catch it."""
    root, env = forged
    shutil.copytree(root / "locks", tmp_path / "fresh" / "locks")
    env = dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "empty-cache"))
    args = [a.format(tmp=tmp_path) for a in COMMANDS[command]] + ["--profile", PROFILE]
    result = run_cli(args, env=env, cwd=tmp_path / "fresh")
    assert result.returncode == 5, result
    assert "cannot be trusted" in result.stderr and "numpy" in result.stderr, result
    assert not (tmp_path / "venv").exists() and not (tmp_path / "requirements.txt").exists()


def test_a_broken_include_is_an_error_for_both_paths(locked: Locked, tmp_path: Path) -> None:
    """An -r include that went away is neither current nor stale: the full check stops on it (naming the
    file), and the fast path has no verdict for it."""
    from envbuild.core.errors import EnvbuildError

    root, env = _copy(locked, tmp_path)
    (root / NODE_A / "common.txt").unlink()
    deployment = load_deployment(root, env)
    profile = profile_to_lock(deployment, ProfileRequest())
    assert remembered(deployment, profile) is None
    with pytest.raises(EnvbuildError, match="common.txt"):
        assess(deployment, profile, full=True)


@pytest.mark.parametrize(("changed", "stays_current"), [
    pytest.param({}, True, id="nothing"),
    pytest.param({"ENVBUILD_PYTORCH_INDEX": "http://127.0.0.1:9/whl"}, False, id="pytorch-index-env"),
    pytest.param({"ENVBUILD_PYTORCH_MIRROR": "https://mirror.example/whl", "ENVBUILD_MIRROR_MODE": "lock"}, False,
                 id="lock-mirror-from-env"),
    pytest.param({"ENVBUILD_PYTORCH_MIRROR": "https://mirror.example/whl"}, True, id="install-mirror-from-env"),
])
def test_without_a_checkout_the_fast_path_agrees_with_the_audit(locked: Locked, tmp_path: Path,
                                                                 changed: dict[str, str], stays_current: bool) -> None:
    """A fresh machine with locks/ only: the verdict is the audit's, keyed without inputs. A setting
    that changes what the audit expects must not find the verdict the unchanged setting left."""
    shutil.copytree(locked.site.root / "locks", tmp_path / "fresh" / "locks")
    env = dict(locked.env, ENVBUILD_CACHE_DIR=str(tmp_path / "cache"))
    before = load_deployment(tmp_path / "fresh", env)
    profile = before.catalogue.get(PROFILE)
    assert assess(before, profile, full=True).state == CURRENT
    assert remembered(before, profile) is not None  # the verdict is in the cache now
    after = load_deployment(tmp_path / "fresh", dict(env, **changed))
    fast = remembered(after, profile)
    full = assess(after, profile, full=True)
    assert full.compared_with_inputs is False
    assert (full.state == CURRENT) == stays_current, full.reasons
    if full.state != CURRENT:
        assert fast is None, (fast, full.reasons)
