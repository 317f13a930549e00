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


# -- class 4 and 8: credentials in node URLs, bounded work on any input -------------------------------

TOKEN = "ghp_0123456789abcdefSECRET"


@pytest.mark.unit
@pytest.mark.parametrize(("url", "problem"), [
    (f"https://oauth2:{TOKEN}@github.com/a/b", "credentials"),
    (f"https://{TOKEN}@github.com/a/b", "credentials"),
    (f"ssh://git:{TOKEN}@github.com/a/b", "credentials"),
    ("--upload-pack=x", "option"),
    ("https://github.com/a/b\nx", "control"),
])
def test_git_urls_envbuild_will_not_record(url: str, problem: str) -> None:
    from envbuild.settings.gitref import git_url_problem

    found = git_url_problem(url)
    assert found is not None and problem in found and TOKEN not in found


@pytest.mark.unit
@pytest.mark.parametrize("url", ["https://github.com/a/b", "ssh://git@github.com/a/b.git", "git@github.com:a/b",
                                 "/srv/git/node", "../node", "file:///srv/node"])
def test_git_urls_envbuild_records(url: str) -> None:
    from envbuild.settings.gitref import git_url_problem

    assert git_url_problem(url) is None


@pytest.mark.unit
def test_telling_a_remote_url_from_a_path_is_linear() -> None:
    """The regular expression it replaces took 52 s on 200,000 characters (then exit 70)."""
    import time

    from envbuild.settings.gitref import is_remote

    started = time.perf_counter()
    assert not is_remote("a/" + "x" * 200_000)
    assert not is_remote("x" * 200_000)  # no colon: a local path
    assert time.perf_counter() - started < 0.5
    assert is_remote("git@github.com:a/b") and is_remote("https://x/y") and not is_remote("C:\\nodes\\x")


def test_node_add_refuses_a_url_with_a_token_and_never_prints_it(tmp_path: Path, plain_env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site")
    result = invoke_cli(["node", "add", f"https://oauth2:{TOKEN}@github.com/owner/node"], env=plain_env,
                        cwd=site.root)
    assert result.returncode == 2 and "carries credentials" in result.stderr and "credential helper" in result.stderr
    assert TOKEN not in result.output
    assert TOKEN not in (site.root / "envbuild.toml").read_text()


def test_node_import_refuses_a_snapshot_url_with_a_token(tmp_path: Path, plain_env: dict[str, str]) -> None:
    import json

    site = make_deployment(tmp_path / "site")
    snapshot = tmp_path / "snap.json"
    snapshot.write_text(json.dumps({"comfyui": None, "git_custom_nodes": {
        f"https://oauth2:{TOKEN}@github.com/owner/node": {"hash": "a" * 40, "disabled": False}},
        "cnr_custom_nodes": {}, "file_custom_nodes": [], "pips": {}}))
    before = (site.root / "envbuild.toml").read_text()
    result = invoke_cli(["node", "import", str(snapshot)], env=plain_env, cwd=site.root)
    assert result.returncode == 2 and "carries credentials" in result.stderr, result
    assert TOKEN not in result.output and (site.root / "envbuild.toml").read_text() == before


def test_a_snapshot_nested_deeply_or_with_unpublished_versions_is_said_not_crashed(
        tmp_path: Path, plain_env: dict[str, str]) -> None:
    import json

    site = make_deployment(tmp_path / "site")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    result = invoke_cli(["node", "import", str(deep)], env=plain_env, cwd=site.root)
    assert result.returncode == 2 and "nested too deeply" in result.stderr, result
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"comfyui": None, "git_custom_nodes": {}, "file_custom_nodes": [], "pips": {},
                               "cnr_custom_nodes": {"latest-node": "latest", "null-node": None, "ok-node": "1.0.2"}}))
    result = invoke_cli(["node", "import", str(odd)], env=plain_env, cwd=site.root)
    assert result.returncode == 0, result
    config = (site.root / "envbuild.toml").read_text()
    assert "ok-node" in config and "latest-node" not in config and "null-node" not in config
    assert invoke_cli(["node", "list"], env=plain_env, cwd=site.root).returncode == 0  # the file still reads


@pytest.mark.unit
@pytest.mark.parametrize(("text", "shown"), [
    ("https://h/x.whl?token=hunter2&v=1", "https://h/x.whl?token=***&v=1"),
    ("https://s3/m?X-Amz-Signature=hunter2&X-Amz-Credential=hunter2", "https://s3/m?X-Amz-Signature=***&X-Amz-Credential=***"),
    ("https://h/p?api_key=hunter2#sha256=ab", "https://h/p?api_key=***#sha256=ab"),
    ("https://h/p?monkey=1&download=true", "https://h/p?monkey=1&download=true"),
    ("https://bob:hunter2@h/p", "https://***@h/p"),
])
def test_printed_urls_hide_every_credential_form(text: str, shown: str) -> None:
    """Class 4: a line quoted in an error (an extra-requirements file's, a signed model URL) shows no secret."""
    from envbuild.core.runner import redact

    assert redact(text) == shown
