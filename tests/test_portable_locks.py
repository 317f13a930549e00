"""Locks that hold no path of the machine that made them (issue 24, point 2): ComfyUI and the nodes
outside the deployment folder (`[comfyui] path = "../ComfyUI"`), the repository copied elsewhere."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

from envbuild.lock.freshness import MAX_NAMED_INPUTS, input_changes
from tests.support.deploy import make_deployment, run_cli


def test_a_lock_of_a_comfyui_outside_the_project_is_current_in_another_folder(
    tmp_path: Path, uv_env: dict[str, str]
) -> None:
    first = tmp_path / "machine-a"
    made = make_deployment(first, manager=None)
    made.add_node("node_x", "pyyaml\n")
    project = first / "deploy"
    project.mkdir()
    (first / "envbuild.toml").unlink()
    (project / "envbuild.toml").write_text(
        '[comfyui]\npath = "../ComfyUI"\nbase-directory = "../data"\n[lock]\nprofiles = ["cu126"]\n',
        encoding="utf-8")
    locked = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=project)
    assert locked.returncode == 0, locked
    pyproject = (project / "locks" / "cu126" / "pyproject.toml").read_text(encoding="utf-8")
    assert "../ComfyUI/requirements.txt" in pyproject and "../data/custom_nodes/node_x/requirements.txt" in pyproject
    committed_files = [p for p in project.rglob("*") if p.is_file() and ".git" not in p.parts]
    assert {"README.md", "pyproject.toml", "uv.lock", "envbuild-lock.json"} <= {p.name for p in committed_files}
    assert "../ComfyUI/requirements.txt" in (project / "locks" / "README.md").read_text(encoding="utf-8")
    for committed in committed_files:
        text = committed.read_text(encoding="utf-8", errors="replace")
        assert str(tmp_path) not in text, f"{committed} holds a path of this machine"
    # Another machine: the repository and the checkout at other absolute places, the same layout.
    second = tmp_path / "elsewhere" / "machine-b"
    shutil.copytree(first, second, symlinks=True)
    check = run_cli(["lock", "--check", "--profile", "cu126"], env=uv_env, cwd=second / "deploy")
    assert check.returncode == 0, check
    assert "cu126: current" in check.stdout
    # A changed requirement there is named in a line, with the file as the project names it.
    (second / "data" / "custom_nodes" / "node_x" / "requirements.txt").write_text("pyyaml\nsomething-new>=1\n")
    stale = run_cli(["lock", "--check", "--profile", "cu126"], env=uv_env, cwd=second / "deploy")
    assert stale.returncode == 4, stale
    assert "../data/custom_nodes/node_x/requirements.txt changed" in stale.output
    assert str(tmp_path) not in stale.output and len(stale.output) < 1000


def test_a_stale_message_names_a_few_inputs_and_counts_the_rest() -> None:
    old = SimpleNamespace(inputs={f"/a/ComfyUI/n{i}/requirements.txt": "x" for i in range(30)})
    new = SimpleNamespace(inputs={f"/b/ComfyUI/n{i}/requirements.txt": "x" for i in range(30)})
    reasons = input_changes(old, new)  # type: ignore[arg-type]  # only .inputs is read
    assert len(reasons) == MAX_NAMED_INPUTS
    assert reasons[-1] == f"and {60 - MAX_NAMED_INPUTS + 1} more input files"
    assert reasons[0] == "/b/ComfyUI/n0/requirements.txt is a new input"
