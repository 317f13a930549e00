"""`envbuild manager setup/status`: ComfyUI-Manager's config.ini, found where its own code reads it.

The layouts are facts from the Manager's source (Comfy-Org/ComfyUI-Manager): `config.ini` in the
Manager's folder before v3.1 (commit 31de8ffc added --user-directory support), then
`<user>/default/ComfyUI-Manager/`, and from v3.38 (`glob/manager_migration.py`) and v4
(`comfyui_manager/common/context.py`) `<user>/__manager/` when ComfyUI's `folder_paths` has
`get_system_user_directory`. Every check reads the result back the way the Manager does:
`configparser.ConfigParser(strict=False)`, `[default]`, `value.lower() == 'true'`.
"""

from __future__ import annotations

import configparser
import os
import textwrap
from pathlib import Path

import pytest

from envbuild.comfy.manager import LEGACY, SYSTEM_USER, USER_DEFAULT, edit_ini, locate, setup
from envbuild.core.errors import ConfigError
from envbuild.settings.config import load_config
from tests.support.deploy import Deployment, make_deployment, run_cli

SYSTEM_USER_API = 'def get_system_user_directory(name: str = "system") -> str:\n    return name\n'


def manager_reads(path: Path) -> dict[str, bool]:
    """What the Manager's read_config makes of the two keys."""
    parser = configparser.ConfigParser(strict=False)
    parser.read(path, encoding="utf-8")
    section = parser["default"]
    return {key: section[key].lower() == "true" if key in section else False
            for key in ("use_uv", "use_unified_resolver")}


def make_manager(d: Deployment, kind: str, *, version: str | None = None) -> Path:
    """A Manager checkout with the files that decide its config.ini location."""
    manager = d.nodes / "ComfyUI-Manager"  # found case-insensitively
    manager.mkdir(parents=True, exist_ok=True)
    (manager / "requirements.txt").write_text("pyyaml\n", encoding="utf-8")
    glob = manager / "glob"
    if kind in ("pre-3.1", "3.x", "3.38"):
        glob.mkdir(exist_ok=True)
        core = "config_path = os.path.join(comfyui_manager_path, 'config.ini')\n"
        if kind != "pre-3.1":
            core += "def update_user_directory(user_dir):\n    pass\n"
        (glob / "manager_core.py").write_text(core, encoding="utf-8")
    if kind == "3.38":
        (glob / "manager_migration.py").write_text("def get_manager_path(user_dir): ...\n", encoding="utf-8")
    if kind == "v4":
        context = manager / "comfyui_manager" / "common"
        context.mkdir(parents=True)
        (context / "context.py").write_text("manager_config_path = None\n", encoding="utf-8")
    if version:
        (manager / "pyproject.toml").write_text(f'[project]\nname = "comfyui-manager"\nversion = "{version}"\n')
    return manager


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    d = make_deployment(tmp_path / "site", manager=None)
    (d.comfyui / "folder_paths.py").write_text(SYSTEM_USER_API, encoding="utf-8")
    return d


# --- where config.ini lives --------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "version", "expected_kind", "expected_path"), [
    ("pre-3.1", "3.0", LEGACY, "data/custom_nodes/ComfyUI-Manager/config.ini"),
    ("3.x", "3.37.2", USER_DEFAULT, "data/user/default/ComfyUI-Manager/config.ini"),
    ("3.38", "3.41", SYSTEM_USER, "data/user/__manager/config.ini"),
    ("v4", "4.2.2", SYSTEM_USER, "data/user/__manager/config.ini"),
    ("none", "3.20", USER_DEFAULT, "data/user/default/ComfyUI-Manager/config.ini"),  # no code: its version
    ("none", "2.51", LEGACY, "data/custom_nodes/ComfyUI-Manager/config.ini"),
])
def test_config_path_follows_the_managers_own_code(
    deployment: Deployment, kind: str, version: str, expected_kind: str, expected_path: str
) -> None:
    make_manager(deployment, kind, version=version)
    layout = locate(load_config(deployment.root))
    assert (layout.kind, deployment.root / expected_path) == (expected_kind, layout.config_path)
    assert layout.version == version and layout.warnings == ()


def test_new_manager_on_a_core_without_the_system_user_api_uses_the_old_path_and_warns(
    deployment: Deployment
) -> None:
    (deployment.comfyui / "folder_paths.py").write_text("def get_user_directory(): ...\n", encoding="utf-8")
    make_manager(deployment, "3.38", version="3.41")
    layout = locate(load_config(deployment.root))
    assert layout.config_path == deployment.root / "data/user/default/ComfyUI-Manager/config.ini"
    assert "security_level = strong" in layout.warnings[0] and "update ComfyUI" in layout.warnings[0]


def test_an_unmigrated_old_config_is_the_one_edited(deployment: Deployment) -> None:
    """The Manager moves default/ComfyUI-Manager/config.ini to __manager itself at its next start;
    a new __manager/config.ini beside it would make it take the "first update" path instead."""
    make_manager(deployment, "3.38", version="3.41")
    old = deployment.root / "data/user/default/ComfyUI-Manager/config.ini"
    old.parent.mkdir(parents=True)
    old.write_text("[default]\nuse_uv = False\nsecurity_level = normal\n", encoding="utf-8")
    result = setup(load_config(deployment.root))
    assert result.layout.config_path == old and "migrates" in result.layout.reason
    assert not (deployment.root / "data/user/__manager").exists()
    assert manager_reads(old) == {"use_uv": True, "use_unified_resolver": False}


def test_user_directory_override_and_without_base_directory(deployment: Deployment, tmp_path: Path) -> None:
    make_manager(deployment, "3.38")
    config = load_config(deployment.root)
    assert locate(config, tmp_path / "u").config_path == tmp_path / "u/__manager/config.ini"
    deployment.write_config('[comfyui]\npath = "ComfyUI"\n[manager]\npath = "data/custom_nodes/ComfyUI-Manager"\n')
    assert locate(load_config(deployment.root)).config_path == deployment.comfyui / "user/__manager/config.ini"


def test_no_manager_and_unknown_version_are_clear_errors(deployment: Deployment) -> None:
    with pytest.raises(ConfigError, match="ComfyUI-Manager not found") as caught:
        locate(load_config(deployment.root))
    assert "[manager] path" in str(caught.value)
    make_manager(deployment, "none")
    with pytest.raises(ConfigError, match="cannot tell this ComfyUI-Manager's version"):
        locate(load_config(deployment.root))


# --- the line-based edit -------------------------------------------------------------------------

REAL_LOOKING = textwrap.dedent("""\
    ; ComfyUI-Manager settings, hand-edited
    [default]
    preview_method = auto
    git_exe =
    # uv: off for now
    use_uv = False
    channel_url = https://raw.githubusercontent.com/ltdrdata/ComfyUI-Manager/main
    security_level = normal

    [extra]
    use_uv = untouched
    """)


def test_edit_keeps_every_other_line_and_adds_the_missing_key_in_place() -> None:
    text, changes = edit_ini(REAL_LOOKING, {"use_uv": "True", "use_unified_resolver": "False"})
    assert [(c.key, c.old, c.new) for c in changes] == [("use_uv", "False", "True"),
                                                       ("use_unified_resolver", None, "False")]
    expected = REAL_LOOKING.replace("use_uv = False", "use_uv = True").replace(
        "security_level = normal\n", "security_level = normal\nuse_unified_resolver = False\n")
    assert text == expected
    again, none = edit_ini(text, {"use_uv": "True", "use_unified_resolver": "False"})
    assert (again, none) == (text, [])


@pytest.mark.parametrize(("before", "after"), [
    # configparser lower-cases keys, allows `:`, keeps the line's own spacing
    ("[default]\nUSE_UV:false\n", "[default]\nUSE_UV:True\n"),
    # an inline comment is part of the value for the Manager (no inline_comment_prefixes): reads False
    ("[default]\nuse_uv = True  # on\n", "[default]\nuse_uv = True\n"),
    # a later duplicate wins; every occurrence is rewritten so none contradicts the other
    ("[default]\nuse_uv = True\nx = 1\nuse_uv = False\n", "[default]\nuse_uv = True\nx = 1\nuse_uv = True\n"),
    # a continuation line belongs to the value it continues
    ("[default]\nuse_uv = False\n  more\nx = 1\n", "[default]\nuse_uv = True\nx = 1\n"),
    # CRLF files stay CRLF; a missing final newline is added
    ("[default]\r\nx = 1\r\nuse_uv = no", "[default]\r\nx = 1\r\nuse_uv = True\r\n"),
    # no [default] section: one is appended, the rest untouched
    ("[other]\nuse_uv = False\n", "[other]\nuse_uv = False\n\n[default]\nuse_uv = True\n"),
    # an empty [default]: the key goes right under its header, not into the next section
    ("[default]\n\n[other]\na = 1\n", "[default]\nuse_uv = True\n\n[other]\na = 1\n"),
])
def test_edit_reads_the_file_as_the_manager_does(before: str, after: str) -> None:
    text, changes = edit_ini(before, {"use_uv": "True"})
    assert text == after
    assert len(changes) == 1


def test_setup_is_idempotent_and_creates_a_file_with_the_managers_defaults(deployment: Deployment) -> None:
    make_manager(deployment, "3.38", version="3.41")
    config = load_config(deployment.root)
    first = setup(config)
    path = deployment.root / "data/user/__manager/config.ini"
    assert first.created and first.layout.config_path == path
    assert manager_reads(path) == {"use_uv": True, "use_unified_resolver": False}
    # Absent keys read as False in the Manager (its get_bool ignores the default): keep file_logging on.
    assert "file_logging = True" in path.read_text()
    stat = path.stat()
    second = setup(config)
    assert second.changes == () and not second.created
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and path.stat().st_ino == stat.st_ino


# --- through the CLI ----------------------------------------------------------------------------


def test_cli_setup_then_status(deployment: Deployment, uv_env: dict[str, str]) -> None:
    make_manager(deployment, "3.x", version="3.30")
    path = deployment.root / "data/user/default/ComfyUI-Manager/config.ini"
    path.parent.mkdir(parents=True)
    path.write_text(REAL_LOOKING, encoding="utf-8")
    status = run_cli(["manager", "status"], env=uv_env, cwd=deployment.root)
    assert status.returncode == 0, status
    assert "ComfyUI-Manager: legacy clone 3.30 at data/custom_nodes/ComfyUI-Manager (loaded as a custom node; " \
           "no --enable-manager)" in status.stdout
    assert "config.ini: data/user/default/ComfyUI-Manager/config.ini (decided by glob/manager_core.py" in status.stdout
    assert "use_uv = False" in status.stdout and "setup needed" in status.stdout

    result = run_cli(["manager", "setup"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert "use_uv = True (was: False)" in result.stdout
    assert "use_unified_resolver = False (was: not set)" in result.stdout
    assert path.read_text().startswith("; ComfyUI-Manager settings, hand-edited\n[default]\n")
    assert manager_reads(path) == {"use_uv": True, "use_unified_resolver": False}

    again = run_cli(["manager", "setup"], env=uv_env, cwd=deployment.root)
    assert "already set" in again.stdout and "nothing written" in again.stdout
    assert "set up for envbuild: yes" in run_cli(["manager", "status"], env=uv_env, cwd=deployment.root).stdout


def test_cli_setup_warns_about_a_lock_without_pip(deployment: Deployment, uv_env: dict[str, str]) -> None:
    make_manager(deployment, "3.38")
    lock = deployment.locks / "cu126" / "uv.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text('version = 1\n[[package]]\nname = "uv"\nversion = "0.5.0"\n', encoding="utf-8")
    result = run_cli(["manager", "setup"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert "warning: locks/cu126 has no pip: re-lock with `envbuild lock --profile cu126`" in result.stderr


def test_cli_disabled_or_missing_manager_is_an_error_without_traceback(
    deployment: Deployment, uv_env: dict[str, str]
) -> None:
    result = run_cli(["manager", "setup"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error:" in result.stderr and "ComfyUI-Manager not found" in result.stderr


@pytest.mark.skipif(os.name == "nt", reason="FIFOs and /dev/zero as a user makes them")
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_config_ini_that_is_no_file_is_said_not_hung(deployment: Deployment, uv_env: dict[str, str],
                                                       kind: str) -> None:
    """Trust, round two, class 8: a FIFO config.ini hung `manager status`, a device ended in exit 70."""
    make_manager(deployment, "3.38", version="3.41")
    path = deployment.root / "data/user/__manager/config.ini"
    path.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    status = run_cli(["manager", "status"], env=uv_env, cwd=deployment.root, timeout=60)
    assert status.returncode == 2 and "cannot be the Manager's config.ini" in status.stderr, status
    setup_ = run_cli(["manager", "setup"], env=uv_env, cwd=deployment.root, timeout=60)
    assert setup_.returncode == 2 and "cannot be the Manager's config.ini" in setup_.stderr, setup_
