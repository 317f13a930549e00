"""The real ComfyUI + ComfyUI-Manager requirement files, locked against the real PyPI.

Only the torch family comes from the loopback index (download.pytorch.org is out of reach here,
and real torch wheels are gigabytes); everything else is resolved by uv from PyPI itself.
Deselect with `-m "not network"`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.support.deploy import locked_versions, make_deployment, run_cli

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.network


def test_real_comfyui_and_manager_lock_against_pypi(tmp_path: Path, uv_env: dict[str, str], index_server) -> None:
    # requires-python from this interpreter's minor: uv locks with it (CI runs 3.10 and 3.11)
    site = make_deployment(tmp_path / "site", requirements=(FIXTURES / "comfyui" / "requirements.txt").read_text(),
                           profiles=("cu126",), requires_python=f">=3.{sys.version_info.minor},<3.13")
    shutil.copyfile(FIXTURES / "manager" / "requirements.txt", site.nodes / "comfyui-manager" / "requirements.txt")
    env = dict(uv_env)
    del env["UV_DEFAULT_INDEX"]  # the real PyPI for everything but the torch family
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root, timeout=600)
    assert result.returncode == 0, result
    versions = locked_versions(site.locks / "cu126" / "uv.lock")
    assert len(versions) > 100
    assert versions["torch"] == ("2.7.1+cu126", f"{index_server.pytorch_base}/cu126")
    assert versions["transformers"][1] == "https://pypi.org/simple"
    # The Manager's huggingface-hub pin holds, and pip is there for the Manager to shell out to.
    assert versions["huggingface-hub"][0] == "0.36.0"
    assert "pip" in versions
    lock_text = (site.locks / "cu126" / "uv.lock").read_text()
    assert lock_text.count("hash = \"sha256:") > 300
    # Offline, with the index gone from reach, the lock is still judged current without uv.
    again = run_cli(["lock", "--profile", "cu126"], env=dict(env, ENVBUILD_UV="/nonexistent"), cwd=site.root)
    assert again.returncode == 0 and "current" in again.stdout and "uv not run" in again.stdout
