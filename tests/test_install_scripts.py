"""A node's install.py read statically (never run): the real scripts of tests/data/install_py and the
patterns its reader knows, exactly; then what the lock does not hold, and the `requirements` setting."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from envbuild.comfy.install_scripts import Finding, ScriptReport, analyse, describe, read_install_script, uncovered
from envbuild.core.errors import ConfigError
from envbuild.settings.config import load_config
from envbuild.settings.pins import NodePin
from envbuild.settings.pins_edit import write_pin
from tests.support.deploy import make_deployment, run_cli

DATA = Path(__file__).parent / "data" / "install_py"
# The 2023 Impact-Pack script is the one the real-node corpus holds: read from there, not kept twice.
IMPACT_PACK_2023 = Path(__file__).parent / "data" / "real_nodes" / "ComfyUI-Impact-Pack" / "install.py"


def findings(name: str | Path) -> list[tuple[str, str, int, str]]:
    path = name if isinstance(name, Path) else DATA / name
    return [tuple(f)[:4] for f in read_install_script(path).findings]  # type: ignore[misc]


def test_frame_interpolation_installs_a_requirement_file_line_by_line_and_a_cupy_named_at_run_time() -> None:
    assert findings("frame_interpolation.py") == [
        ("dynamic", "pip is given `cupy-cuda{get_cuda_ver_from_dir(cuda_home)}`", 50, ""),
        ("package", "cupy-wheel", 50, ""),
        ("requirements", "requirements-no-cupy.txt", 56, ""),
    ]


def test_reactor_installs_onnxruntime_through_its_own_run_pip_and_its_requirements_line_by_line() -> None:
    assert findings("reactor.py") == [
        ("package", "onnxruntime", 77, ""),
        ("package", "onnxruntime-gpu", 77, ""),
        ("requirements", "requirements.txt", 99, ""),
    ]


def test_impact_pack_clones_its_subpack_and_runs_its_install_script() -> None:
    assert findings("impact_pack.py") == [
        ("clone", "https://github.com/ltdrdata/ComfyUI-Impact-Subpack", 91, "impact_subpack"),
        ("script", "impact_subpack/install.py", 107, ""),
    ]


def test_the_older_impact_pack_extends_a_pip_list_and_passes_a_cwd() -> None:
    assert findings(IMPACT_PACK_2023) == [
        ("requirements", "subpack/requirements.txt", 67, ""),
        ("package", "openmim", 70, ""),
        ("package", "pycocotools", 78, ""),
        ("dynamic", "pip is given `pycocotools[version]`", 89, ""),
        ("requirements", "requirements.txt", 100, ""),
        ("package", "opencv-python", 107, ""),
        ("package", "gitpython", 114, ""),
        ("package", "opendatalab==0.0.9", 123, ""),
        ("script", "subpack/install.py", 167, ""),
    ]


def read(source: str) -> list[tuple[str, str, int, str]]:
    return [tuple(f)[:4] for f in analyse(textwrap.dedent(source))]  # type: ignore[misc]


@pytest.mark.parametrize(("source", "expected"), [
    ('import os\nos.system("pip install -r requirements-gpu.txt && git clone https://example.com/a/sub.git lib/sub")\n',
     [("clone", "https://example.com/a/sub.git", 2, "lib/sub"), ("requirements", "requirements-gpu.txt", 2, "")]),
    ('import subprocess, sys\nsubprocess.check_call([sys.executable, "-m", "pip", "install", "-U", "--extra-index-url",'
     ' "https://example.com/simple", "insightface==0.7.3"])\n', [("package", "insightface==0.7.3", 2, "")]),
    ('import launch\nlaunch.run_pip("install onnxruntime-gpu", "onnxruntime for ReActor")\n',
     [("package", "onnxruntime-gpu", 2, "")]),
    ('import pip\npip.main(["install", "dill"])\n', [("package", "dill", 2, "")]),
    ('pip_install("numba")\n', [("package", "numba", 1, "")]),
    ('from subprocess import run\nimport os\nhere = os.path.dirname(os.path.realpath(__file__))\n'
     'run(["pip", "install", "-r", os.path.join(here, "extra", "req.txt")])\n',
     [("requirements", "extra/req.txt", 4, "")]),
    ('from pathlib import Path\nimport git\ngit.Repo.clone_from("https://example.com/x.git", Path(__file__).parent / "x")\n',
     [("clone", "https://example.com/x.git", 3, "x")]),
    ('import os, subprocess\nsubprocess.run(os.environ["INSTALL_COMMAND"], shell=True)\n',
     [("dynamic", "runs a command envbuild cannot read (subprocess.run(os.environ['INSTALL_COMMAND'], shell=True))", 2,
       "")]),
    ('import os\nos.system("pip install -r ../../requirements.txt")\n',
     [("dynamic", "a requirement file `../../requirements.txt`", 2, "")]),
    ('import subprocess\nsubprocess.run(["nvidia-smi"])\nprint("nothing to install")\n', []),
    ("def broken(:\n", [("dynamic", "it is not valid Python (invalid syntax)", 1, "")]),
])
def test_the_patterns_the_reader_knows(source: str, expected: list[tuple[str, str, int, str]]) -> None:
    assert read(source) == expected


def test_a_script_that_is_too_deep_or_too_big_is_said_not_read(tmp_path: Path) -> None:
    assert read("x = " + "(" * 5000 + "1" + ")" * 5000 + "\n")[0][0] == "dynamic"
    functions = "".join(f"def f{i}():\n" + "".join(f"    f{j}()\n" for j in range(60)) for i in range(60))
    tangled = read(functions + "f0()\n")
    assert [f[0] for f in tangled] == ["dynamic"] and "too many times over" in tangled[0][1]
    doubling = "x0 = 'a'\n" + "".join(f"x{i} = x{i - 1} + x{i - 1}\n" for i in range(1, 60))
    assert read(doubling + "import os\nos.system(x59)\n")[0][0] == "dynamic"
    big = tmp_path / "install.py"
    big.write_text("#" * (2 * 1024 * 1024), encoding="utf-8")
    assert [f.kind for f in read_install_script(big).findings] == ["dynamic"]


def test_what_the_lock_does_not_hold_and_how_it_is_said() -> None:
    report = ScriptReport(DATA / "frame_interpolation.py", read_install_script(DATA / "frame_interpolation.py").findings)
    missing = uncovered(report, read_files={"pyproject.toml"}, held={"torch"})
    assert [f.kind for f in missing] == ["dynamic", "package", "requirements"]
    assert describe("ComfyUI-Frame-Interpolation", missing) == (
        "envbuild never runs install.py; it installs what the lock does not hold: the requirement file "
        "requirements-no-cupy.txt (line 56), cupy-wheel (line 50); install.py does something envbuild cannot read "
        "statically: review it (line 50: pip is given `cupy-cuda{get_cuda_ver_from_dir(cuda_home)}`). To lock them, "
        'add [custom-nodes.ComfyUI-Frame-Interpolation] requirements = ["requirements-no-cupy.txt"] to envbuild.toml; '
        "put the packages the node needs into a file of [lock] extra-requirements")
    declared = uncovered(report, read_files={"requirements-no-cupy.txt"}, held={"cupy-wheel"})
    assert [f.kind for f in declared] == ["dynamic"]
    reactor = read_install_script(DATA / "reactor.py")
    # `ort` is onnxruntime-gpu, or onnxruntime on a machine without CUDA: one choice, held when either is.
    assert uncovered(reactor, read_files={"requirements.txt"}, held={"onnxruntime"}) == []
    assert uncovered(reactor, read_files={"requirements.txt"}, held={"onnxruntime-gpu"}) == []
    assert describe("ComfyUI-ReActor", uncovered(reactor, read_files={"requirements.txt"}, held=set())) == (
        "envbuild never runs install.py; it installs what the lock does not hold: onnxruntime or onnxruntime-gpu "
        "(line 77). Put the packages the node needs into a file of [lock] extra-requirements")
    impact = uncovered(read_install_script(DATA / "impact_pack.py"), read_files={"requirements.txt"}, held=set())
    assert describe("ComfyUI-Impact-Pack", impact) == (
        "envbuild never runs install.py; it clones https://github.com/ltdrdata/ComfyUI-Impact-Subpack into "
        "impact_subpack (line 91), whose requirements the lock does not hold; it runs impact_subpack/install.py "
        "(line 107), which envbuild cannot read (not in the node's folder). To lock them, add "
        '[custom-nodes.ComfyUI-Impact-Pack] requirements = ["impact_subpack/requirements.txt"] to envbuild.toml '
        "(after cloning the sub-repository there)")
    assert Finding("clone", "u", 1, "t") in uncovered(ScriptReport(DATA, (Finding("clone", "u", 1, "t"),)),
                                                     read_files=set(), held=set())


# -- [custom-nodes.NAME] requirements -----------------------------------------------------------------------

def config_with(tmp_path: Path, text: str) -> Path:
    (tmp_path / "ComfyUI").mkdir(exist_ok=True)
    (tmp_path / "envbuild.toml").write_text('[comfyui]\npath = "ComfyUI"\n\n' + textwrap.dedent(text), encoding="utf-8")
    return tmp_path


def test_a_table_with_only_requirements_is_settings_for_an_unpinned_node_not_a_pin(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, """\
        [custom-nodes.ComfyUI-Frame-Interpolation]
        requirements = ["requirements-no-cupy.txt", "extra/more.txt"]
        """))
    assert config.node_pins == ()
    assert config.declared_requirements("comfyui-frame-interpolation") == ("requirements-no-cupy.txt", "extra/more.txt")
    assert config.declared_requirements("Other") == ()


@pytest.mark.parametrize(("value", "said"), [
    ('["../outside.txt"]', '`custom-nodes.X.requirements`: "../outside.txt" is not a relative path inside the node\'s'),
    ('["/etc/passwd"]', '"/etc/passwd" is not a relative path'),
    ('["-r evil.txt"]', "is not a relative path"),
    ('["a/.hidden.txt"]', "is not a relative path"),
    ('"requirements.txt"', "`custom-nodes.X.requirements` must be an array"),
])
def test_declared_files_are_checked_where_they_are_read(tmp_path: Path, value: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, f"[custom-nodes.X]\nrequirements = {value}\n"))
    assert said in str(caught.value)


def test_rewriting_a_pin_keeps_its_requirements(tmp_path: Path) -> None:
    root = config_with(tmp_path, """\
        # my nodes
        [custom-nodes.Node]
        requirements = ["requirements-no-cupy.txt"]  # install.py's list
        """)
    pin = NodePin("Node", "https://example.com/node.git", "a" * 40, "main")
    write_pin(root / "envbuild.toml", "Node", pin)
    config = load_config(root)
    assert config.node_pins == (pin,)
    assert config.declared_requirements("Node") == ("requirements-no-cupy.txt",)
    write_pin(root / "envbuild.toml", "Node", pin._replace(commit="b" * 40))
    assert load_config(root).declared_requirements("Node") == ("requirements-no-cupy.txt",)
    write_pin(root / "envbuild.toml", "Node", None)
    assert load_config(root).node_requirements == {}


# -- through the CLI: the warning, and a declared file locked --------------------------------------------------

def test_lock_names_what_install_py_installs_and_locks_a_declared_requirement_file(
    uv_env: dict[str, str], tmp_path: Path
) -> None:
    deployment = make_deployment(tmp_path / "site", profiles=("cu126",))
    node = deployment.nodes / "ComfyUI-Frame-Interpolation"
    node.mkdir()
    shutil.copy(DATA / "frame_interpolation.py", node / "install.py")
    (node / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n", encoding="utf-8")
    # As upstream: a pyproject.toml without dependencies; the packages are in the file install.py reads.
    (node / "pyproject.toml").write_text('[project]\nname = "comfyui-frame-interpolation"\nversion = "1.0.11"\n',
                                         encoding="utf-8")
    (node / "requirements-no-cupy.txt").write_text("six\neinops\n", encoding="utf-8")
    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    where = "cu126: data/custom_nodes/ComfyUI-Frame-Interpolation/install.py:50 (node ComfyUI-Frame-Interpolation)"
    assert (f"{where}: envbuild never runs install.py; it installs what the lock does not hold: the requirement file "
            "requirements-no-cupy.txt (line 56), cupy-wheel (line 50); install.py does something envbuild cannot read "
            "statically: review it (line 50: pip is given `cupy-cuda{get_cuda_ver_from_dir(cuda_home)}`). To lock "
            "them, add [custom-nodes.ComfyUI-Frame-Interpolation] requirements = [\"requirements-no-cupy.txt\"] to "
            "envbuild.toml; put the packages the node needs into a file of [lock] extra-requirements") in result.stderr
    lock_folder = deployment.locks / "cu126"
    assert 'name = "six"' not in (lock_folder / "uv.lock").read_text(encoding="utf-8")
    assert "install.py" not in (lock_folder / "pyproject.toml").read_text(encoding="utf-8")  # read, not an input
    again = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert "uv not run" in again.stdout and "requirements-no-cupy.txt (line 56)" in again.stderr, again  # said again
    listed = run_cli(["node", "list"], env=uv_env, cwd=deployment.root)
    assert ("    install.py: envbuild never runs install.py; it installs what its requirement files do not hold: the "
            "requirement file requirements-no-cupy.txt (line 56), cupy-wheel (line 50);") in listed.stdout, listed

    # Declared: locked like the node's own requirements, named by file:line; the warning keeps the rest.
    with (deployment.root / "envbuild.toml").open("a", encoding="utf-8") as config:
        config.write('\n[custom-nodes.ComfyUI-Frame-Interpolation]\nrequirements = ["requirements-no-cupy.txt"]\n')
    result = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert "data/custom_nodes/ComfyUI-Frame-Interpolation/requirements-no-cupy.txt is a new input" in result.stdout
    assert 'name = "six"' in (lock_folder / "uv.lock").read_text(encoding="utf-8")
    assert (f"{where}: envbuild never runs install.py; it installs what the lock does not hold: cupy-wheel (line 50); "
            "install.py does something envbuild cannot read statically") in result.stderr, result
    assert "requirement file requirements-no-cupy.txt" not in result.stderr
    explain = run_cli(["merge", "--profile", "cu126", "--explain"], env=uv_env, cwd=deployment.root)
    assert "data/custom_nodes/ComfyUI-Frame-Interpolation/requirements-no-cupy.txt:1" in explain.stdout, explain
    assert run_cli(["lock", "--check"], env=uv_env, cwd=deployment.root).returncode == 0

    # Read strictly: a line that is no requirement stops the lock, named by file:line.
    (node / "requirements-no-cupy.txt").write_text("six\neinops ===\n", encoding="utf-8")
    bad = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert bad.returncode != 0 and "requirements-no-cupy.txt:2" in bad.stderr, bad
    # A declared file that is not there is an error naming the key; a link out of the node's folder is refused.
    (node / "requirements-no-cupy.txt").unlink()
    gone = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert gone.returncode != 0, gone
    assert ("`custom-nodes.ComfyUI-Frame-Interpolation.requirements`: "
            "data/custom_nodes/ComfyUI-Frame-Interpolation/requirements-no-cupy.txt does not exist") in gone.stderr, gone
    outside = tmp_path / "outside.txt"
    outside.write_text("six\n", encoding="utf-8")
    (node / "requirements-no-cupy.txt").symlink_to(outside)
    linked = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert linked.returncode != 0 and "requirements-no-cupy.txt" in linked.stderr, linked


def test_a_cloned_subpack_declared_and_its_install_script_read_leave_nothing_to_say(tmp_path: Path) -> None:
    """Impact-Pack once its sub-pack is cloned where its install.py puts it: the sub-pack's install.py (it only
    downloads models) is read, and its requirements.txt, declared, holds the clone."""
    node = tmp_path / "ComfyUI-Impact-Pack"
    (node / "impact_subpack").mkdir(parents=True)
    shutil.copy(DATA / "impact_pack.py", node / "install.py")
    shutil.copy(DATA / "impact_subpack.py", node / "impact_subpack" / "install.py")
    report = read_install_script(node / "install.py", node)
    assert uncovered(report, read_files={"requirements.txt", "impact_subpack/requirements.txt"}, held=set(),
                     node=node) == []
    assert [(f.kind, f.value, f.line) for f in uncovered(report, read_files={"requirements.txt"}, held=set(),
                                                         node=node)] == [
        ("clone", "https://github.com/ltdrdata/ComfyUI-Impact-Subpack", 91)]
    (node / "impact_subpack" / "install.py").write_text('import os\nos.system("pip install -r req-extra.txt")\n',
                                                        encoding="utf-8")
    assert [(f.kind, f.value, f.line) for f in uncovered(report, read_files={"impact_subpack/requirements.txt"},
                                                         held=set(), node=node)] == [
        ("requirements", "impact_subpack/req-extra.txt", 107)]


def test_values_from_a_hostile_script_are_said_safely(tmp_path: Path) -> None:
    """What a script names ends up in committed warnings: no credentials, no control characters, and a
    script that is a link out of the node's folder is not read at all."""
    node = tmp_path / "node"
    node.mkdir()
    (node / "install.py").write_text(
        'import os\nos.system("git clone https://user:token@example.com/x.git sub")\n'
        'import subprocess, sys\nsubprocess.run([sys.executable, "-m", "pip", "install", "evil\\x1b[2Jname"])\n',
        encoding="utf-8")
    missing = uncovered(read_install_script(node / "install.py", node), read_files=set(), held=set())
    said = describe("node", missing)
    assert "token" not in said and "https://***@example.com/x.git into sub" in said
    assert "\x1b" not in said and "evil\\x1b[2Jname" in said
    secret = tmp_path / "elsewhere.py"
    secret.write_text('import os\nos.system("pip install secret-package")\n', encoding="utf-8")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "install.py").symlink_to(secret)
    assert read_install_script(linked / "install.py", linked).findings == (
        Finding("dynamic", "it is a link out of the node's folder, not read", 0),)
