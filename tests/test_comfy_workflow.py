"""The seed's whole ComfyUI workflow through envbuild, on a fake ComfyUI and a fake Manager.

The seed (`comfyui-uv-deploy.md`) clones ComfyUI, clones ComfyUI-Manager into
`<data>/custom_nodes`, turns on the Manager's uv mode in its config.ini, installs the
requirements plus pip, and starts `main.py --base-directory ../data --listen 0.0.0.0`. Here each
step is an envbuild command (the README's "From zero to ComfyUI" lists the same ones), run as
real processes against the loopback index. The fake `main.py` prints what a real one would run
with, and can play the Manager installing a node's requirement with pip or uv.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from envbuild.comfy.inputs import merge_inputs
from envbuild.core.errors import ConfigError
from envbuild.env.run import comfy_args
from envbuild.settings.config import load_config
from envbuild.torch.catalogue import load_catalogue
from envbuild.uv.command import describe_removals, package_changes
from tests.support.catalogue import Catalogue
from tests.support.deploy import Deployment, make_deployment, run_cli, torch_in_venv, venv_python
from tests.test_gitsrc import GIT_ENV, git, make_repo
from tests.test_guard import node_index, node_wheels  # noqa: F401 - fixtures

FIXTURES = Path(__file__).parent / "fixtures"

FAKE_MAIN = textwrap.dedent("""\
    import json, os, subprocess, sys
    args = sys.argv[1:]
    install = None
    if "--node-install" in args:  # play ComfyUI-Manager: `python -m pip install <line>` or `uv pip install <line>`
        i = args.index("--node-install")
        tool, line = args[i + 1], args[i + 2]
        cmd = [sys.executable, "-m", "pip", "install", line] if tool == "pip" else ["uv", "pip", "install", line]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        install = {"returncode": proc.returncode, "output": proc.stdout + proc.stderr}
    import torch
    print(json.dumps({"argv": args, "executable": sys.executable, "cwd": os.getcwd(), "torch": torch.__version__,
                      "cuda": torch.version.cuda, "PIP_CONSTRAINT": os.environ["PIP_CONSTRAINT"],
                      "VIRTUAL_ENV": os.environ.get("VIRTUAL_ENV"), "install": install}))
    """)

COMFY_FILES = {
    "requirements.txt": "torch\ntorchsde\ntorchvision\nnumpy>=1.25.0\neinops\npyyaml\nPillow\nrequests\n",
    "main.py": FAKE_MAIN,
    "folder_paths.py": "def get_system_user_directory(name='system'):\n    return '__' + name\n",
}
MANAGER_FILES = {  # a v3.38+ Manager: its own code says config.ini lives in <user>/__manager
    "requirements.txt": "pyyaml\nrequests\nuv\n",
    "pyproject.toml": '[project]\nname = "comfyui-manager"\nversion = "3.41"\n',
    "glob/manager_core.py": "def update_user_directory(user_dir): ...\n",
    "glob/manager_migration.py": "def get_manager_path(user_dir): ...\n",
}
CONFIG = """\
    [comfyui]
    git = "upstream/ComfyUI"
    ref = "v0.3.60"
    path = "ComfyUI"
    base-directory = "data"
    listen = "0.0.0.0"
    port = 8188

    [manager]
    git = "upstream/ComfyUI-Manager"
    ref = "3.41"

    [lock]
    profiles = ["cu126"]
    """


# Current ComfyUI (v0.4.0+): the Manager is the pip package of its manager_requirements.txt (README first).
CONFIG_PIP = """\
    [comfyui]
    git = "upstream/ComfyUI"
    ref = "v0.33.0"
    path = "ComfyUI"
    base-directory = "data"
    listen = "0.0.0.0"
    port = 8188

    [manager]
    network_mode = "personal_cloud"
    security_level = "normal"

    [lock]
    profiles = ["cu126"]
    """


# The README's commands: one machine makes the deployment, another restores it (`git` = commit / clone).
WORKFLOW = ["fetch", "node add", "lock", "git", "fetch", "sync", "manager setup", "run"]


def test_readme_lists_exactly_the_workflow() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From zero to ComfyUI\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] == "envbuild":
            words = words[1:]
        if words:
            commands.append(" ".join(words[:2]) if words[0] in ("node", "manager") else words[0])
    assert commands == WORKFLOW


def comfy_output(result: object) -> dict[str, object]:
    stdout = result.stdout  # type: ignore[attr-defined]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("route", ["pip", "clone"])
def test_from_zero_to_comfyui(tmp_path: Path, uv_env: dict[str, str], node_index: Catalogue,  # noqa: F811
                              route: str, request: pytest.FixtureRequest) -> None:
    """Both README variants: current ComfyUI with its pip Manager, and the legacy Manager clone."""
    made, site = tmp_path / "made-here", tmp_path / "another-machine"
    upstream = tmp_path / "upstream"
    pip = route == "pip"
    if pip:
        request.getfixturevalue("manager_pypi")  # comfyui_manager 4.2.2 on the loopback PyPI
        make_repo(upstream / "ComfyUI", {**COMFY_FILES, "manager_requirements.txt": "comfyui_manager==4.2.2\n"},
                  tag="v0.33.0")
    else:
        make_repo(upstream / "ComfyUI", COMFY_FILES, tag="v0.3.60")
        make_repo(upstream / "ComfyUI-Manager", MANAGER_FILES, tag="3.41")
    node_commit = make_repo(upstream / "ComfyUI-KJNodes", {"__init__.py": "", "requirements.txt": "einops\n"},
                            tag="1.1.7")
    made.mkdir()
    (made / "envbuild.toml").write_text(textwrap.dedent(CONFIG_PIP if pip else CONFIG).replace(
        '"upstream/', f'"{upstream}/'), encoding="utf-8")
    env = {**uv_env, **GIT_ENV}

    def envbuild(*args: str, where: Path = site) -> object:
        result = run_cli(list(args), env=env, cwd=where)
        assert result.returncode == 0, result
        return result

    # The README's commands, in its order (test_readme_lists_exactly_the_workflow checks the README).
    assert WORKFLOW[:3] == ["fetch", "node add", "lock"]
    envbuild("fetch", where=made)
    assert (made / "data" / "custom_nodes" / "comfyui-manager" / "requirements.txt").is_file() is not pip
    envbuild("node", "add", (upstream / "ComfyUI-KJNodes").as_uri(), "--ref", "1.1.7", where=made)
    envbuild("lock", where=made)
    lock = (made / "locks" / "cu126" / "uv.lock").read_text()
    assert 'name = "pip"' in lock and 'name = "uv"' in lock  # what the Manager shells out to
    assert 'name = "einops"' in lock  # the node's requirement
    assert ('name = "comfyui-manager"' in lock) is pip  # the pip Manager, locked with ComfyUI
    git(made, "init", "-q", "-b", "main")
    git(made, "add", "envbuild.toml", "locks")
    git(made, "commit", "-q", "-m", "ComfyUI deployment")
    git(tmp_path, "clone", "-q", str(made), str(site))  # another machine: the repository, nothing else

    assert WORKFLOW[4:7] == ["fetch", "sync", "manager setup"]
    fetched = envbuild("fetch")
    assert f"node ComfyUI-KJNodes: cloned at {node_commit[:12]}" in fetched.stdout  # type: ignore[attr-defined]
    envbuild("sync")
    venv = site / ".venv"
    generation = venv.resolve()  # `run` starts ComfyUI in the generation itself: a later switch spares it
    assert torch_in_venv(venv) == ("2.7.1+cu126", "12.6")
    setup = envbuild("manager", "setup")
    config_ini = site / "data" / "user" / "__manager" / "config.ini"
    assert "data/user/__manager/config.ini: created with use_uv = True" in setup.stdout  # type: ignore[attr-defined]
    assert "use_uv = True\nuse_unified_resolver = False\n" in config_ini.read_text()
    if pip:  # declared in [manager]; with them, listen = "0.0.0.0" draws no warning
        assert "network_mode = personal_cloud\nsecurity_level = normal\n" in config_ini.read_text()
        assert "warning" not in setup.stderr  # type: ignore[attr-defined]

    # `envbuild run` (WORKFLOW[7]); in it, ComfyUI-Manager installs a node that wants another torch,
    # with pip and with uv: refused.
    for tool in ("pip", "uv"):
        started = comfy_output(envbuild("run", "--", "--node-install", tool, "torch==2.1.0"))
        install = started["install"]
        assert isinstance(install, dict) and install["returncode"] != 0, install
        assert "2.7.1+cu126" in install["output"]
        if tool == "uv":  # `uv pip` found the venv envbuild started ComfyUI with, not the shell's UV_PYTHON
            assert f"environment at: {generation}" in install["output"]
        assert (started["torch"], started["cuda"]) == ("2.7.1+cu126", "12.6")

    ran = envbuild("run", "--", "--port", "8190")
    out = comfy_output(ran)
    assert out["argv"] == [*(["--enable-manager"] if pip else []), "--base-directory", str(site / "data"),
                           "--listen", "0.0.0.0", "--port", "8188",
                           "--port", "8190"]  # ComfyUI's argparse keeps the last --port
    assert out["executable"] == str(venv_python(generation)) and out["VIRTUAL_ENV"] == str(generation)
    assert out["cwd"] == str(site / "ComfyUI") and out["cuda"] == "12.6"
    assert out["PIP_CONSTRAINT"] == str(site / "locks" / "cu126" / "constraints.txt")
    assert "cu126: starting ComfyUI with" in ran.stdout  # type: ignore[attr-defined]


@pytest.fixture
def ready(tmp_path: Path, uv_env: dict[str, str], index_server: Catalogue) -> Deployment:
    d = make_deployment(tmp_path / "site", profiles=("cu126",))
    (d.comfyui / "main.py").write_text(FAKE_MAIN, encoding="utf-8")
    for args in (["lock"], ["sync"]):
        result = run_cli(args, env=uv_env, cwd=d.root)
        assert result.returncode == 0, result
    return d


def test_run_refuses_a_stale_lock_and_a_venv_that_does_not_hold_the_lock(
    ready: Deployment, uv_env: dict[str, str], uv_bin: Path
) -> None:
    ready.add_node("NewNode", "einops\nsix\n")
    stale = run_cli(["run"], env=uv_env, cwd=ready.root)
    assert stale.returncode == 4 and "Traceback" not in stale.stderr, stale
    assert "the lock for profile cu126 is out of date: data/custom_nodes/NewNode/requirements.txt is a new input" \
        in stale.stderr
    assert "envbuild lock --profile cu126" in stale.stderr
    (ready.nodes / "NewNode" / "requirements.txt").unlink()

    # numpy moved by hand: reading torch alone would not notice, the dry-run sync does.
    import subprocess

    subprocess.run([str(uv_bin), "pip", "install", "--python", str(venv_python(ready.venv)), "numpy==1.26.4"],
                   env=uv_env, check=True, capture_output=True)
    moved = run_cli(["run"], env=uv_env, cwd=ready.root)
    assert moved.returncode == 7, moved
    assert "does not hold the lock of profile cu126: a sync would install numpy==2.1.0" in moved.stderr
    assert f"envbuild sync --profile cu126 --venv {ready.venv}" in moved.stderr

    missing = run_cli(["run", "--venv", "elsewhere"], env=uv_env, cwd=ready.root)
    assert missing.returncode == 7 and "no environment at" in missing.stderr, missing


def test_extra_packages_are_a_warning_and_sync_says_what_it_removed(
    ready: Deployment, uv_env: dict[str, str], uv_bin: Path
) -> None:
    import subprocess

    subprocess.run([str(uv_bin), "pip", "install", "--python", str(venv_python(ready.venv)), "six"],
                   env=uv_env, check=True, capture_output=True)
    ran = run_cli(["run", "--profile", "cu126"], env=uv_env, cwd=ready.root)
    assert ran.returncode == 0, ran
    assert "also holds 1 package(s) the lock does not list (six==1.17.0)" in ran.stderr
    assert comfy_output(ran)["cuda"] == "12.6"

    # The exact sync removes it; describe_removals turns uv's own output into the message.
    from envbuild.uv.command import get_uv

    output = get_uv(uv_env).sync(ready.locks / "cu126", ready.venv, stream=False)
    lines = describe_removals(output)
    assert lines[0].startswith("sync removed 1 package(s) the lock does not list: six==1.17.0 (sync is exact;")
    assert "`envbuild lock`" in lines[1]
    assert describe_removals(get_uv(uv_env).sync(ready.locks / "cu126", ready.venv, stream=False)) == []


def test_package_changes_reads_uv_lines_and_a_version_change_is_no_removal() -> None:
    output = ("Resolved 13 packages in 1ms\nUninstalled 3 packages in 2ms\nInstalled 2 packages in 1ms\n"
              " + einops==0.8.0\n - nodedep==1.0\n - numpy==1.26.4\n + numpy==2.1.0\n"
              " - \x1b[1msix\x1b[0m==1.17.0\n - my-node @ file:///tmp/my_node\n")
    assert package_changes(output) == (["einops==0.8.0", "numpy==2.1.0"],
                                       ["my-node @ file:///tmp/my_node", "nodedep==1.0", "six==1.17.0"])
    assert describe_removals("Resolved 13 packages in 1ms\nChecked 12 packages in 0.9ms\n") == []


def test_comfyui_settings_become_flags_and_are_checked(tmp_path: Path) -> None:
    (tmp_path / "envbuild.toml").write_text('[comfyui]\npath = "C"\nbase-directory = "d"\nlisten = "::"\nport = 9000\n')
    assert comfy_args(load_config(tmp_path)) == ["--base-directory", str(tmp_path / "d"), "--listen", "::",
                                                 "--port", "9000"]
    for bad, message in (('port = "80"', "must be an integer"), ("port = 70000", "between 1 and 65535"),
                         ("listen = true", "must be a string")):
        (tmp_path / "envbuild.toml").write_text(f"[comfyui]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path)


# --- node inputs: the opencv and onnxruntime rules, node pyproject.toml ------------------------


def nodes_deployment(root: Path, nodes: dict[str, str]) -> Deployment:
    d = make_deployment(root)
    for name, requirements in nodes.items():
        d.add_node(name, requirements)
    return d


def merged(d: Deployment, profile: str = "cu126") -> tuple[dict[str, str], list[str]]:
    result = merge_inputs(load_config(d.root), load_catalogue().get(profile))
    return ({r.name: r.pep508() for r in result.result.requirements},
            [f"{w.origin}: {w.message}" for w in result.warnings])


def test_real_nodes_opencv_variants_become_one_headless_build(tmp_path: Path) -> None:
    d = make_deployment(tmp_path / "site")
    for node in ("comfyui_controlnet_aux", "ComfyUI-Impact-Pack", "ComfyUI-VideoHelperSuite"):
        d.add_node(node, (FIXTURES / "nodes" / node / "requirements.txt").read_text())
    names, warnings = merged(d)
    assert "opencv-python" not in names
    assert names["opencv-python-headless"] == "opencv-python-headless>=4.7.0.72"  # the specifier followed
    (warning,) = [w for w in warnings if "module: " in w]
    assert warning.startswith("data/custom_nodes/comfyui_controlnet_aux/requirements.txt:5 (node comfyui_controlnet_aux)"
                              ": the `cv2` module: opencv-python-headless kept (asked by ")
    assert "ComfyUI-Impact-Pack/requirements.txt" in warning
    assert "replacing opencv-python from data/custom_nodes/comfyui_controlnet_aux/requirements.txt:5" in warning


def test_contrib_wins_over_plain_and_extras_and_markers_survive(tmp_path: Path) -> None:
    d = nodes_deployment(tmp_path / "site", {
        "A": "opencv-python-headless[ffmpeg]\n", "B": "opencv-contrib-python<4.11; sys_platform == 'linux'\n",
        "C": "opencv-python>=4.8\n"})
    names, warnings = merged(d)
    assert {n for n in names if n.startswith("opencv")} == {"opencv-contrib-python-headless"}
    # Entries with different markers stay apart (uv combines them per platform).
    result = merge_inputs(load_config(d.root), load_catalogue().get("cu126")).result.requirements
    texts = sorted(r.pep508() for r in result if r.name.startswith("opencv"))
    # The replaced builds' extras are dropped ([ffmpeg] is opencv-python-headless's, not contrib's), and said.
    assert texts == ["opencv-contrib-python-headless<4.11; sys_platform == \"linux\"",
                     "opencv-contrib-python-headless>=4.8"]
    (warning,) = [w for w in warnings if "module: " in w]  # one note for the group, every line named
    assert "opencv-contrib-python-headless kept, replacing " in warning
    assert all(f"custom_nodes/{n}/requirements.txt:1" in warning for n in ("A", "B", "C"))
    assert "extras dropped (opencv-python-headless[ffmpeg])" in warning


def test_one_variant_alone_is_left_as_asked(tmp_path: Path) -> None:
    names, warnings = merged(nodes_deployment(tmp_path / "site", {"A": "opencv-python\n", "B": "onnxruntime-gpu\n"}))
    assert "opencv-python" in names and "onnxruntime-gpu" in names
    assert not [w for w in warnings if "module: " in w]


@pytest.mark.parametrize(("profile", "kept", "dropped"), [
    ("cu126", "onnxruntime-gpu", "onnxruntime"), ("cu126-pypi", "onnxruntime-gpu", "onnxruntime"),
    ("cpu", "onnxruntime", "onnxruntime-gpu"), ("rocm6.3", "onnxruntime", "onnxruntime-gpu"),
])
def test_onnxruntime_follows_the_profile(tmp_path: Path, profile: str, kept: str, dropped: str) -> None:
    d = nodes_deployment(tmp_path / "site", {"Rembg": "onnxruntime>=1.17\n", "Reactor": "onnxruntime-gpu\n"})
    names, warnings = merged(d, profile)
    assert names[kept] == f"{kept}>=1.17" and dropped not in names
    assert any(f"{kept} kept (asked by " in w and f"replacing {dropped} from" in w and "node Rembg" in w
               and "node Reactor" in w for w in warnings)


def test_node_pyproject_dependencies_and_broken_ones(tmp_path: Path) -> None:
    d = make_deployment(tmp_path / "site")
    good = d.nodes / "PyNode"
    good.mkdir()
    (good / "pyproject.toml").write_text(textwrap.dedent("""\
        [project]
        name = "comfyui-einops-node"
        dependencies = [
            "einops>=0.6",
            "six",
        ]
        """), encoding="utf-8")
    broken = d.nodes / "Broken"
    broken.mkdir()
    (broken / "pyproject.toml").write_text("[project\nname = 1\n", encoding="utf-8")
    dynamic = d.nodes / "Dynamic"
    dynamic.mkdir()
    (dynamic / "pyproject.toml").write_text('[project]\nname = "x"\ndynamic = ["dependencies"]\n', encoding="utf-8")
    result = merge_inputs(load_config(d.root), load_catalogue().get("cu126"))
    origins = {r.name: [str(o.origin) for o in r.origins] for r in result.result.requirements}
    # The line of the quoted string, not the `name = "comfyui-einops-node"` line that also says "einops".
    assert "data/custom_nodes/PyNode/pyproject.toml:4 (node PyNode)" in origins["einops"]
    assert origins["six"] == ["data/custom_nodes/PyNode/pyproject.toml:5 (node PyNode)"]
    warnings = [f"{w.origin}: {w.message}" for w in result.warnings]
    assert any(w.startswith("data/custom_nodes/Broken/pyproject.toml:0 (node Broken): is not valid TOML")
               and "left out" in w for w in warnings)
    assert any("(node Dynamic): [project].dependencies are dynamic" in w for w in warnings)
