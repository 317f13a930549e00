"""The Manager of current ComfyUI: the pip package `comfyui_manager` of the checkout's manager_requirements.txt.

Facts (research/comfy.md sections 1-2): ComfyUI v0.4.0 (2025-12, core PR #7555) ships
manager_requirements.txt (`comfyui_manager==4.2.2` at v0.25-v0.33) and imports the Manager only with
`main.py --enable-manager`; with the flag, core skips every custom_nodes entry whose name contains
`comfyui-manager` ("Blocked by policy"); Manager 4 reads `<user>/__manager/config.ini` and refuses
node installs behind a non-loopback --listen unless `network_mode = personal_cloud`.
"""

from __future__ import annotations

import configparser
import json
import os
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

from envbuild.comfy.inputs import collect_inputs
from envbuild.comfy.layout import CLONE_ROUTE, NO_ROUTE, PIP_ROUTE, manager_route
from envbuild.comfy.manager import describe_route, edit_ini, locate, setup
from envbuild.core.errors import ConfigError, RequirementFileError
from envbuild.deploy.deployment import load_deployment
from envbuild.env.check import run_check
from envbuild.env.run import comfy_args
from envbuild.image.files import entrypoint
from envbuild.settings.config import load_config
from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli
from tests.support.gitrepos import file_url, make_repo
from tests.test_smoke import plain_venv

PIN = "comfyui_manager==4.2.2\n"
SYSTEM_USER_API = 'def get_system_user_directory(name: str = "system") -> str:\n    return name\n'
# A main.py that records how it was started, and whether the venv can import the pip Manager (as core's
# find_spec("comfyui_manager") does with --enable-manager).
RECORDING_MAIN = """\
import importlib.util, json, os, sys
with open(os.environ["ARGV_LOG"], "w") as out:
    json.dump({"argv": [sys.executable, *sys.argv],
               "manager": importlib.util.find_spec("comfyui_manager") is not None}, out)
"""


def pip_site(root: Path, *, clone: bool = False) -> Deployment:
    """A current ComfyUI: manager_requirements.txt in the checkout; optionally a legacy clone beside it."""
    site = make_deployment(root, manager="pyyaml\n" if clone else None, manager_requirements=PIN,
                           profiles=("cu126",))
    (site.comfyui / "main.py").write_text(RECORDING_MAIN, encoding="utf-8")
    (site.comfyui / "folder_paths.py").write_text(SYSTEM_USER_API, encoding="utf-8")
    return site


def with_manager(site: Deployment, table: str) -> None:
    with open(site.root / "envbuild.toml", "a", encoding="utf-8") as out:
        out.write("\n[manager]\n" + textwrap.dedent(table))


def line_of(site: Deployment, text: str) -> int:
    lines = (site.root / "envbuild.toml").read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if line.startswith(text))


# --- the route ------------------------------------------------------------------------------------


def test_the_route_pip_clone_none_and_pip_false(tmp_path: Path) -> None:
    site = pip_site(tmp_path / "a", clone=True)
    route = manager_route(load_config(site.root))
    assert (route.kind, route.path, route.blocked) == (PIP_ROUTE, site.comfyui / "manager_requirements.txt",
                                                       (site.nodes / "comfyui-manager",))
    assert describe_route(load_config(site.root)) == ("pip package comfyui_manager==4.2.2 from "
                                                      "ComfyUI/manager_requirements.txt:1 (`envbuild run` passes "
                                                      "--enable-manager)")
    with_manager(site, "pip = false\n")
    config = load_config(site.root)
    assert manager_route(config).kind == CLONE_ROUTE
    assert describe_route(config).startswith("legacy clone at data/custom_nodes/comfyui-manager")
    off = pip_site(tmp_path / "b")
    with_manager(off, "enabled = false\n")
    assert describe_route(load_config(off.root)) == "none ([manager] enabled = false)"
    legacy = make_deployment(tmp_path / "c")
    assert manager_route(load_config(legacy.root)).kind == CLONE_ROUTE
    bare = make_deployment(tmp_path / "d", manager=None)
    assert manager_route(load_config(bare.root)).kind == NO_ROUTE


def test_inputs_read_manager_requirements_strictly_and_skip_the_blocked_clone(tmp_path: Path) -> None:
    site = pip_site(tmp_path / "site", clone=True)
    collected = collect_inputs(load_config(site.root))
    assert [(f.path.name, f.source, f.lenient) for f in collected.files] == [
        ("requirements.txt", "ComfyUI", False), ("manager_requirements.txt", "ComfyUI-Manager", False)]
    assert collected.manager_dir is None
    (skipped,) = collected.skipped_nodes
    assert skipped.startswith("comfyui-manager (a ComfyUI-Manager clone: with --enable-manager ComfyUI blocks it")


@pytest.mark.parametrize(("text", "message"), [
    ("comfyui_manager==4.2.2\nnot a requirement!\n", "ComfyUI/manager_requirements.txt:2"),
    ("-r ../../secrets.txt\n", "ComfyUI/manager_requirements.txt:1"),  # outside the checkout: refused
    ("# the Manager\n", "does not ask for comfyui_manager"),
    (PIN + "#" * (1 << 20), "regular files of at most 1 MiB"),  # the size limit of ComfyUI's own file
])
def test_a_bad_manager_requirements_file_is_refused_with_its_line(
    tmp_path: Path, uv_env: dict[str, str], text: str, message: str
) -> None:
    site = pip_site(tmp_path / "site")
    (site.root / "secrets.txt").write_text("einops\n")
    (site.comfyui / "manager_requirements.txt").write_text(text)
    result = run_cli(["merge", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    assert message in result.stderr


# --- lock, run, check, image ------------------------------------------------------------------------


def test_lock_holds_the_pip_manager_and_run_passes_enable_manager(
    tmp_path: Path, uv_env: dict[str, str], manager_pypi: object
) -> None:
    site = pip_site(tmp_path / "site")
    merged = run_cli(["merge", "--profile", "cu126", "--json"], env=uv_env, cwd=site.root)
    assert merged.returncode == 0, merged
    origins = {r["requirement"]: r["origins"] for r in json.loads(merged.stdout)}
    assert origins["comfyui-manager==4.2.2"] == [{"path": "ComfyUI/manager_requirements.txt", "line": 1,
                                                  "source": "ComfyUI-Manager", "text": "comfyui_manager==4.2.2"}]
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root).returncode == 0
    locked = locked_versions(site.locks / "cu126" / "uv.lock")
    assert locked["comfyui-manager"][0] == "4.2.2" and "pip" in locked and "uv" in locked
    fingerprint = json.loads((site.locks / "cu126" / "envbuild-lock.json").read_text())
    assert "ComfyUI/manager_requirements.txt" in fingerprint["roots"]
    synced = run_cli(["sync", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert synced.returncode == 0, synced
    log = tmp_path / "argv.json"
    ran = run_cli(["run", "--profile", "cu126", "--", "--port", "8190"], env=dict(uv_env, ARGV_LOG=str(log)),
                  cwd=site.root)
    assert ran.returncode == 0, ran
    started = json.loads(log.read_text())
    assert started["argv"][0].endswith("/bin/python")
    assert started["argv"][1:] == [str(site.comfyui / "main.py"), "--enable-manager",
                                   "--base-directory", str(site.root / "data"), "--port", "8190"]
    assert started["manager"] is True  # the venv holds comfyui_manager: core's find_spec finds it
    # The Manager's pin moves: the lock is stale until re-locked (the file is an input like ComfyUI's).
    (site.comfyui / "manager_requirements.txt").write_text("comfyui_manager==4.3\n")
    stale = run_cli(["lock", "--check", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert stale.returncode == 4, stale


def test_run_argv_of_the_legacy_clone_has_no_enable_manager(tmp_path: Path, uv_env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site", profiles=("cu126",))  # the legacy clone in custom_nodes
    (site.comfyui / "main.py").write_text(RECORDING_MAIN, encoding="utf-8")
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root).returncode == 0
    assert run_cli(["sync", "--profile", "cu126"], env=uv_env, cwd=site.root).returncode == 0
    log = tmp_path / "argv.json"
    ran = run_cli(["run", "--profile", "cu126"], env=dict(uv_env, ARGV_LOG=str(log)), cwd=site.root)
    assert ran.returncode == 0, ran
    assert json.loads(log.read_text())["argv"][1:] == [str(site.comfyui / "main.py"), "--base-directory",
                                                       str(site.root / "data")]


def test_comfy_args_exactly(tmp_path: Path) -> None:
    site = pip_site(tmp_path / "pip")
    assert comfy_args(load_config(site.root)) == ["--enable-manager", "--base-directory", str(site.root / "data")]
    with_manager(site, "pip = false\n")
    assert comfy_args(load_config(site.root)) == ["--base-directory", str(site.root / "data")]
    legacy = make_deployment(tmp_path / "legacy")
    assert comfy_args(load_config(legacy.root)) == ["--base-directory", str(legacy.root / "data")]


@pytest.mark.parametrize(("pip", "flag"), [(True, ["--enable-manager"]), (False, [])])
def test_check_runs_the_quick_test_as_run_starts_comfyui(tmp_path: Path, pip: bool, flag: list[str]) -> None:
    site = pip_site(tmp_path / "site") if pip else make_deployment(tmp_path / "site")
    (site.comfyui / "main.py").write_text(RECORDING_MAIN, encoding="utf-8")
    venv = plain_venv(tmp_path, {})
    log = tmp_path / "argv.json"
    loaded = load_deployment(site.root, dict(os.environ, ARGV_LOG=str(log)))
    result = run_check(loaded, loaded.catalogue.get("cu126"), venv, 60)
    expected = [str(site.comfyui / "main.py"), "--cpu", "--quick-test-for-ci", *flag, "--base-directory",
                str(site.root / "data")]
    assert list(result.command[1:]) == expected and result.command[0].startswith(str(venv))
    assert json.loads(log.read_text())["argv"][1:] == expected


def test_image_entrypoint_enables_the_pip_manager_and_leaves_the_blocked_clone_out(
    tmp_path: Path, uv_env: dict[str, str], manager_pypi: object
) -> None:
    assert "main.py --enable-manager --base-directory /data --listen 0.0.0.0 --port 8188" in \
        entrypoint(8188, enable_manager=True)
    assert "--enable-manager" not in entrypoint(8188)
    site = pip_site(tmp_path / "site", clone=True)
    site.add_node("comfy-foo", "einops\n")
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root).returncode == 0
    result = run_cli(["image", "--profile", "cu126", "-o", "ctx"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result
    assert "exec /opt/venv/bin/python /opt/comfyui/main.py --enable-manager --base-directory /data" in \
        (site.root / "ctx/envbuild/entrypoint.sh").read_text()
    assert sorted(p.name for p in (site.root / "ctx/nodes").iterdir()) == ["comfy-foo"]
    assert (site.root / "ctx/comfyui/manager_requirements.txt").read_text() == PIN
    assert "warning: the image listens on 0.0.0.0: Manager 4 then refuses to install nodes" in result.stderr
    assert (site.root / "ctx/envbuild/manager-config.ini").read_text() == (
        "[default]\nuse_uv = True\nuse_unified_resolver = False\nfile_logging = True\n")
    with_manager(site, 'network_mode = "personal_cloud"\n')
    again = run_cli(["image", "--profile", "cu126", "-o", "ctx"], env=uv_env, cwd=site.root)
    assert again.returncode == 0 and "warning" not in again.stderr, again
    assert "network_mode = personal_cloud\n" in (site.root / "ctx/envbuild/manager-config.ini").read_text()


def test_the_image_puts_the_managers_config_on_an_empty_volume_only(tmp_path: Path) -> None:
    """The entrypoint's first lines, run with /data and /opt/envbuild moved under tmp_path."""
    script = entrypoint(8188, enable_manager=True)
    seed = script.split("cd /opt/comfyui\n", 1)[1].split("exec ", 1)[0]
    seed = seed.replace("/data", str(tmp_path / "data")).replace("/opt/envbuild", str(tmp_path / "opt"))
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt/manager-config.ini").write_text("[default]\nnetwork_mode = personal_cloud\n")
    subprocess.run(["sh", "-euc", seed], check=True)
    written = tmp_path / "data/user/__manager/config.ini"
    assert written.read_text() == "[default]\nnetwork_mode = personal_cloud\n"
    written.write_text("[default]\n; the owner's\n")
    subprocess.run(["sh", "-euc", seed], check=True)
    assert written.read_text() == "[default]\n; the owner's\n"  # an existing file is never replaced
    assert "__manager" not in entrypoint(8188)


# --- a v4 ref or git is refused before any work -----------------------------------------------------


def _recording_tools(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """git (first on PATH) and uv (ENVBUILD_UV) that only record being called."""
    bin_dir, calls = tmp_path / "tools", tmp_path / "calls.log"
    bin_dir.mkdir()
    for tool in ("git", "uv"):
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {calls}\nexit 1\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return dict(env, PATH=os.pathsep.join([str(bin_dir), env["PATH"]]), ENVBUILD_UV=str(bin_dir / "uv")), calls


@pytest.mark.parametrize("ref", ["4.2.2", "v4.x", "4.1b1", "manager-v4"])
@pytest.mark.parametrize("command", [["fetch"], ["lock", "--profile", "cu126"], ["update", "--profile", "cu126"],
                                     ["run", "--profile", "cu126"], ["manager", "setup"]])
def test_a_v4_ref_is_refused_before_any_git_or_uv_work(
    tmp_path: Path, uv_env: dict[str, str], ref: str, command: list[str]
) -> None:
    site = make_deployment(tmp_path / "site", manager=None, profiles=("cu126",))
    with_manager(site, f'git = "https://github.com/Comfy-Org/ComfyUI-Manager"\nref = "{ref}"\n')
    env, calls = _recording_tools(tmp_path, uv_env)
    result = run_cli(command, env=env, cwd=site.root)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    assert f"envbuild.toml:{line_of(site, 'ref =')}: `manager.ref = '{ref}'` names ComfyUI-Manager v4" in result.stderr
    assert "drop [manager] git and ref" in result.stderr
    assert not calls.exists() and not (site.nodes / "comfyui-manager").exists()


def test_a_pip_package_url_as_manager_git_is_refused(tmp_path: Path, uv_env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site", manager=None, profiles=("cu126",))
    with_manager(site, 'git = "https://files.pythonhosted.org/packages/x/comfyui_manager-4.3-py3-none-any.whl"\n'
                       'ref = "main"\n')
    result = run_cli(["fetch"], env=uv_env, cwd=site.root)
    assert result.returncode == 2 and f"envbuild.toml:{line_of(site, 'git =')}: `manager.git" in result.stderr


def test_update_manager_ref_naming_v4_is_refused_before_the_checkout_moves(
    tmp_path: Path, uv_env: dict[str, str]
) -> None:
    repo = tmp_path / "cm"
    make_repo(repo, {"__init__.py": "", "requirements.txt": "pyyaml\n"}, tag="3.41")
    site = make_deployment(tmp_path / "site", manager=None, profiles=("cu126",))
    with_manager(site, f'git = "{file_url(repo)}"\nref = "3.41"\n')
    assert run_cli(["fetch"], env=uv_env, cwd=site.root).returncode == 0
    env, calls = _recording_tools(tmp_path, uv_env)
    result = run_cli(["update", "--profile", "cu126", "--manager-ref", "4.2.2"], env=env, cwd=site.root)
    assert result.returncode == 2 and "--manager-ref: `manager.ref = '4.2.2'` names ComfyUI-Manager v4" \
        in result.stderr, result
    assert not calls.exists()


def test_a_v4_checkout_at_a_commit_is_refused_at_lock_not_after_a_sync(
    tmp_path: Path, uv_env: dict[str, str]
) -> None:
    """What `[manager] ref = "4.2.2"` used to do: fetch, lock and sync ran, then ComfyUI's quick test died on
    FileNotFoundError …/comfyui-manager/__init__.py. A commit (no name to judge) is caught by the tree."""
    repo = tmp_path / "cm"
    commit = make_repo(repo, {"pyproject.toml": '[project]\nname = "comfyui-manager"\nversion = "4.2.2"\n',
                              "requirements.txt": "pyyaml\n", "comfyui_manager/__init__.py": ""})
    site = make_deployment(tmp_path / "site", manager=None, profiles=("cu126",))
    with_manager(site, f'git = "{file_url(repo)}"\nref = "{commit}"\n')
    assert run_cli(["fetch"], env=uv_env, cwd=site.root).returncode == 0
    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert result.returncode == 2, result
    assert "data/custom_nodes/comfyui-manager is ComfyUI-Manager v4's source" in result.stderr
    assert not (site.locks / "cu126").exists()


# --- [manager] security settings and config.ini --------------------------------------------------------

HAND_EDITED = """\
; hand-edited by the owner
[default]
git_exe =
# channel of choice
channel_url = https://example.com/channel
security_level = strong
use_uv = True
db_mode = cache
"""

SECURITY = """\
network_mode = "personal_cloud"
security_level = "normal-"
allow_git_url_install = true
allow_pip_install = false
allow_flagged_nodepack_install = true
"""


def manager_reads(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False)
    parser.read(path, encoding="utf-8")
    return dict(parser["default"])


def test_setup_writes_the_declared_settings_keeping_every_other_line(tmp_path: Path) -> None:
    site = pip_site(tmp_path / "site")
    with_manager(site, SECURITY)
    path = site.root / "data/user/__manager/config.ini"
    path.parent.mkdir(parents=True)
    path.write_text(HAND_EDITED)
    config = load_config(site.root)
    assert locate(config).config_path == path
    result = setup(config)
    assert [(c.key, c.old, c.new) for c in result.changes] == [
        ("use_unified_resolver", None, "False"), ("network_mode", None, "personal_cloud"),
        ("security_level", "strong", "normal-"), ("allow_git_url_install", None, "True"),
        ("allow_pip_install", None, "False"), ("allow_flagged_nodepack_install", None, "True")]
    # Manager 4.2.2 (the pin) does not read the 4.3 key: said, not refused.
    assert result.warnings == ("[manager] allow_flagged_nodepack_install is read by ComfyUI-Manager 4.3 and later; "
                               "4.2.2 ignores it",)
    text = path.read_text()
    for line in HAND_EDITED.splitlines():
        if not line.startswith("security_level"):
            assert line in text.splitlines()
    assert text.splitlines()[5] == "security_level = normal-"  # changed in place
    assert manager_reads(path) == {
        "git_exe": "", "channel_url": "https://example.com/channel", "security_level": "normal-", "use_uv": "True",
        "db_mode": "cache", "use_unified_resolver": "False", "network_mode": "personal_cloud",
        "allow_git_url_install": "True", "allow_pip_install": "False", "allow_flagged_nodepack_install": "True"}
    assert setup(config).changes == ()  # idempotent: nothing rewritten


def test_setup_writes_no_security_key_the_deployment_does_not_set(tmp_path: Path) -> None:
    site = pip_site(tmp_path / "site")
    result = setup(load_config(site.root))
    assert result.created and [c.key for c in result.changes] == ["use_uv", "use_unified_resolver"]
    assert manager_reads(site.root / "data/user/__manager/config.ini") == {
        "use_uv": "True", "use_unified_resolver": "False", "file_logging": "True"}
    assert edit_ini("[default]\nnetwork_mode = Personal_Cloud\n", {"network_mode": "personal_cloud"})[1] == []


@pytest.mark.parametrize(("setting", "message"), [
    ('network_mode = "lan"', "`manager.network_mode = 'lan'` is not one of: public, private, offline, personal_cloud"),
    ('security_level = "normal-minus"', "is not one of: strong, normal, normal-, weak (spelled `normal-`"),
    ("security_level = 3", "`manager.security_level = 3` is not one of"),
    ('allow_pip_install = "yes"', "`manager.allow_pip_install` must be true or false, not 'yes'"),
    ('network_modes = "public"', "unknown key `manager.network_modes`"),
])
def test_a_bad_setting_is_refused_naming_its_line(tmp_path: Path, setting: str, message: str) -> None:
    site = pip_site(tmp_path / "site")
    with_manager(site, "pip = true\n" + setting + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(site.root)
    assert message in str(caught.value)
    if "unknown key" not in message:
        assert str(caught.value).startswith(f"{site.root / 'envbuild.toml'}:{line_of(site, setting.split()[0])}: ")


def test_a_server_listen_without_personal_cloud_warns_in_setup_status_and_doctor(
    tmp_path: Path, uv_env: dict[str, str]
) -> None:
    site = pip_site(tmp_path / "site", clone=True)
    text = (site.root / "envbuild.toml").read_text().replace('base-directory = "data"\n',
                                                            'base-directory = "data"\nlisten = "0.0.0.0"\n')
    (site.root / "envbuild.toml").write_text(text)
    result = run_cli(["manager", "setup"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result
    assert "ComfyUI-Manager: pip package comfyui_manager==4.2.2 from ComfyUI/manager_requirements.txt:1" \
        in result.stdout
    assert "warning: [comfyui] listen = '0.0.0.0' is not one loopback address: Manager 4 then refuses" in result.stderr
    assert "warning: data/custom_nodes/comfyui-manager is a ComfyUI-Manager clone, not used: with --enable-manager " \
           "ComfyUI runs the pip Manager and blocks any custom_nodes entry named *comfyui-manager* by policy" \
           in result.stderr
    doctor = run_cli(["doctor", "--profile", "cu126", "--no-import", "--no-probe", "--json"], env=uv_env,
                     cwd=site.root)
    check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "ComfyUI-Manager")
    assert check["status"] == "warn" and "network_mode = personal_cloud" in check["detail"], check
    with_manager(site, 'network_mode = "personal_cloud"\nsecurity_level = "normal"\n')
    (site.nodes / "comfyui-manager").rename(site.nodes / "comfyui-manager.disabled")
    setup_again = run_cli(["manager", "setup"], env=uv_env, cwd=site.root)
    assert "warning" not in setup_again.stderr, setup_again
    assert "network_mode = personal_cloud (was: not set)" in setup_again.stdout
    status = run_cli(["manager", "status"], env=uv_env, cwd=site.root)
    assert "  network_mode = personal_cloud (envbuild.toml: personal_cloud)" in status.stdout
    assert "set up for envbuild: yes" in status.stdout and "warning" not in status.stderr
    doctor = run_cli(["doctor", "--profile", "cu126", "--no-import", "--no-probe", "--json"], env=uv_env,
                     cwd=site.root)
    check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "ComfyUI-Manager")
    assert check["status"] == "pass", check


def test_init_says_which_manager_the_deployment_runs(tmp_path: Path, uv_env: dict[str, str]) -> None:
    root = tmp_path / "site"
    checkout = root / "ComfyUI"
    (checkout / "comfy").mkdir(parents=True)
    for name, text in (("main.py", ""), ("requirements.txt", "torch\n"), ("manager_requirements.txt", PIN)):
        (checkout / name).write_text(text)
    (checkout / "custom_nodes" / "ComfyUI-Manager").mkdir(parents=True)
    result = run_cli(["init"], env=uv_env, cwd=root)
    assert result.returncode == 0, result
    assert ("ComfyUI-Manager: pip package comfyui_manager==4.2.2 from ComfyUI/manager_requirements.txt:1 "
            "(`envbuild run` passes --enable-manager)") in result.stdout
    assert "ComfyUI/custom_nodes/ComfyUI-Manager is a ComfyUI-Manager clone" in result.stderr
    written = (root / "envbuild.toml").read_text()
    assert "# found: pip package comfyui_manager==4.2.2 from ComfyUI/manager_requirements.txt:1" in written
    assert '# network_mode = "personal_cloud"' in written
    assert load_config(root).manager_ini == {}  # everything offered is commented out


def test_a_bad_setting_written_as_a_dotted_key_or_inline_table(tmp_path: Path) -> None:
    site = make_deployment(tmp_path / "site", manager=None)
    config = site.root / "envbuild.toml"
    config.write_text('manager.network_mode = "lan"\n' + config.read_text())
    with pytest.raises(ConfigError, match=r"envbuild\.toml:1: `manager\.network_mode = 'lan'`"):
        load_config(site.root)
    config.write_text('manager = { network_mode = "lan" }\n' + config.read_text().split("\n", 1)[1])
    with pytest.raises(ConfigError) as caught:
        load_config(site.root)
    assert str(caught.value).startswith(f"{config}: `manager.network_mode = 'lan'`")  # no line to name: the file


def test_the_pip_manager_reads_user_manager_config_whatever_else_is_there(tmp_path: Path) -> None:
    """No folder_paths.py to look at (a deployment holding only requirement files) and an old
    default/ComfyUI-Manager/config.ini: the pip Manager still reads <user>/__manager (it migrates nothing)."""
    site = pip_site(tmp_path / "site")
    (site.comfyui / "folder_paths.py").unlink()
    old = site.root / "data/user/default/ComfyUI-Manager/config.ini"
    old.parent.mkdir(parents=True)
    old.write_text("[default]\nuse_uv = False\n")
    layout = locate(load_config(site.root))
    assert (layout.config_path, layout.version, layout.warnings) == (
        site.root / "data/user/__manager/config.ini", "4.2.2", ())


def test_status_says_none_when_the_deployment_runs_no_manager(tmp_path: Path, uv_env: dict[str, str]) -> None:
    site = pip_site(tmp_path / "site")
    with_manager(site, "enabled = false\n")
    status = run_cli(["manager", "status"], env=uv_env, cwd=site.root)
    assert (status.returncode, status.stdout) == (0, "ComfyUI-Manager: none ([manager] enabled = false)\n"), status
    bare = make_deployment(tmp_path / "bare", manager=None)
    status = run_cli(["manager", "status"], env=uv_env, cwd=bare.root)
    assert status.stdout == ("ComfyUI-Manager: none (no manager_requirements.txt in the ComfyUI checkout and no "
                             "ComfyUI-Manager clone in custom_nodes)\n"), status
    assert run_cli(["manager", "setup"], env=uv_env, cwd=bare.root).returncode == 2  # nothing to set up: an error


def test_a_manager_requirements_link_to_nothing_is_an_error_not_no_manager(tmp_path: Path) -> None:
    site = pip_site(tmp_path / "site")
    (site.comfyui / "manager_requirements.txt").unlink()
    (site.comfyui / "manager_requirements.txt").symlink_to(tmp_path / "gone.txt")
    with pytest.raises(RequirementFileError, match="ComfyUI/manager_requirements.txt: is a symbolic link to nothing"):
        collect_inputs(load_config(site.root))
    with_manager(site, "pip = false\n")  # the way out it names
    assert manager_route(load_config(site.root)).kind == NO_ROUTE
