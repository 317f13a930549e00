"""Custom nodes laid out to fool envbuild, through the real CLI.

What the broken-input corpus cannot hold (symbolic links, control characters in folder names,
TOML that linters refuse to read) is built here at run time. Each case must end in a message
naming the node and the way out, never a silent skip, a machine path in a committed file, or
an internal error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support.deploy import Deployment, make_deployment, run_cli

needs_symlinks = pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges on Windows")


@pytest.fixture
def site(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site", profiles=("cu126",))


def _clean(result_output: str) -> None:
    assert "Traceback" not in result_output and "internal error" not in result_output, result_output


@needs_symlinks
@pytest.mark.parametrize("target", ["gone.txt", "requirements.txt"], ids=["dangling", "looping"])
def test_a_node_requirements_link_to_nothing_stops_the_lock(site: Deployment, uv_env: dict[str, str],
                                                            target: str) -> None:
    """Not "no requirements": the README says a node file that cannot be read stops the lock."""
    node = site.add_node("linked", "six\n")
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root).returncode == 0
    before = site.snapshot_locks()
    (node / "requirements.txt").unlink()
    (node / "requirements.txt").symlink_to(target)

    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root)

    assert result.returncode == 2, result
    assert "data/custom_nodes/linked/requirements.txt: is a symbolic link to nothing" in result.stderr
    assert "--exclude-node linked" in result.stderr
    _clean(result.output)
    assert site.snapshot_locks() == before
    excluded = run_cli(["lock", "--profile", "cu126", "--exclude-node", "linked"], env=uv_env, cwd=site.root)
    assert excluded.returncode == 0, excluded


@needs_symlinks
def test_a_custom_nodes_link_to_nothing_is_an_error(site: Deployment, uv_env: dict[str, str]) -> None:
    for child in sorted(site.nodes.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    site.nodes.rmdir()
    site.nodes.symlink_to(site.root / "nowhere")

    result = run_cli(["merge", "--profile", "cu126"], env=uv_env, cwd=site.root)

    assert result.returncode == 2, result
    assert "custom nodes folder data/custom_nodes is a symbolic link to nothing" in result.stderr
    _clean(result.output)


@needs_symlinks
@pytest.mark.parametrize("linked", ["node", "custom_nodes"])
def test_linked_nodes_put_no_machine_path_into_committed_files(
    site: Deployment, uv_env: dict[str, str], tmp_path: Path, linked: str
) -> None:
    """A node folder that is a link, or one inside a linked custom_nodes, is shown as configured."""
    elsewhere = tmp_path / "machine-only-place"
    if linked == "node":
        outside = Deployment(elsewhere).add_node("real-node", "six\n")
        outside.rename(elsewhere / "real-node")
        (site.nodes / "linkednode").symlink_to(elsewhere / "real-node", target_is_directory=True)
    else:
        site.add_node("linkednode", "six\n")
        site.nodes.rename(elsewhere)
        site.nodes.symlink_to(elsewhere, target_is_directory=True)

    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result

    folder = site.locks / "cu126"
    pyproject = (folder / "pyproject.toml").read_text(encoding="utf-8")
    fingerprint = (folder / "envbuild-lock.json").read_text(encoding="utf-8")
    for committed in (pyproject, fingerprint, (folder / "uv.lock").read_text(encoding="utf-8")):
        assert str(elsewhere) not in committed and "machine-only-place" not in committed
    assert "#   data/custom_nodes/linkednode/requirements.txt" in pyproject
    assert "data/custom_nodes/linkednode/requirements.txt" in json.loads(fingerprint)["inputs"]
    again = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert again.returncode == 0 and "current" in again.stdout, again
    assert run_cli(["verify", "--profile", "cu126"], env=uv_env, cwd=site.root).returncode == 0


@pytest.mark.skipif(os.name == "nt", reason="Windows forbids control characters in file names")
def test_a_node_folder_named_with_control_characters_is_refused(site: Deployment, uv_env: dict[str, str]) -> None:
    """Refused, not skipped: ComfyUI would still import the folder, without its requirements locked."""
    site.add_node("evil\nname\x1b[2J", "six\n")

    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root)

    assert result.returncode == 2, result
    assert "custom node folder 'evil\\nname\\x1b[2J' has control characters" in result.stderr
    assert "rename the folder" in result.stderr
    assert "\x1b" not in result.output
    _clean(result.output)
    assert not site.locks.exists()


@pytest.mark.skipif(os.name == "nt", reason="Windows forbids control characters in file names")
def test_a_disabled_node_with_control_characters_is_listed_escaped(site: Deployment, uv_env: dict[str, str]) -> None:
    site.add_node("evil\x1b[2J.disabled", "six\n")

    result = run_cli(["merge", "--profile", "cu126"], env=uv_env, cwd=site.root)

    assert result.returncode == 0, result
    assert "'evil\\x1b[2J.disabled' (disabled)" in result.output
    assert "\x1b" not in result.output


def test_quotes_in_a_node_folder_name_still_make_a_lock_uv_reads(site: Deployment, uv_env: dict[str, str]) -> None:
    """Quotes are not control characters: the name goes only into TOML comments, where they are plain text."""
    site.add_node("it's \"quoted\"", "six\n")

    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root)

    assert result.returncode == 0, result
    assert "data/custom_nodes/it's \"quoted\"/requirements.txt" in (site.locks / "cu126" / "pyproject.toml").read_text(
        encoding="utf-8")
    assert run_cli(["verify", "--profile", "cu126"], env=uv_env, cwd=site.root).returncode == 0


def test_a_node_pyproject_whose_project_is_not_a_table_is_a_warning(site: Deployment,
                                                                    uv_env: dict[str, str]) -> None:
    node = site.nodes / "strnode"
    node.mkdir()
    (node / "pyproject.toml").write_text('project = "strnode"\n', encoding="utf-8")

    result = run_cli(["merge", "--profile", "cu126"], env=uv_env, cwd=site.root)

    assert result.returncode == 0, result
    assert "data/custom_nodes/strnode/pyproject.toml:0 (node strnode): [project] is not a table" in result.stderr


def test_pytorch_triton_is_taken_from_the_profile_that_pins_it(site: Deployment, uv_env: dict[str, str]) -> None:
    """The rule refuses only names the profile leaves to PyPI; the nightly profile pins pytorch-triton."""
    site.add_node("tritonnode", "pytorch-triton\n")

    refused = run_cli(["merge", "--profile", "cu126"], env=uv_env, cwd=site.root)
    pinned = run_cli(["merge", "--profile", "nightly-cu132"], env=uv_env, cwd=site.root)

    assert refused.returncode == 2, refused
    assert "data/custom_nodes/tritonnode/requirements.txt:1: `pytorch-triton` (node tritonnode)" in refused.stderr
    assert pinned.returncode == 0, pinned
    assert "pytorch-triton" in pinned.stdout


def test_a_node_pyproject_that_is_a_folder_stops_the_lock(site: Deployment, uv_env: dict[str, str]) -> None:
    (site.nodes / "dirpy" / "pyproject.toml").mkdir(parents=True)

    result = run_cli(["merge", "--profile", "cu126"], env=uv_env, cwd=site.root)

    assert result.returncode == 2, result
    assert "data/custom_nodes/dirpy/pyproject.toml: is not a file" in result.stderr
    assert "--exclude-node dirpy" in result.stderr
    _clean(result.output)


@needs_symlinks
def test_a_node_folder_link_to_nothing_is_listed_as_skipped(site: Deployment, uv_env: dict[str, str]) -> None:
    (site.nodes / "gone-node").symlink_to(site.root / "nowhere", target_is_directory=True)

    result = run_cli(["merge", "--profile", "cu126"], env=uv_env, cwd=site.root)

    assert result.returncode == 0, result
    assert "gone-node (a symbolic link to nothing: broken or looping)" in result.stderr
