"""`envbuild check` against a fake ComfyUI whose main.py loads custom nodes the way the real one does.

The fake follows ComfyUI's nodes.py (`load_custom_node`, `init_external_custom_nodes`, read at
Comfy-Org/ComfyUI a125cd84, October 2025): each node's `__init__.py` is executed; a failure logs the
traceback, then `Cannot import <path> module for custom nodes: <error>`; the import-time summary
marks it `(IMPORT FAILED)`; and `--quick-test-for-ci` exits 0 all the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from envbuild.deploy.deployment import load_deployment
from envbuild.env.check import CHECK_FILE, LogReader, last_check, run_check, venv_modules
from envbuild.settings.config import load_config
from tests.support.deploy import Deployment, make_deployment, run_cli

FAKE_MAIN = '''\
import argparse, importlib.util, logging, os, sys, time, traceback

parser = argparse.ArgumentParser()
parser.add_argument("--cpu", action="store_true")
parser.add_argument("--quick-test-for-ci", action="store_true")
parser.add_argument("--base-directory")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(message)s")  # stderr, as app/logger.py sets it up
here = os.path.dirname(os.path.realpath(__file__))
base = os.path.abspath(args.base_directory) if args.base_directory else here
sys.path.insert(0, here)
import comfy_core  # ComfyUI's own modules: a missing one ends the process with a traceback
logging.info("torch guard: %s", os.environ.get("PIP_CONSTRAINT"))


def load_custom_node(module_path):
    try:
        spec = importlib.util.spec_from_file_location(module_path.replace(".", "_x_"),
                                                      os.path.join(module_path, "__init__.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        if getattr(module, "NODE_CLASS_MAPPINGS", None) is not None:
            return True
        logging.warning(f"Skip {module_path} module for custom nodes due to the lack of NODE_CLASS_MAPPINGS or NODES_LIST (need one).")
        return False
    except Exception as e:
        logging.warning(traceback.format_exc())
        logging.warning(f"Cannot import {module_path} module for custom nodes: {e}")
        return False


times = []
folder = os.path.join(base, "custom_nodes")
for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if name == "__pycache__" or path.endswith(".disabled") or os.path.isfile(path):
        continue
    before = time.perf_counter()
    times.append((time.perf_counter() - before, path, load_custom_node(path)))
logging.info("\\nImport times for custom nodes:")
for t, path, ok in sorted(times):
    logging.info("{:6.1f} seconds{}: {}".format(t, "" if ok else " (IMPORT FAILED)", path))
logging.info("")
if args.quick_test_for_ci:
    exit(0)
time.sleep(3600)  # the server would listen here
'''


def plain_venv(root: Path, dists: dict[str, dict[str, str]]) -> Path:
    """A venv without pip whose site-packages holds hand-written distributions: name -> {path: text}."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = (venv / "lib").glob("python3*/site-packages") if sys.platform != "win32" else [venv / "Lib/site-packages"]
    for dist, files in dists.items():
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n\n")
        record = [f"{info.name}/METADATA,,"]
        for path, text in files.items():
            if text is not None:
                (site / path).parent.mkdir(parents=True, exist_ok=True)
                (site / path).write_text(text)
            record.append(f"{path},sha256=x,1")
        (info / "RECORD").write_text("\n".join(record) + "\n")
    return venv


def fake_comfyui(deployment: Deployment, core: str = "import yaml\n") -> None:
    (deployment.comfyui / "main.py").write_text(FAKE_MAIN)
    (deployment.comfyui / "comfy_core.py").write_text(core)


def node(deployment: Deployment, name: str, init: str, **files: str) -> Path:
    folder = deployment.nodes / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text(textwrap.dedent(init))
    for filename, text in files.items():
        (folder / filename).write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    made = make_deployment(tmp_path / "site", manager=None)
    fake_comfyui(made)
    node(made, "node_ok", "import yaml\nNODE_CLASS_MAPPINGS = {}\n")
    return made


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    return plain_venv(tmp_path, {"PyYAML": {"yaml/__init__.py": "", "_yaml/__init__.py": ""}})


def check(deployment: Deployment, venv: Path, timeout: float = 60):  # type: ignore[no-untyped-def]
    loaded = load_deployment(deployment.root, dict(os.environ))
    return run_check(loaded, loaded.catalogue.get("cu126"), venv, timeout)


def test_failing_nodes_are_found_in_the_log_and_named_with_their_distribution(
    deployment: Deployment, venv: Path
) -> None:
    node(deployment, "node_cv", "import os\nimport cv2\nNODE_CLASS_MAPPINGS = {}\n")
    node(deployment, "node_boom", "raise RuntimeError('boom')\n")
    node(deployment, "node_helper", "from .helper import blur\nNODE_CLASS_MAPPINGS = {}\n",
         **{"helper.py": "import skimage.filters\nblur = None\n"})
    node(deployment, "node_nomap", "VALUE = 1\n")
    node(deployment, "node_off.disabled", "raise SystemExit('a disabled node must not load')\n")
    result = check(deployment, venv)
    assert result.status == "failed" and result.returncode == 0  # ComfyUI itself said 0
    assert result.nodes_loaded == 1
    by_owner = {f.owner: f for f in result.failures}
    assert sorted(by_owner) == ["node_boom", "node_cv", "node_helper", "node_nomap"]
    cv = by_owner["node_cv"]
    assert (cv.kind, cv.module, cv.distribution, cv.source) == ("missing-module", "cv2", "opencv-python-headless", "table")
    assert cv.imported_by == "data/custom_nodes/node_cv/__init__.py:2"
    assert cv.advice == ("module cv2, imported by data/custom_nodes/node_cv/__init__.py:2 of node_cv, is not in the "
                         "lock: add opencv-python-headless to extra-requirements (or to the node's requirements)")
    helper = by_owner["node_helper"]
    assert (helper.module, helper.distribution) == ("skimage", "scikit-image")
    assert helper.imported_by == "data/custom_nodes/node_helper/helper.py:1"
    assert by_owner["node_boom"].error == "RuntimeError: boom" and by_owner["node_boom"].kind == "import-error"
    assert "NODE_CLASS_MAPPINGS" in by_owner["node_nomap"].error
    saved = last_check(venv)
    assert saved == result and (venv / CHECK_FILE).is_file()


def test_comfyui_crashing_on_its_own_import_names_comfyui(deployment: Deployment, venv: Path) -> None:
    fake_comfyui(deployment, core="import yaml\nimport requests\n")  # as app/frontend_management.py does
    result = check(deployment, venv)
    assert result.status == "failed" and result.returncode == 1
    (crash,) = result.failures
    assert (crash.owner, crash.kind, crash.module, crash.source) == ("ComfyUI", "crash", "requests", "guess")
    assert crash.imported_by == "ComfyUI/comfy_core.py:2"
    assert "add the distribution that provides it (probably requests) to extra-requirements (or to ComfyUI's" \
        in crash.advice


def test_a_node_that_hangs_hits_the_time_limit(deployment: Deployment, venv: Path) -> None:
    node(deployment, "node_slow", "import time\ntime.sleep(60)\n")
    result = check(deployment, venv, timeout=2)
    assert result.status == "timeout" and not result.ok and result.returncode is None
    assert last_check(venv).status == "timeout"


def test_import_names_map_to_distributions_venv_first(tmp_path: Path) -> None:
    venv = plain_venv(tmp_path, {
        "opencv-contrib-python": {"cv2/__init__.py": None, "cv2/data/x.xml": None},  # listed, files gone
        "protobuf": {"google/protobuf/__init__.py": None},
        "six": {"six.py": ""},
    })
    modules = venv_modules(venv)
    assert modules["cv2"] == "opencv-contrib-python" and modules["google.protobuf"] == "protobuf"
    assert modules["six"] == "six" and "cv2.data" in modules
    config = load_config(tmp_path)
    reader = LogReader(config, venv)
    assert reader.distribution("cv2") == ("opencv-contrib-python", "venv")
    assert reader.distribution("PIL.Image") == ("pillow", "table")
    assert reader.distribution("sklearn") == ("scikit-learn", "table")
    assert reader.distribution("my_tool.sub") == ("my-tool", "guess")
    log = textwrap.dedent("""\
        Traceback (most recent call last):
          File "/x/ComfyUI/nodes.py", line 2131, in load_custom_node
            module_spec.loader.exec_module(module)
          File "<frozen importlib._bootstrap_external>", line 940, in exec_module
          File "/x/ComfyUI/comfy_extras/nodes_canny.py", line 1, in <module>
            import cv2
        ModuleNotFoundError: No module named 'cv2'

        Cannot import /x/ComfyUI/comfy_extras/nodes_canny.py module for custom nodes: No module named 'cv2'
        IMPORT FAILED: nodes_canny.py
        """)
    (failure,) = reader.read(log, 0)
    assert failure.distribution == "opencv-contrib-python" and failure.source == "venv"
    assert "installed but cannot be imported: rebuild the venv with `envbuild sync`" in failure.advice


def test_cli_check_on_a_synced_venv_passes_then_fails_with_json(tmp_path: Path, uv_env: dict[str, str]) -> None:
    deployment = make_deployment(tmp_path / "site", manager=None)
    fake_comfyui(deployment)
    node(deployment, "node_ok", "import yaml, torch\nNODE_CLASS_MAPPINGS = {}\n")
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    synced = run_cli(["sync", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert synced.returncode == 0, synced
    passed = run_cli(["check", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert passed.returncode == 0, passed
    assert "cu126: ComfyUI and 1 custom node load" in passed.stdout
    node(deployment, "node_cv", "import cv2\nNODE_CLASS_MAPPINGS = {}\n")
    failed = run_cli(["check", "--profile", "cu126", "--json"], env=uv_env, cwd=deployment.root)
    assert failed.returncode == 1, failed
    data = json.loads(failed.stdout)
    assert data["status"] == "failed" and data["nodes_loaded"] == 1
    assert [(f["owner"], f["distribution"]) for f in data["failures"]] == [("node_cv", "opencv-python-headless")]
    assert data["venv"] == str(deployment.root / ".venv") and os.path.isfile(deployment.root / ".venv" / CHECK_FILE)
    assert f"torch guard: {deployment.locks / 'cu126' / 'constraints.txt'}" in data["log_tail"]
    human = run_cli(["check", "--profile", "cu126"], env=uv_env, cwd=deployment.root)
    assert "FAILED node_cv: module cv2, imported by data/custom_nodes/node_cv/__init__.py:1" in human.stderr
    assert "check failed: 1 problem" in human.stderr


def test_sync_check_runs_the_quick_test_and_doctor_reports_it(tmp_path: Path, uv_env: dict[str, str]) -> None:
    deployment = make_deployment(tmp_path / "site", manager=None)
    fake_comfyui(deployment)
    node(deployment, "node_ok", "import yaml, torch\nNODE_CLASS_MAPPINGS = {}\n")
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=deployment.root).returncode == 0
    synced = run_cli(["sync", "--profile", "cu126", "--check"], env=uv_env, cwd=deployment.root)
    assert synced.returncode == 0, synced
    assert "running ComfyUI's quick test" in synced.stdout and "ComfyUI and 1 custom node load" in synced.stdout
    doctor = run_cli(["doctor", "--profile", "cu126", "--no-import", "--no-probe", "--json"], env=uv_env,
                     cwd=deployment.root)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["ComfyUI check"]["status"] == "pass" and "1 custom node(s) loaded" in checks["ComfyUI check"]["detail"]
    # A node that needs a module the lock lacks: the same sync now fails, naming the distribution.
    node(deployment, "node_cv", "import cv2\nNODE_CLASS_MAPPINGS = {}\n")
    failed = run_cli(["sync", "--profile", "cu126", "--check"], env=uv_env, cwd=deployment.root)
    assert failed.returncode == 1, failed
    assert "add opencv-python-headless to extra-requirements" in failed.stderr
    doctor = run_cli(["doctor", "--profile", "cu126", "--no-import", "--no-probe"], env=uv_env, cwd=deployment.root)
    assert "FAIL  ComfyUI check: last run: failed" in doctor.stdout
