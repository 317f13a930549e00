"""Pinned custom nodes: envbuild.toml pins, `fetch`, `node add/update/remove/list`, freshness.

Every repository is a local one made here (file:// URLs); locks go through the loopback index.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from envbuild.core.errors import ConfigError
from envbuild.settings.config import load_config
from tests.support.deploy import Deployment, make_deployment, run_cli
from tests.support.gitrepos import commit_files, file_url, git, git_env, make_repo

NODE_INIT = {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n"}


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site", profiles=("cu126",))


@pytest.fixture
def env(uv_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return git_env(uv_env) | {"ENVBUILD_CACHE_DIR": str(tmp_path / "envbuild-cache")}


@pytest.fixture
def upstream(tmp_path: Path) -> dict[str, str]:
    """A node whose second commit (tag v2) adds a requirement; its first commit is tagged v1."""
    repo = tmp_path / "upstream" / "ComfyUI-Good"
    first = make_repo(repo, {**NODE_INIT, "requirements.txt": "einops\n"}, tag="v1")
    second = commit_files(repo, {"requirements.txt": "einops\nsix\n"}, "needs six", tag="v2")
    return {"url": file_url(repo), "v1": first, "v2": second, "path": str(repo)}


def pin_text(name: str, url: str, commit: str, **extra: object) -> str:
    lines = [f"[custom-nodes.{name}]", f'git = "{url}"', f'commit = "{commit}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def append_config(deployment: Deployment, text: str) -> None:
    path = deployment.root / "envbuild.toml"
    path.write_text(path.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")


def snapshot(deployment: Deployment) -> dict[str, bytes]:
    """custom_nodes (every file but .git internals), envbuild.toml and locks/, byte for byte."""
    files = {"envbuild.toml": (deployment.root / "envbuild.toml").read_bytes()}
    for root in (deployment.nodes, deployment.locks):
        if root.exists():
            for path in sorted(root.rglob("*")):
                if path.is_file() and ".git" not in path.relative_to(root).parts:
                    files[str(path.relative_to(deployment.root))] = path.read_bytes()
    return files


# -- envbuild.toml pins --------------------------------------------------------------------------------

def test_pins_are_read_and_checked_like_every_other_key(deployment: Deployment, upstream: dict[str, str]) -> None:
    append_config(deployment, pin_text("ComfyUI-Good", upstream["url"], upstream["v1"], ref="v1", disabled=True))
    pins = load_config(deployment.root).node_pins
    assert [(p.name, p.commit, p.ref, p.disabled) for p in pins] == [("ComfyUI-Good", upstream["v1"], "v1", True)]
    for bad, said in (
        (pin_text("X", upstream["url"], upstream["v1"], branch="main"), "unknown key `custom-nodes.X.branch`"),
        (pin_text("X", upstream["url"], upstream["v1"][:12]), "`custom-nodes.X.commit` must be a full commit hash"),
        (pin_text("X", upstream["url"], upstream["v1"], disabled="yes"), "`custom-nodes.X.disabled` must be true"),
        ('[custom-nodes.X]\ncommit = "' + upstream["v1"] + '"\n', "`custom-nodes.X.git` is missing"),
        ('[custom-nodes]\nX = "url"\n', "`custom-nodes.X` must be a table"),
    ):
        site = deployment.root.parent / "bad"
        shutil.rmtree(site, ignore_errors=True)
        bad_deployment = make_deployment(site, profiles=("cu126",))
        append_config(bad_deployment, bad)
        with pytest.raises(ConfigError) as caught:
            load_config(site)
        assert said in str(caught.value), (bad, str(caught.value))


# -- fetch ------------------------------------------------------------------------------------------------

def test_fetch_restores_pinned_nodes_and_names_a_moved_or_dirty_one(
    deployment: Deployment, upstream: dict[str, str], env: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "upstream" / "Other"
    other_commit = make_repo(other, {**NODE_INIT, "requirements.txt": "pyyaml\n"})
    append_config(deployment, pin_text("ComfyUI-Good", upstream["url"], upstream["v1"], ref="v1")
                  + pin_text("Other", file_url(other), other_commit))
    result = run_cli(["fetch"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    good = deployment.nodes / "ComfyUI-Good"
    assert git(good, "rev-parse", "HEAD") == upstream["v1"]
    assert (good / ".git" / "shallow").exists()  # one commit deep
    assert (deployment.nodes / "Other" / "requirements.txt").read_text() == "pyyaml\n"
    again = run_cli(["fetch"], env=env, cwd=deployment.root)
    assert again.returncode == 0 and f"node ComfyUI-Good: data/custom_nodes/ComfyUI-Good already at " \
                                      f"{upstream['v1'][:12]}" in again.stdout, again
    # Moved by hand: named, left alone, put back with --force.
    git(good, "fetch", "-q", "origin", upstream["v2"])
    git(good, "checkout", "-q", "--detach", upstream["v2"])
    (deployment.nodes / "Other" / "requirements.txt").write_text("pyyaml\nsix\n")  # dirty
    result = run_cli(["fetch"], env=env, cwd=deployment.root)
    assert result.returncode == 8, result
    assert f"node ComfyUI-Good (data/custom_nodes/ComfyUI-Good) is at {upstream['v2'][:12]}, not at its pin " \
           f"{upstream['v1'][:12]}" in result.stderr, result
    # At its pin with local changes: left alone and said, not an error.
    assert "Other" not in result.stderr and "Other already at" in result.stdout, result
    assert "has local changes (requirements.txt)" in result.stdout, result
    assert git(good, "rev-parse", "HEAD") == upstream["v2"]
    listed = json.loads(run_cli(["node", "list", "--json"], env=env, cwd=deployment.root).stdout)
    states = {n["name"]: n["states"] for n in listed["nodes"]}
    assert states == {"ComfyUI-Good": ["moved"], "Other": ["dirty"]}, listed
    result = run_cli(["fetch", "--force"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert git(good, "rev-parse", "HEAD") == upstream["v1"]
    assert (deployment.nodes / "Other" / "requirements.txt").read_text() == "pyyaml\n"


def test_fetch_falls_back_to_a_full_fetch_when_the_commit_cannot_be_fetched_by_name(
    deployment: Deployment, upstream: dict[str, str], env: dict[str, str]
) -> None:
    """A server that refuses a commit by name (an old one, or a ref that is a short name): a full fetch."""
    git(Path(upstream["path"]), "tag", "-d", "v1")  # v1 is now no ref's tip: not served by name over v0
    append_config(deployment, pin_text("ComfyUI-Good", upstream["url"], upstream["v1"]))
    refusing = env | {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.version", "GIT_CONFIG_VALUE_0": "0"}
    result = run_cli(["fetch"], env=refusing, cwd=deployment.root)
    assert result.returncode == 0, result
    assert git(deployment.nodes / "ComfyUI-Good", "rev-parse", "HEAD") == upstream["v1"]
    assert not (deployment.nodes / "ComfyUI-Good" / ".git" / "shallow").exists()  # the full history came


# -- node add / update / remove, and freshness ------------------------------------------------------------

def test_node_add_locks_first_then_lands_pins_and_update_moves_it(
    deployment: Deployment, upstream: dict[str, str], env: dict[str, str]
) -> None:
    (deployment.root / "envbuild.toml").write_text(
        "# the team's deployment\n" + (deployment.root / "envbuild.toml").read_text(), encoding="utf-8")
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    result = run_cli(["node", "add", upstream["url"], "--ref", "v1"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    node = deployment.nodes / "ComfyUI-Good"
    assert git(node, "rev-parse", "HEAD") == upstream["v1"]
    text = (deployment.root / "envbuild.toml").read_text()
    assert text.startswith("# the team's deployment\n"), text  # comments kept
    assert "[custom-nodes.ComfyUI-Good]" in text and f'commit = "{upstream["v1"]}"' in text and 'ref = "v1"' in text
    assert f"node ComfyUI-Good: added at {upstream['v1'][:12]} (v1)" in result.stdout, result
    assert "einops" in (deployment.locks / "cu126" / "pyproject.toml").read_text()
    assert not (deployment.root / ".envbuild-staging").exists()
    check = run_cli(["lock", "--check"], env=env, cwd=deployment.root)
    assert check.returncode == 0, check
    # The second commit adds a requirement: update moves the pin and re-locks with it.
    lock_before = (deployment.locks / "cu126" / "uv.lock").read_text()
    assert 'name = "six"' not in lock_before
    result = run_cli(["node", "update", "ComfyUI-Good", "--ref", "v2"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert git(node, "rev-parse", "HEAD") == upstream["v2"]
    assert 'name = "six"' in (deployment.locks / "cu126" / "uv.lock").read_text()
    assert f'commit = "{upstream["v2"]}"' in (deployment.root / "envbuild.toml").read_text()
    assert run_cli(["lock", "--check"], env=env, cwd=deployment.root).returncode == 0
    # Moved by hand behind the lock's back: lock --check names the node and both commits.
    git(node, "fetch", "-q", "origin", upstream["v1"])
    git(node, "checkout", "-q", "--detach", upstream["v1"])
    check = run_cli(["lock", "--check"], env=env, cwd=deployment.root)
    assert check.returncode == 4, check
    assert f"node ComfyUI-Good moved from {upstream['v2'][:12]} to {upstream['v1'][:12]}" in check.stderr, check
    assert f"node ComfyUI-Good is at {upstream['v1'][:12]}, pinned at {upstream['v2'][:12]}" in check.stderr, check
    # Missing (a fresh clone before `fetch`): named, with the command.
    shutil.rmtree(node)
    check = run_cli(["lock", "--check"], env=env, cwd=deployment.root)
    assert check.returncode == 4, check
    assert "pinned node ComfyUI-Good is missing (run `envbuild fetch`)" in check.stderr, check
    assert run_cli(["fetch"], env=env, cwd=deployment.root).returncode == 0
    assert run_cli(["lock", "--check"], env=env, cwd=deployment.root).returncode == 0
    # Removal re-locks without it.
    result = run_cli(["node", "remove", "ComfyUI-Good"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert not node.exists() and "custom-nodes" not in (deployment.root / "envbuild.toml").read_text()
    assert 'name = "six"' not in (deployment.locks / "cu126" / "uv.lock").read_text()
    assert run_cli(["lock", "--check"], env=env, cwd=deployment.root).returncode == 0


def test_a_conflicting_node_changes_nothing_and_is_named(
    deployment: Deployment, env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "upstream" / "ComfyUI-OldNumpy"
    make_repo(bad, {**NODE_INIT, "requirements.txt": "einops\nnumpy<1.0\n"})
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    before = snapshot(deployment)
    result = run_cli(["node", "add", file_url(bad)], env=env, cwd=deployment.root)
    assert result.returncode == 2, result
    assert "conflicting requirements for numpy" in result.stderr, result
    # the node and its line, where it would have landed
    assert "data/custom_nodes/ComfyUI-OldNumpy/requirements.txt:2 (node ComfyUI-OldNumpy)" in result.stderr, result
    assert "nothing changed" in result.stderr and ".envbuild-staging" not in result.stderr, result
    assert "numpy>=1.25.0" in result.stderr, result  # what it conflicts with
    assert snapshot(deployment) == before
    assert not (deployment.nodes / "ComfyUI-OldNumpy").exists()
    assert not (deployment.root / ".envbuild-staging").exists()


def test_node_list_names_unpinned_nodes_with_the_command_that_pins_them(
    deployment: Deployment, upstream: dict[str, str], env: dict[str, str]
) -> None:
    manual = deployment.nodes / "ComfyUI-Good"
    git(deployment.nodes, "clone", "-q", upstream["path"], "ComfyUI-Good")
    deployment.add_node("loose-folder", "einops\n")
    listed = json.loads(run_cli(["node", "list", "--json"], env=env, cwd=deployment.root).stdout)["nodes"]
    by_name = {n["name"]: n for n in listed}
    assert by_name["ComfyUI-Good"]["states"] == ["unpinned"]
    assert by_name["loose-folder"]["states"] == ["unpinned", "not-git"]
    assert "comfyui-manager" not in by_name
    command = by_name["ComfyUI-Good"]["fix"]
    assert command == f"envbuild node add {upstream['path']} --ref {upstream['v2']} --name ComfyUI-Good"
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    # The printed command pins the node where it is.
    result = run_cli(command.split()[1:], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert git(manual, "rev-parse", "HEAD") == upstream["v2"]
    check = run_cli(["lock", "--check"], env=env, cwd=deployment.root)
    assert check.returncode == 0, check
    assert "node loose-folder (data/custom_nodes/loose-folder) is not pinned" in check.stderr, check


def test_read_head_follows_a_branch_through_loose_and_packed_refs(tmp_path: Path) -> None:
    from envbuild.settings.pins import read_head

    repo = tmp_path / "repo"
    first = make_repo(repo, NODE_INIT)
    assert read_head(repo) == first  # on branch main: a loose ref
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert read_head(repo) == first  # packed
    git(repo, "checkout", "-q", "--detach")
    assert read_head(repo) == first  # detached: HEAD holds the commit
    assert read_head(tmp_path / "nothing-here") is None


def test_remove_keeps_a_node_with_local_changes_unless_forced(
    deployment: Deployment, upstream: dict[str, str], env: dict[str, str]
) -> None:
    append_config(deployment, pin_text("ComfyUI-Good", upstream["url"], upstream["v1"]))
    assert run_cli(["fetch"], env=env, cwd=deployment.root).returncode == 0
    (deployment.nodes / "ComfyUI-Good" / "__init__.py").write_text("# my work\n")
    before = snapshot(deployment)
    result = run_cli(["node", "remove", "ComfyUI-Good"], env=env, cwd=deployment.root)
    assert result.returncode == 2, result
    assert "has local changes or new files (__init__.py), and this deletes its folder: envbuild does not delete them" in result.stderr, result
    assert snapshot(deployment) == before
    result = run_cli(["node", "update", "Nope"], env=env, cwd=deployment.root)
    assert result.returncode == 2 and "no pinned node named Nope (pinned: ComfyUI-Good)" in result.stderr, result


def test_update_keeps_local_changes_and_new_files_unless_forced(
    deployment: Deployment, upstream: dict[str, str], env: dict[str, str]
) -> None:
    """It ran to exit 0 and deleted both before (trust, round two, class 5)."""
    append_config(deployment, pin_text("ComfyUI-Good", upstream["url"], upstream["v1"]))
    assert run_cli(["fetch"], env=env, cwd=deployment.root).returncode == 0
    folder = deployment.nodes / "ComfyUI-Good"
    (folder / "my_workflow.json").write_text("{}\n")  # untracked, not ignored: the user's
    before = snapshot(deployment)
    result = run_cli(["node", "update", "ComfyUI-Good", "--ref", "v2"], env=env, cwd=deployment.root)
    assert result.returncode == 2, result
    assert "(my_workflow.json), and this replaces its folder" in result.stderr and "--force" in result.stderr
    assert snapshot(deployment) == before and (folder / "my_workflow.json").is_file()
    forced = run_cli(["node", "update", "ComfyUI-Good", "--ref", "v2", "--force"], env=env, cwd=deployment.root)
    assert forced.returncode == 0, forced


def test_a_node_uv_cannot_resolve_changes_nothing_either(
    deployment: Deployment, env: dict[str, str], tmp_path: Path
) -> None:
    """The merge finds no conflict; the resolver does (no such version): the staged lock fails, not the real one."""
    bad = tmp_path / "upstream" / "ComfyUI-Future"
    make_repo(bad, {**NODE_INIT, "requirements.txt": "six==9.9.9\n"})
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    before = snapshot(deployment)
    result = run_cli(["node", "add", file_url(bad)], env=env, cwd=deployment.root)
    assert result.returncode != 0, result
    assert "six" in result.stderr and "node ComfyUI-Future at" in result.stderr, result
    assert "nothing changed" in result.stderr, result
    assert snapshot(deployment) == before
    assert not (deployment.root / ".envbuild-staging").exists()


def test_node_add_whose_pin_cannot_be_written_leaves_nothing_behind(
    deployment: Deployment, upstream: dict[str, str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trust, round two, class 7: a full disk at the last step left the node in custom_nodes, unpinned
    (exit 70). In process, so the write can fail exactly there."""
    import errno

    from envbuild.settings import pins_edit
    from tests.support.deploy import invoke_cli

    def full_disk(*_: object) -> list[str]:
        raise OSError(errno.ENOSPC, "No space left on device", str(deployment.root / "envbuild.toml"))

    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    before = snapshot(deployment)
    monkeypatch.setattr(pins_edit, "write_pin", full_disk)
    result = invoke_cli(["node", "add", upstream["url"], "--ref", "v1"], env=env, cwd=deployment.root)
    assert result.returncode == 10 and "No space left on device" in result.stderr, result
    assert "free disk space" in result.stderr
    assert not (deployment.nodes / "ComfyUI-Good").exists()
    assert snapshot(deployment) == before


def test_node_add_of_several_urls_is_one_change_and_locks_once_per_profile(
    deployment: Deployment, env: dict[str, str], tmp_path: Path
) -> None:
    """Issue: five `node add`s took three minutes (two uv locks per profile per node). Several URLs are now
    one staged lock per profile (and one seeded confirmation after landing), and one conflict adds none."""
    import uv

    repos = {}
    for name, requirements in (("ComfyUI-A", "einops\n"), ("ComfyUI-B", "six\n"), ("ComfyUI-C", "pyyaml\n")):
        repo = tmp_path / "upstream" / name
        make_repo(repo, {**NODE_INIT, "requirements.txt": requirements})
        repos[name] = file_url(repo)
    runs = tmp_path / "uv-runs"
    shim = tmp_path / "uv-shim"
    shim.write_text(f'#!/bin/sh\n[ "$1" = lock ] && echo lock >> "{runs}"\nexec "{uv.find_uv_bin()}" "$@"\n')
    shim.chmod(0o755)
    counted = dict(env, ENVBUILD_UV=str(shim))
    result = run_cli(["node", "add", *repos.values()], env=counted, cwd=deployment.root)
    assert result.returncode == 0, result
    assert all(f"node {name}: added at" in result.stdout for name in repos), result
    assert result.stdout.count("commit envbuild.toml and locks/ together") == 1
    assert len(runs.read_text().split()) == 2  # one profile: the staged lock, then the seeded confirmation
    config = load_config(deployment.root)
    assert sorted(p.name for p in config.node_pins) == sorted(repos)
    locked = (deployment.locks / "cu126" / "uv.lock").read_text()
    assert all(f'name = "{p}"' in locked for p in ("einops", "six", "pyyaml"))

    bad = tmp_path / "upstream" / "ComfyUI-Bad"
    make_repo(bad, {**NODE_INIT, "requirements.txt": "six==9.9.9\n"})
    good = tmp_path / "upstream" / "ComfyUI-Good2"
    make_repo(good, {**NODE_INIT, "requirements.txt": "einops\n"})
    before = snapshot(deployment)
    failed = run_cli(["node", "add", file_url(good), file_url(bad)], env=env, cwd=deployment.root)
    assert failed.returncode != 0 and "nothing changed" in failed.stderr, failed
    assert snapshot(deployment) == before
    refused = run_cli(["node", "add", file_url(good), file_url(bad), "--ref", "main"], env=env, cwd=deployment.root)
    assert refused.returncode == 2 and "--ref and --name go with one URL" in refused.stderr, refused


def test_node_disable_and_enable_lock_first_then_move_the_folder(
    deployment: Deployment, upstream: dict[str, str], env: dict[str, str]
) -> None:
    append_config(deployment, pin_text("ComfyUI-Good", upstream["url"], upstream["v2"]))
    assert run_cli(["fetch"], env=env, cwd=deployment.root).returncode == 0
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    assert 'name = "six"' in (deployment.locks / "cu126" / "uv.lock").read_text()  # v2 asks for six
    off = run_cli(["node", "disable", "ComfyUI-Good"], env=env, cwd=deployment.root)
    assert off.returncode == 0 and "node ComfyUI-Good: disabled" in off.stdout, off
    assert (deployment.nodes / ".disabled" / "ComfyUI-Good" / "requirements.txt").is_file()
    assert not (deployment.nodes / "ComfyUI-Good").exists()
    assert "disabled = true" in (deployment.root / "envbuild.toml").read_text()
    assert 'name = "six"' not in (deployment.locks / "cu126" / "uv.lock").read_text()
    assert run_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    again = run_cli(["node", "disable", "ComfyUI-Good"], env=env, cwd=deployment.root)
    assert again.returncode == 2 and "disabled already" in again.stderr
    on = run_cli(["node", "enable", "ComfyUI-Good"], env=env, cwd=deployment.root)
    assert on.returncode == 0 and "node ComfyUI-Good: enabled" in on.stdout, on
    assert (deployment.nodes / "ComfyUI-Good" / "requirements.txt").is_file()
    assert 'name = "six"' in (deployment.locks / "cu126" / "uv.lock").read_text()
    assert run_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0


def test_a_pin_is_edited_where_it_stands_keeping_its_comments(tmp_path: Path) -> None:
    """Issue: `node update` moved the node's table to the end of envbuild.toml and lost its comments."""
    from envbuild.settings.pins import NodePin
    from envbuild.settings.pins_edit import write_pin

    path = tmp_path / "envbuild.toml"
    path.write_text(textwrap.dedent(f"""\
        [custom-nodes.A]
        # why we pin A here
        git = "https://example.invalid/A"
        commit = "{'a' * 40}"
        ref = "v1"
        disabled = true

        [custom-nodes.B]
        git = "https://example.invalid/B"
        commit = "{'b' * 40}"

        [lock]
        profiles = ["cu126"]
        """))
    write_pin(path, "A", NodePin("A", "https://example.invalid/A", "c" * 40, "v2"))
    text = path.read_text()
    assert text.index("[custom-nodes.A]") < text.index("[custom-nodes.B]") < text.index("[lock]")
    assert "# why we pin A here" in text and f'commit = "{"c" * 40}"' in text and 'ref = "v2"' in text
    assert "disabled" not in text
