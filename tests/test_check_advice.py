"""`envbuild check` on what real nodes hit (issue 24, point 1): a module of ComfyUI itself that the
checkout lacks, a node's own module its install step would have brought, a node on the newer node
API (`comfy_entrypoint`), and a node counted once though it also has a prestartup script.

The fake ComfyUI logs what Comfy-Org/ComfyUI master does (read 2026-12-06): main.py's
`Prestartup times for custom nodes:` block, nodes.py's `load_custom_node` (`Cannot import ...`,
`Error while calling comfy_entrypoint in ...: ...`) and `Import times for custom nodes:` block.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from envbuild.env.check import LogReader
from envbuild.settings.config import load_config
from tests.support.deploy import Deployment, invoke_cli, make_deployment, run_cli
from tests.test_smoke import node, plain_venv

FAKE_MAIN = '''\
import argparse, importlib.util, logging, os, sys, time, traceback

parser = argparse.ArgumentParser()
parser.add_argument("--cpu", action="store_true")
parser.add_argument("--quick-test-for-ci", action="store_true")
parser.add_argument("--base-directory")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(message)s")
here = os.path.dirname(os.path.realpath(__file__))
base = os.path.abspath(args.base_directory) if args.base_directory else here
sys.path.insert(0, here)
folder = os.path.join(base, "custom_nodes")
names = [n for n in sorted(os.listdir(folder)) if n != "__pycache__" and not n.endswith(".disabled")]

times = []
for name in names:
    script = os.path.join(folder, name, "prestartup_script.py")
    if os.path.isfile(script):
        times.append((0.0, os.path.join(folder, name), True))
if times:
    logging.info("\\nPrestartup times for custom nodes:")
    for t, path, ok in sorted(times):
        logging.info("{:6.1f} seconds{}: {}".format(t, "" if ok else " (PRESTARTUP FAILED)", path))
    logging.info("")


def load_custom_node(module_path):
    try:
        name = module_path.replace(".", "_x_")
        spec = importlib.util.spec_from_file_location(name, os.path.join(module_path, "__init__.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if getattr(module, "NODE_CLASS_MAPPINGS", None) is not None:
            return True
        elif hasattr(module, "comfy_entrypoint"):
            try:
                module.comfy_entrypoint()
                return True
            except Exception as e:
                logging.warning(f"Error while calling comfy_entrypoint in {module_path}: {e}")
                return False
        logging.warning(f"Skip {module_path} module for custom nodes due to the lack of NODE_CLASS_MAPPINGS or comfy_entrypoint (need one).")
        return False
    except Exception as e:
        logging.warning(traceback.format_exc())
        logging.warning(f"Cannot import {module_path} module for custom nodes: {e}")
        return False


times = []
for name in names:
    path = os.path.join(folder, name)
    times.append((0.0, path, load_custom_node(path)))
logging.info("\\nImport times for custom nodes:")
for t, path, ok in sorted(times):
    logging.info("{:6.1f} seconds{}: {}".format(t, "" if ok else " (IMPORT FAILED)", path))
logging.info("")
exit(0)
'''


@pytest.fixture
def site(tmp_path: Path) -> Deployment:
    """ComfyUI 0.3.64 (comfy/ldm without lightricks, no comfy_api) and five nodes."""
    made = make_deployment(tmp_path / "site", manager=None)
    (made.comfyui / "main.py").write_text(FAKE_MAIN)
    (made.comfyui / "comfyui_version.py").write_text('# generated\n__version__ = "0.3.64"\n')
    for package in ("comfy", "comfy/ldm"):
        (made.comfyui / package).mkdir()
        (made.comfyui / package / "__init__.py").write_text("")
    node(made, "node_ok", "import yaml\nNODE_CLASS_MAPPINGS = {}\n", **{"prestartup_script.py": "pass\n"})
    node(made, "ComfyUI-LTXVideo", "import comfy.ldm.lightricks.av_model\nNODE_CLASS_MAPPINGS = {}\n",
         **{"pyproject.toml": '[project]\nname = "ltxvideo"\n[tool.comfy]\nrequires-comfyui = ">=0.3.68"\n'})
    impact = node(made, "ComfyUI-Impact-Pack", """\
        import os, sys
        sys.path.append(os.path.join(os.path.dirname(__file__), "modules"))
        import impact.core
        import impact.subpack_nodes
        NODE_CLASS_MAPPINGS = {}
        """, **{"install.py": "import subprocess\n"})
    (impact / "modules" / "impact").mkdir(parents=True)
    (impact / "modules" / "impact" / "__init__.py").write_text("")
    (impact / "modules" / "impact" / "core.py").write_text("")
    upscale = node(made, "ComfyUI_UltimateSDUpscale", "from .repositories.ultimate_sdup.usdu import x\n"
                   "NODE_CLASS_MAPPINGS = {}\n",
                   **{".gitmodules": '[submodule "usdu"]\n\tpath = repositories/ultimate_sdup\n'})
    (upscale / "repositories" / "ultimate_sdup").mkdir(parents=True)  # the submodule, not fetched
    node(made, "v3_node", """\
        def comfy_entrypoint():
            from comfy_api.latest import ComfyExtension
        """)
    return made


def test_check_names_comfyui_and_the_nodes_own_code_never_a_pypi_distribution(
    site: Deployment, tmp_path: Path, uv_env: dict[str, str]
) -> None:
    venv = plain_venv(tmp_path, {"PyYAML": {"yaml/__init__.py": ""}})
    locked = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert locked.returncode == 0, locked
    env = uv_env
    result = invoke_cli(["check", "--profile", "cu126", "--venv", str(venv), "--json"], env=env, cwd=site.root)
    assert result.returncode == 1, result
    data = json.loads(result.stdout)
    assert data["nodes_loaded"] == 1  # node_ok, listed in both blocks, counted once
    advice = {f["owner"]: f["advice"] for f in data["failures"]}
    sources = {f["owner"]: (f["source"], f["distribution"]) for f in data["failures"]}
    assert advice == {
        "ComfyUI-LTXVideo": (
            "module comfy.ldm.lightricks, imported by data/custom_nodes/ComfyUI-LTXVideo/__init__.py:1 of "
            "ComfyUI-LTXVideo, is ComfyUI's own and missing from this ComfyUI (0.3.64): the node needs a newer "
            "ComfyUI (ComfyUI >=0.3.68, says its pyproject.toml [tool.comfy] requires-comfyui); set [comfyui] "
            "ref to a newer release, or pin the node to an older commit (no distribution on PyPI provides it)"),
        "ComfyUI-Impact-Pack": (
            "module impact.subpack_nodes, imported by data/custom_nodes/ComfyUI-Impact-Pack/__init__.py:4 of "
            "ComfyUI-Impact-Pack, is the node's own code (data/custom_nodes/ComfyUI-Impact-Pack/modules/impact/"
            "subpack_nodes is missing or empty): the node's install step did not run (its install.py); envbuild "
            "never runs it, so bring that part in as the node's README says (no distribution on PyPI provides it)"),
        "ComfyUI_UltimateSDUpscale": (
            "module repositories.ultimate_sdup.usdu, imported by data/custom_nodes/ComfyUI_UltimateSDUpscale/"
            "__init__.py:1 of ComfyUI_UltimateSDUpscale, is the node's own code (data/custom_nodes/"
            "ComfyUI_UltimateSDUpscale/repositories/ultimate_sdup/usdu is missing or empty): the node's install "
            "step did not run (a git submodule in its .gitmodules); envbuild never runs it, so bring that part "
            "in as the node's README says (no distribution on PyPI provides it)"),
        "v3_node": (
            "module comfy_api, imported by data/custom_nodes/v3_node of v3_node, is ComfyUI's own and "
            "missing from this ComfyUI (0.3.64): the node needs a newer ComfyUI; set [comfyui] ref to a newer "
            "release, or pin the node to an older commit (no distribution on PyPI provides it)"),
    }
    assert set(sources.values()) == {("comfyui", None), ("node", None)}
    human = invoke_cli(["check", "--profile", "cu126", "--venv", str(venv)], env=env, cwd=site.root)
    assert "probably" not in human.output and "FAILED v3_node: module comfy_api," in human.stderr
    assert "check failed: 4 problems (1 custom node loaded;" in human.stderr


def test_a_missing_third_party_module_still_names_its_distribution(tmp_path: Path) -> None:
    site = make_deployment(tmp_path / "site", manager=None)
    node(site, "node_x", "NODE_CLASS_MAPPINGS = {}\n", **{"comfy_helpers.py": ""})
    reader = LogReader(load_config(site.root), tmp_path / "no-venv")
    path = site.nodes / "node_x"
    log = textwrap.dedent(f"""\
        Error while calling comfy_entrypoint in {path}: No module named 'mystery_tool'
        comfy_entrypoint in {site.nodes / "node_y"} did not return a ComfyExtension, skipping.

        Import times for custom nodes:
           0.0 seconds (IMPORT FAILED): {path}
           0.0 seconds (IMPORT FAILED): {site.nodes / "node_y"}

        """)
    first, second = reader.read(log, 0)
    assert (first.owner, first.source, first.distribution) == ("node_x", "guess", "mystery-tool")
    assert first.advice == ("module mystery_tool, imported by data/custom_nodes/node_x of node_x, is not in the "
                            "lock: add the distribution that provides it (probably mystery-tool) to "
                            "extra-requirements (or to the node's requirements)")
    assert (second.owner, second.error) == ("node_y", "comfy_entrypoint did not return a ComfyExtension")
