"""Done when: a deployment with pinned models and an imported workflow is restored on a second machine (a
fresh copy of the repository, another user cache) by `fetch` + `sync`, every model verified; a server that
changed the bytes is refused. Real processes, the real uv, the loopback index and model server."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from tests.support.deploy import make_deployment, run_cli
from tests.support.modelserver import ModelServer, Served

BODY = os.urandom(1_500_000)
LORA = os.urandom(700_000)


def test_a_fresh_clone_restores_models_and_packages(tmp_path: Path, uv_env: dict[str, str]) -> None:
    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    with ModelServer() as server:
        ckpt = server.add("/split_files/checkpoints/base.safetensors", Served(BODY))
        lora = server.add("/detail.safetensors", Served(LORA))
        workflow = {"nodes": [{"id": 1, "type": "LoraLoader", "properties": {"cnr_id": "comfy-core", "ver": "0.3.40"}}],
                    "models": [{"name": "detail.safetensors", "url": lora, "directory": "loras",
                                "hash": hashlib.sha256(LORA).hexdigest(), "hash_type": "SHA256"}]}
        (site.root / "wf.json").write_text(json.dumps(workflow))
        first = dict(uv_env, ENVBUILD_CACHE_DIR=str(tmp_path / "machine-1"))
        for args in (["model", "add", ckpt], ["workflow", "import", "wf.json"], ["lock", "--profile", "cu126"]):
            result = run_cli(args, env=first, cwd=site.root)
            assert result.returncode == 0, result

        # The second machine: the repository (envbuild.toml, locks/, the checkout) without models or venv.
        clone = tmp_path / "clone"
        shutil.copytree(site.root, clone, ignore=shutil.ignore_patterns("models", ".venv", ".envbuild*"))
        second = dict(uv_env, ENVBUILD_CACHE_DIR=str(tmp_path / "machine-2"))
        fetched = run_cli(["fetch"], env=second, cwd=clone)
        assert fetched.returncode == 0, fetched
        synced = run_cli(["sync", "--profile", "cu126"], env=second, cwd=clone)
        assert synced.returncode == 0, synced
        verified = run_cli(["model", "verify"], env=second, cwd=clone)
        assert verified.returncode == 0 and verified.stdout.count(": ok") == 2, verified
        models = clone / "data" / "models"  # under [comfyui] base-directory, as ComfyUI puts them
        assert (models / "checkpoints" / "base.safetensors").read_bytes() == BODY
        assert (models / "loras" / "detail.safetensors").read_bytes() == LORA

        # A third machine, and the server now sends other bytes for the checkpoint: refused, nothing placed.
        server.files["/split_files/checkpoints/base.safetensors"] = Served(BODY, tamper=True)
        third = tmp_path / "third"
        shutil.copytree(site.root, third, ignore=shutil.ignore_patterns("models", ".venv", ".envbuild*"))
        refused = run_cli(["fetch"], env=dict(uv_env, ENVBUILD_CACHE_DIR=str(tmp_path / "machine-3")), cwd=third)
    assert refused.returncode == 7 and hashlib.sha256(BODY).hexdigest() in refused.stderr, refused
    assert not (third / "data" / "models" / "checkpoints" / "base.safetensors").exists()
    assert (third / "data" / "models" / "loras" / "detail.safetensors").read_bytes() == LORA
