"""A lock uv cannot make names the inputs (file:line, node) behind the packages uv names, and the way around a
node: uv itself names only the generated project. The messages below are uv 0.13.9's own, for nodes of the
real-node corpus (tests/data/real_nodes) locked with today's ComfyUI."""

from __future__ import annotations

from pathlib import Path

import pytest

from envbuild.core.errors import ResolveError
from envbuild.lock.blame import name_asking_inputs, named_packages
from envbuild.pkgs.merging import merge
from envbuild.pkgs.requirements import Origin, SourcedRequirement
from tests.support.deploy import make_deployment, run_cli

LAYERSTYLE_BUILD = """\
error: Failed to build `image-reward==1.0`
  cause: The build backend returned an error
  cause: Call to `setuptools.build_meta:__legacy__.get_requires_for_build_wheel` failed (exit status: 1)
         ModuleNotFoundError: No module named 'pkg_resources'

hint: `image-reward` (v1.0) was included because `comfyui-env-cu132-pypi` (v0.0.0) depends on `image-reward`
"""
LAYERSTYLE_PINS = """\
error: No solution found when resolving dependencies for split (markers: python_full_version == '3.13.*' and \
platform_machine == 'x86_64' and sys_platform == 'linux')
  cause: Because all versions of torchscale depend on fairscale==0.4.0 and image-reward>=1.1 depends on
         fairscale==0.4.13, we can conclude that image-reward>=1.1 and all versions of torchscale are incompatible.
         And because your project depends on image-reward>=1.1 and torchscale, we can conclude that your
         project's requirements are unsatisfiable.
"""
TAICHI = """\
         And because taichi>=1.6.0 has no `platform_machine == 'aarch64' and sys_platform == 'linux'`-compatible \
wheels and your project depends on taichi, we can conclude that your project's requirements are unsatisfiable.
"""


@pytest.mark.parametrize(("message", "names"), [
    (LAYERSTYLE_BUILD, {"image-reward"}),
    (LAYERSTYLE_PINS, {"image-reward", "torchscale"}),
    (TAICHI, {"taichi"}),
    ("Because Torch_Scale was not found in the package registry and your project depends on Torch_Scale, we "
     "can conclude that your project's requirements are unsatisfiable.", {"torch-scale"}),
    ("error: Failed to fetch: `https://pypi.org/simple/numpy/`", set()),
])
def test_the_packages_uv_says_the_project_depends_on(message: str, names: set[str]) -> None:
    assert named_packages(message) == names


def _asked(name: str, path: str, line: int, source: str) -> SourcedRequirement:
    from packaging.requirements import Requirement

    return SourcedRequirement(Requirement(name), Origin(path, line, source), name)


def test_the_hint_names_each_asker_and_leaves_out_only_a_node_that_alone_asks() -> None:
    merged = merge([
        _asked("image-reward", "data/custom_nodes/ComfyUI_LayerStyle/requirements.txt", 26, "node ComfyUI_LayerStyle"),
        _asked("torchscale", "data/custom_nodes/ComfyUI_LayerStyle/requirements.txt", 36, "node ComfyUI_LayerStyle"),
        _asked("numpy", "ComfyUI/requirements.txt", 7, "ComfyUI"),
        _asked("numpy", "data/custom_nodes/ComfyUI-GGUF/requirements.txt", 2, "node ComfyUI-GGUF"),
    ])
    hint = name_asking_inputs(ResolveError("uv lock", LAYERSTYLE_PINS), merged).hint or ""
    assert ("`image-reward` from data/custom_nodes/ComfyUI_LayerStyle/requirements.txt:26 (node ComfyUI_LayerStyle); "
            "`torchscale` from data/custom_nodes/ComfyUI_LayerStyle/requirements.txt:36") in hint, hint
    assert "`envbuild lock --exclude-node ComfyUI_LayerStyle`" in hint
    shared = ResolveError("uv lock", "Because your project depends on numpy>=3, we can conclude that your project's "
                                     "requirements are unsatisfiable.")
    hint = name_asking_inputs(shared, merged).hint or ""  # asked by ComfyUI and a node: no node to leave out
    assert "`numpy` from ComfyUI/requirements.txt:7 (ComfyUI)" in hint and "exclude-node" not in hint, hint
    own = ResolveError("uv lock", TAICHI, hint="uv's own advice, kept")
    assert name_asking_inputs(own, merged).hint == "uv's own advice, kept"


def test_a_lock_uv_cannot_make_names_the_node_line_and_the_way_around(tmp_path: Path,
                                                                      uv_env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    site.add_node("good-node", "einops\n")
    site.add_node("lost-node", "# the package it needs was never published\nsix\nno-such-package-anywhere>=1\n")
    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert result.returncode != 0, result
    assert ("hint: uv could not lock what these inputs ask for: `no-such-package-anywhere` from "
            "data/custom_nodes/lost-node/requirements.txt:3 (node lost-node); fix the node's requirements, or "
            "leave the node out of the lock with `envbuild lock --exclude-node lost-node`") in result.stderr, result
    assert not site.locks.exists() or not (site.locks / "cu126" / "uv.lock").exists()
    excluded = run_cli(["lock", "--profile", "cu126", "--exclude-node", "lost-node"], env=uv_env, cwd=site.root)
    assert excluded.returncode == 0, excluded
