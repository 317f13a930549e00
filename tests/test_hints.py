"""Hints that sent users the wrong way (issue: what a newcomer found), each with the message it gives now."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.deploy import invoke_cli, make_deployment


@pytest.mark.parametrize(("url", "mirror_named"), [
    ("https://download.pytorch.org/whl/cu126/torch/", False),
    ("https://pypi.org/simple/numpy/", False),
    ("https://mirrors.example.cn/pypi/simple/numpy/", True),
])
def test_an_unreachable_index_hint_names_a_configured_mirror(url: str, mirror_named: bool) -> None:
    """Issue: "configure a mirror" was said when the index that failed was the configured mirror."""
    from envbuild.core.errors import ResolveError
    from envbuild.uv.failures import classify_failure

    message = f"error: Failed to fetch: `{url}`\n  Caused by: Request failed after 3 retries\n  Caused by: " \
              f"error sending request for url ({url})\n  Caused by: tcp connect error: Connection refused"
    hint = classify_failure("uv lock", message, ResolveError).hint or ""
    assert ("is the index envbuild asked" in hint and "pypi-files" in hint) == mirror_named
    assert ("configure a mirror" in hint) != mirror_named


@pytest.fixture
def plain_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "ENVBUILD_"))}
    return env | {"ENVBUILD_CACHE_DIR": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def test_no_envbuild_toml_at_all_says_init_not_profile(tmp_path: Path, plain_env: dict[str, str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke_cli(["sync"], env=plain_env, cwd=empty)
    assert result.returncode == 2 and "no envbuild.toml in" in result.stderr, result
    assert "envbuild init" in result.stderr and "--profile" not in result.stderr


def test_a_deployment_without_profiles_still_says_which_flags(tmp_path: Path, plain_env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site")
    site.write_config("""\
        [comfyui]
        path = "ComfyUI"
        """)
    result = invoke_cli(["sync"], env=plain_env, cwd=site.root)
    assert result.returncode == 2 and "pass --profile NAME" in result.stderr, result


@pytest.mark.unit
def test_a_failed_pull_of_the_uv_image_names_its_build_argument() -> None:
    from envbuild.image.build import _build_hint

    tail = ("Error: creating build container: initializing source docker://ghcr.io/astral-sh/uv:0.13.9: "
            "pinging container registry ghcr.io: Get \"https://ghcr.io/v2/\": dial tcp: connection refused")
    assert "UV_IMAGE (--uv-image IMAGE)" in _build_hint(tail)
    assert _build_hint("RUN failed: exit status 1") == "rerun with -v to see the exact command"


def test_image_uv_image_flag_sets_the_build_argument(tmp_path: Path) -> None:
    from envbuild.image.files import containerfile

    text = containerfile(profile="cu126", base_image="python:3.12-slim", uv_image="mirror.example/uv:0.13.9",
                         torch_layer=["torch"], port=8188, guard={}, pins=[])
    assert "ARG UV_IMAGE=mirror.example/uv:0.13.9" in text


@pytest.mark.unit
def test_sync_dry_run_says_unknown_when_no_size_is_recorded() -> None:
    """Issue: "downloading up to 0 B" and a 6 KB line listing every unsized file."""
    from envbuild.env.sync import SyncPlan

    unsized = tuple(f"pkg{i}==1.0" for i in range(200))
    plan = SyncPlan("cu126", Path(".venv"), unsized, (), 0, unsized)
    first = plan.describe()[0]
    assert "download size unknown (the index records no file sizes)" in first and "0 B" not in first
    assert max(len(line) for line in plan.describe()) < 200
    some = SyncPlan("cu126", Path(".venv"), ("a==1", "b==1"), (), 2048, ("b==1",)).describe()[0]
    assert "downloading up to 2.0 KiB" in some and "1 file(s) of unknown size not counted" in some


@pytest.mark.unit
def test_a_platform_without_a_wheel_names_the_package_and_allow_build() -> None:
    from envbuild.core.errors import ResolveError
    from envbuild.uv.failures import classify_failure

    message = ("error: No solution found when resolving dependencies for split (markers: platform_machine == "
               "'aarch64' and sys_platform == 'linux')\n  cause: Because aiohttp==3.14.3 has no "
               "`platform_machine == 'aarch64' and sys_platform == 'linux'`-compatible wheels and your project "
               "depends on aiohttp==3.14.3, we can conclude that your project's requirements are unsatisfiable.")
    error = classify_failure("uv lock", message, ResolveError)
    assert "aiohttp has no wheel for `platform_machine == 'aarch64'" in str(error)
    assert 'allow-build = ["aiohttp"]' in (error.hint or "")


@pytest.mark.unit
def test_sync_dry_run_says_how_its_count_relates_to_the_locks() -> None:
    """Issue: `lock --all` said 149 packages where `sync --dry-run` installs 124: the lock covers every platform."""
    from envbuild.env.sync import SyncPlan

    plan = SyncPlan("cu126", Path(".venv"), ("a==1",) * 124, (), 1024, (), locked=149, platforms=2)
    assert "the lock holds 149 packages for its 2 platforms; a machine installs those of its own" in plan.describe()[0]
