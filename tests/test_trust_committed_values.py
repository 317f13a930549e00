"""Trust, round two, class 1: a value from a committed file never becomes a git option or a generated
file's text. Each case ran on the code before it (a ref `--upload-pack=CMD` ran CMD on `envbuild fetch`);
now the value is refused where it is read, naming the file and the key, before git starts."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from envbuild.settings.gitref import ref_problem
from envbuild.settings.pins import valid_name
from tests.support.deploy import invoke_cli, make_deployment
from tests.support.gitrepos import file_url, make_repo

pytestmark = pytest.mark.cli


@pytest.fixture
def plain_env(tmp_path: Path) -> dict[str, str]:
    """No index needed: these commands stop before uv or git."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "ENVBUILD_", "GIT_"))}
    env.update({"ENVBUILD_CACHE_DIR": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
                "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull})
    return env


@pytest.mark.unit
@pytest.mark.parametrize("ref", ["--upload-pack=touch pwned", "-c", "a..b", "v1 2", "main\n", "x@{1}", ".hidden",
                                 "a/.b", "x.lock", "ref/", "", "a" * 256, "tag;rm", "$(id)"])
def test_a_ref_outside_gits_grammar_is_refused(ref: str) -> None:
    assert ref_problem(ref) is not None


@pytest.mark.unit
@pytest.mark.parametrize("ref", ["v0.3.64", "main", "release/2.1", "4.2.2", "a" * 40, "feature_x+y", "1.0-rc1"])
def test_ordinary_refs_pass(ref: str) -> None:
    assert ref_problem(ref) is None


@pytest.mark.unit
@pytest.mark.parametrize("name", ["__init__", "__pycache__", "ComfyUI-Manager", "my-comfyui-manager-fork",
                                  ".hidden", "a/b", "x.disabled"])
def test_node_names_comfyui_would_not_load_as_a_node_are_refused(name: str) -> None:
    assert not valid_name(name)


def test_a_comfyui_ref_that_is_a_git_option_is_refused_before_git_runs(tmp_path: Path,
                                                                         plain_env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site")
    upstream = tmp_path / "upstream"
    make_repo(upstream, {"main.py": "print('x')\n"})
    pwned = tmp_path / "pwned"
    site.write_config(f"""\
        [comfyui]
        path = "ComfyUI-fetched"
        git = "{file_url(upstream)}"
        ref = "--upload-pack=touch {pwned}"
        """)
    result = invoke_cli(["fetch"], env=plain_env, cwd=site.root)
    assert result.returncode == 2, result
    assert "envbuild.toml" in result.stderr and "`comfyui.ref`" in result.stderr
    assert "starts with `-`" in result.stderr
    assert not pwned.exists() and not (site.root / "ComfyUI-fetched").exists()


def test_a_node_pins_ref_that_is_a_git_option_is_refused(tmp_path: Path, plain_env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site")
    (site.root / "envbuild.toml").write_text((site.root / "envbuild.toml").read_text() + textwrap.dedent(f"""
        [custom-nodes.evil]
        git = "https://example.invalid/evil"
        commit = "{"a" * 40}"
        ref = "--upload-pack=touch {tmp_path / 'pwned'}"
        """), encoding="utf-8")
    result = invoke_cli(["node", "list"], env=plain_env, cwd=site.root)
    assert result.returncode == 2, result
    assert "`custom-nodes.evil.ref`" in result.stderr and "starts with `-`" in result.stderr
    assert not (tmp_path / "pwned").exists()


def test_node_add_refuses_an_option_as_ref_before_fetching(tmp_path: Path, plain_env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site")
    upstream = tmp_path / "node"
    make_repo(upstream, {"__init__.py": "NODE_CLASS_MAPPINGS = {}\n"})
    pwned = tmp_path / "pwned"
    result = invoke_cli(["node", "add", file_url(upstream), f"--ref=--upload-pack=touch {pwned}"],
                        env=plain_env, cwd=site.root)
    assert result.returncode != 0 and "starts with `-`" in result.stderr, result
    assert not pwned.exists()
    assert not any(p.name == "node" for p in site.nodes.iterdir())


@pytest.mark.parametrize("name", ["__init__", "ComfyUI-Manager-fork"])
def test_a_pinned_node_name_comfyui_would_skip_is_refused(tmp_path: Path, plain_env: dict[str, str],
                                                          name: str) -> None:
    site = make_deployment(tmp_path / "site")
    (site.root / "envbuild.toml").write_text((site.root / "envbuild.toml").read_text() + textwrap.dedent(f"""
        [custom-nodes.{name}]
        git = "https://example.invalid/x"
        commit = "{"b" * 40}"
        """), encoding="utf-8")
    result = invoke_cli(["lock", "--check", "--profile", "cu126"], env=plain_env, cwd=site.root)
    assert result.returncode == 2, result
    assert f"`custom-nodes.{name}`" in result.stderr


def _fingerprint_json(**changes: object) -> str:
    import json

    from envbuild.pkgs.lockdir import Fingerprint

    base = Fingerprint(profile="cu126", render_version=1, uv_required_version=">=0.12", torch_source="index",
                       index_url="https://download.pytorch.org/whl/cu126", profile_sha256="0" * 64,
                       pyproject_sha256="1" * 64, inputs={}, extra={"comfyui-commit": "a" * 40})
    data = json.loads(base.to_json())
    data.update(changes)
    return json.dumps(data)


@pytest.mark.unit
def test_a_fingerprint_envbuild_wrote_reads_back() -> None:
    from envbuild.pkgs.lockdir import Fingerprint

    assert Fingerprint.from_json(_fingerprint_json()) is not None
    assert Fingerprint.from_json(_fingerprint_json(extra={"node:x-commit": "registry 1.2.0 0123456789ab",
                                                          "node:y-commit": "missing"})) is not None


@pytest.mark.unit
@pytest.mark.parametrize("changes", [
    {"extra": {"comfyui-commit": "a" * 40 + "\nRUN cat /run/secrets/uv-env"}},
    {"extra": {"comfyui-manager-commit": "HEAD"}},
    {"default_index": "https://evil.example/simple\nENV X=1"},
    {"default_index": "file:///etc"},
    {"index_url": "https://x.example/\"; rm -rf /"},
])
def test_a_fingerprint_with_values_envbuild_never_writes_is_not_envbuilds(changes: dict[str, object]) -> None:
    """Read as "not a fingerprint of envbuild's": `lock --check` says the lock was edited, and nothing
    downstream (an image's Containerfile, git) ever sees the value."""
    from envbuild.pkgs.lockdir import Fingerprint

    assert Fingerprint.from_json(_fingerprint_json(**changes)) is None
