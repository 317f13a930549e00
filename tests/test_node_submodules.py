"""A node whose code lives in a git submodule (ComfyUI_UltimateSDUpscale's `repositories/...`): `node add`
and `fetch` check it out at the commit the node's pin records; one that moved is named like a moved node.

Every repository is a local one made here; git refuses file-protocol submodules by default since 2.38, so
the fixture adds its submodule with `-c protocol.file.allow=always`, and envbuild allows them only for a
node whose own URL is local (see envbuild/comfy/nodegit.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from envbuild.comfy.nodegit import update_submodules
from tests.support.deploy import Deployment, make_deployment, run_cli
from tests.support.gitrepos import commit_files, file_url, git, git_env, make_repo

SUBMODULE = "repositories/ultimate_sd_upscale"


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site", profiles=("cu126",))


@pytest.fixture
def env(uv_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return git_env(uv_env) | {"ENVBUILD_CACHE_DIR": str(tmp_path / "envbuild-cache")}


@pytest.fixture
def upstream(tmp_path: Path) -> dict[str, str]:
    """The code repository (two commits) and a node that records its first commit as a submodule."""
    code = tmp_path / "upstream" / "ultimate-upscale-for-automatic1111"
    first = make_repo(code, {"scripts/ultimate-upscale.py": "VERSION = 1\n"})
    second = commit_files(code, {"scripts/ultimate-upscale.py": "VERSION = 2\n"}, "v2")
    git(code, "checkout", "-q", first)
    node = tmp_path / "upstream" / "ComfyUI_UltimateSDUpscale"
    make_repo(node, {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n", "requirements.txt": "einops\n"})
    git(node, "-c", "protocol.file.allow=always", "submodule", "--quiet", "add", str(code), SUBMODULE)
    pinned = commit_files(node, {}, "the code as a submodule")
    git(code, "checkout", "-q", "main")
    return {"url": file_url(node), "commit": pinned, "code_first": first, "code_second": second}


def states(deployment: Deployment, env: dict[str, str]) -> dict[str, Any]:
    listed = json.loads(run_cli(["node", "list", "--json"], env=env, cwd=deployment.root).stdout)
    return {n["name"]: (n["states"], n["submodules"]) for n in listed["nodes"]}


def test_node_add_and_fetch_bring_the_submodule_and_a_moved_one_is_named(
    deployment: Deployment, upstream: dict[str, str], env: dict[str, str]
) -> None:
    result = run_cli(["node", "add", upstream["url"], "--ref", upstream["commit"]], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    node = deployment.nodes / "ComfyUI_UltimateSDUpscale"
    code = node / SUBMODULE
    assert (code / "scripts" / "ultimate-upscale.py").read_text() == "VERSION = 1\n"
    assert git(code, "rev-parse", "HEAD") == upstream["code_first"]
    assert states(deployment, env) == {"ComfyUI_UltimateSDUpscale": (["ok"], [])}

    # A fresh machine: `fetch` clones the node and its submodule at the commit the pin records.
    git(deployment.root, "init", "-q")  # unrelated: the deployment's own repository does not matter
    import shutil

    shutil.rmtree(node)
    result = run_cli(["fetch"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert git(code, "rev-parse", "HEAD") == upstream["code_first"]
    assert (code / "scripts" / "ultimate-upscale.py").read_text() == "VERSION = 1\n"

    # Moved by hand: named like a moved node by node list, lock --check and fetch; --force puts it back.
    git(code, "checkout", "-q", upstream["code_second"])
    moved = (f"submodule {SUBMODULE} moved from {upstream['code_first'][:12]} to "
             f"{upstream['code_second'][:12]}")
    assert states(deployment, env) == {"ComfyUI_UltimateSDUpscale": (["submodule-moved"], [moved])}
    listed = run_cli(["node", "list"], env=env, cwd=deployment.root)
    assert f"    {moved}\n" in listed.stdout, listed
    check = run_cli(["lock", "--check"], env=env, cwd=deployment.root)
    assert (f"node ComfyUI_UltimateSDUpscale: {moved}: envbuild fetch --force (puts the submodules back at the "
            "commits the pin records)") in check.stderr, check
    refused = run_cli(["fetch"], env=env, cwd=deployment.root)
    assert refused.returncode == 8, refused
    assert (f"node ComfyUI_UltimateSDUpscale (data/custom_nodes/ComfyUI_UltimateSDUpscale) has {moved}; "
            "`envbuild fetch --force` puts it back") in refused.stderr, refused
    assert git(code, "rev-parse", "HEAD") == upstream["code_second"]  # left alone
    forced = run_cli(["fetch", "--force"], env=env, cwd=deployment.root)
    assert forced.returncode == 0, forced
    assert git(code, "rev-parse", "HEAD") == upstream["code_first"]
    assert states(deployment, env) == {"ComfyUI_UltimateSDUpscale": (["ok"], [])}

    # A checkout made without its submodules (as envbuild did before): named, and `fetch` checks them out.
    git(node, "submodule", "--quiet", "deinit", "--force", "--all")
    missing = f"submodule {SUBMODULE} is not checked out (at {upstream['code_first'][:12]} by its pin)"
    assert states(deployment, env) == {"ComfyUI_UltimateSDUpscale": (["submodule-missing"], [missing])}
    result = run_cli(["fetch"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert f"had submodules not checked out, now at the commits its pin records ({SUBMODULE})" in result.stdout
    assert git(code, "rev-parse", "HEAD") == upstream["code_first"]


def test_node_update_brings_the_submodule_of_the_new_commit(
    deployment: Deployment, upstream: dict[str, str], env: dict[str, str], tmp_path: Path
) -> None:
    node_repo = tmp_path / "upstream" / "ComfyUI_UltimateSDUpscale"
    result = run_cli(["node", "add", upstream["url"], "--ref", upstream["commit"]], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    git(node_repo / SUBMODULE, "checkout", "-q", upstream["code_second"])
    newer = commit_files(node_repo, {}, "the code at v2")
    result = run_cli(["node", "update", "ComfyUI_UltimateSDUpscale", "--ref", newer], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    code = deployment.nodes / "ComfyUI_UltimateSDUpscale" / SUBMODULE
    assert (code / "scripts" / "ultimate-upscale.py").read_text() == "VERSION = 2\n"
    assert git(code, "rev-parse", "HEAD") == upstream["code_second"]


class _Recording:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, args: list[str], doing: str, **_: object) -> None:
        self.calls.append(args)


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://github.com/ssitu/ComfyUI_UltimateSDUpscale", False),
    ("git@github.com:ssitu/ComfyUI_UltimateSDUpscale.git", False),
    ("file:///srv/git/ComfyUI_UltimateSDUpscale", True),
    ("/srv/git/ComfyUI_UltimateSDUpscale", True),
])
def test_file_protocol_submodules_are_allowed_only_for_a_local_node(tmp_path: Path, url: str, allowed: bool) -> None:
    (tmp_path / ".gitmodules").write_text("", encoding="utf-8")
    recorder = _Recording()
    update_submodules(recorder, tmp_path, url, "ComfyUI_UltimateSDUpscale")  # type: ignore[arg-type]
    (args,) = recorder.calls
    assert ("protocol.file.allow=always" in args) is allowed
    assert args[-3:] == ["update", "--init", "--recursive"]
    no_gitmodules = _Recording()
    update_submodules(no_gitmodules, tmp_path / "elsewhere", url, "x")  # type: ignore[arg-type]
    assert no_gitmodules.calls == []
