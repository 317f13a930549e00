"""The image never bakes models: it carries their manifest, and its entrypoint fills the models volume at
start (verified by sha256, skipping what is there), or alone as an init container (ENVBUILD_MODELS=only)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envbuild.image import files as imagefiles
from tests.support.deploy import Deployment, run_cli
from tests.support.modelserver import ModelServer, Served
from tests.test_image import _files, _lock, env, site  # noqa: F401 - fixtures

FILL = Path(imagefiles.__file__).parent.parent / "data" / "image" / "fill_models.py"
BODY = os.urandom(300_000)
SHA = hashlib.sha256(BODY).hexdigest()


def fill(manifest: dict[str, object], data: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    path = data.parent / "models.json"
    path.write_text(json.dumps(manifest))
    return subprocess.run([sys.executable, str(FILL)], capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ["PATH"], "ENVBUILD_MODELS_MANIFEST": str(path),
                               "ENVBUILD_DATA": str(data), **extra})


def model(url: str, sha: str = SHA) -> dict[str, object]:
    return {"name": "sd", "url": url, "sha256": sha, "size": len(BODY), "folder": "checkpoints",
            "filename": "sd.safetensors"}


@pytest.mark.cli
def test_fill_models_downloads_verifies_resumes_and_skips(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ModelServer() as server:
        url = server.add("/sd.safetensors", Served(BODY, drop_after=100_000, drops=1))
        first = fill({"models": [model(url)]}, data)
        assert first.returncode == 0, first.stderr
        assert (data / "models" / "checkpoints" / "sd.safetensors").read_bytes() == BODY
        assert server.sent["/sd.safetensors"] == len(BODY)  # resumed: nothing sent twice
        again = fill({"models": [model(url)]}, data)
        assert "present" in again.stdout and server.sent["/sd.safetensors"] == len(BODY)


@pytest.mark.cli
def test_fill_models_refuses_other_bytes_and_escaping_names(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ModelServer() as server:
        url = server.add("/sd.safetensors", Served(BODY, tamper=True))
        bad = fill({"models": [model(url)]}, data)
    assert bad.returncode == 1 and SHA in bad.stderr
    assert not (data / "models" / "checkpoints" / "sd.safetensors").exists()
    escaping = fill({"models": [dict(model(url), folder="../../etc")]}, data)
    assert escaping.returncode == 2 and "refused" in escaping.stderr


def test_entrypoint_fills_before_comfyui_and_can_run_alone() -> None:
    text = imagefiles.entrypoint(8188, models=True)
    assert text.index("fill_models.py") < text.index("main.py")
    assert "ENVBUILD_MODELS:-fill}\" = only ]; then exit 0" in text
    assert "fill_models" not in imagefiles.entrypoint(8188)


def test_image_context_carries_the_manifest_not_the_model(
    site: Deployment, env: dict[str, str],  # noqa: F811 - fixtures
) -> None:
    with (site.root / "envbuild.toml").open("a", encoding="utf-8") as out:
        out.write(f'\n[models.sd]\nurl = "https://huggingface.co/o/r/resolve/main/sd.safetensors"\n'
                  f'sha256 = "{SHA}"\nsize = {len(BODY)}\nfolder = "checkpoints"\n')
    _lock(site, env)
    result = run_cli(["image", "--profile", "cu126", "-o", "ctx"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    files = _files(site.root / "ctx")
    manifest = json.loads(files["envbuild/models.json"])
    assert manifest["models"][0]["sha256"] == SHA and manifest["models"][0]["folder"] == "checkpoints"
    assert "envbuild/fill_models.py" in files and "fill_models.py" in files["envbuild/entrypoint.sh"].decode()
    assert not [n for n in files if n.endswith(".safetensors")]
