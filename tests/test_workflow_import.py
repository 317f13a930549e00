"""`envbuild workflow import`: the UI JSON, the API JSON, a PNG and a WebP ComfyUI saved, bounded reads."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from envbuild.comfy.workflow import MAX_NODES, MAX_TEXT, WorkflowError, read_workflow
from envbuild.settings.config import load_config
from tests.support.deploy import invoke_cli
from tests.support.modelserver import ModelServer, Served
from tests.test_models import env_for, make_project

pytestmark = pytest.mark.cli
COMMIT = "a" * 40
BODY = os.urandom(200_000)
SHA = hashlib.sha256(BODY).hexdigest()


def ui_workflow(model_url: str, *, with_hash: bool = False) -> dict[str, object]:
    model = {"name": "ae.safetensors", "url": model_url, "directory": "vae"}
    if with_hash:
        model |= {"hash": SHA, "hash_type": "SHA256"}
    return {
        "last_node_id": 4, "version": 0.4,
        "nodes": [
            {"id": 1, "type": "KSampler", "properties": {"cnr_id": "comfy-core", "ver": "0.3.40"}},
            {"id": 2, "type": "VHS_VideoCombine", "properties": {"cnr_id": "comfyui-videohelpersuite", "ver": "1.6.1"}},
            {"id": 3, "type": "MysteryNode", "properties": {"aux_id": "someone/ComfyUI-Mystery", "ver": COMMIT}},
            {"id": 4, "type": "Unknowable", "properties": {}},
            {"id": 5, "type": "VAELoader", "properties": {"cnr_id": "comfy-core", "models": [model]},
             "widgets_values": ["ae.safetensors"]},
        ],
        "models": [model],
    }


def png_with(chunks: list[tuple[bytes, bytes]]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0\0")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + b"".join(chunk(k, d) for k, d in chunks)
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_ui_json_pins_registry_and_git_nodes_and_models(tmp_path: Path) -> None:
    with ModelServer() as server:
        url = server.add("/vae/ae.safetensors", Served(BODY))
        project = make_project(tmp_path / "p")
        (project / "wf.json").write_text(json.dumps(ui_workflow(url)))
        result = invoke_cli(["workflow", "import", "wf.json"], env=env_for(tmp_path), cwd=project)
    assert result.returncode == 0, result.stderr
    config = load_config(project)
    pins = {p.name: p for p in config.node_pins}
    assert set(pins) == {"comfyui-videohelpersuite", "ComfyUI-Mystery"}  # comfy-core never
    assert pins["comfyui-videohelpersuite"].version == "1.6.1"
    assert (pins["ComfyUI-Mystery"].url, pins["ComfyUI-Mystery"].commit) == \
        ("https://github.com/someone/ComfyUI-Mystery", COMMIT)
    model = config.models.pins[0]  # type: ignore[union-attr]
    assert (model.folder, model.filename, model.sha256, model.size) == ("vae", "ae.safetensors", SHA, len(BODY))
    assert "computed from the bytes" in result.stdout
    assert (project / "ComfyUI" / "models" / "vae" / "ae.safetensors").read_bytes() == BODY
    assert "Unknowable" in result.stderr and "KSampler" not in result.stderr.split("provides:")[-1]


def test_a_workflow_hash_is_enforced(tmp_path: Path) -> None:
    with ModelServer() as server:
        url = server.add("/ae.safetensors", Served(BODY, tamper=True))
        project = make_project(tmp_path / "p")
        (project / "wf.json").write_text(json.dumps(ui_workflow(url, with_hash=True)))
        result = invoke_cli(["workflow", "import", "wf.json"], env=env_for(tmp_path), cwd=project)
    assert "not pinned: model ae.safetensors" in result.stderr and SHA in result.stderr
    assert load_config(project).models is None
    assert not (project / "ComfyUI" / "models" / "vae" / "ae.safetensors").exists()


def test_api_json_lists_types_and_unpinnable_files(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    api = {"3": {"class_type": "KSampler", "inputs": {"seed": 1}},
           "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}}}
    (project / "api.json").write_text(json.dumps(api))
    result = invoke_cli(["workflow", "import", "api.json"], env=env_for(tmp_path), cwd=project)
    assert result.returncode == 0, result.stderr
    assert "API workflow, 2 node(s)" in result.stdout
    assert "sd15.safetensors" in result.stderr and "gives no URL" in result.stderr


def test_png_text_and_ztxt_chunks_are_read(tmp_path: Path) -> None:
    flow = json.dumps(ui_workflow("https://example.org/ae.safetensors")).encode()
    path = tmp_path / "out.png"
    path.write_bytes(png_with([(b"tEXt", b"prompt\0{}"), (b"zTXt", b"workflow\0\0" + zlib.compress(flow))]))
    found = read_workflow(path)
    assert found.kind == "ui" and "VHS_VideoCombine" in found.node_types()
    path.write_bytes(png_with([(b"iTXt", b"workflow\0\0\0\0\0" + flow)]))
    assert read_workflow(path).models[0].directory == "vae"


def test_a_ztxt_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    bomb = zlib.compress(b"\0" * (MAX_TEXT + 1024 * 1024), 9)  # ~33 KB inflating past the cap
    path = tmp_path / "bomb.png"
    path.write_bytes(png_with([(b"zTXt", b"workflow\0\0" + bomb)]))
    with pytest.raises(WorkflowError, match="inflates to more than"):
        read_workflow(path)


def test_thousands_of_nodes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"nodes": [{"type": "X"}] * (MAX_NODES + 1)}))
    with pytest.raises(WorkflowError, match="more than 10,000 nodes"):
        read_workflow(path)


def test_webp_exif_workflow_is_read(tmp_path: Path) -> None:
    flow = json.dumps(ui_workflow("https://example.org/ae.safetensors")).encode()
    exif = b"Exif\0\0MM\0*" + b"\0" * 8 + b"workflow:" + flow + b"\0"
    body = b"WEBP" + b"VP8L" + struct.pack("<I", 2) + b"\0\0" + b"EXIF" + struct.pack("<I", len(exif)) + exif
    body += b"\0" * (len(exif) & 1)
    path = tmp_path / "out.webp"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert read_workflow(path).kind == "ui"


def test_not_a_workflow_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(WorkflowError, match="not a ComfyUI workflow"):
        read_workflow(path)
    path.write_bytes(png_with([]))
    with pytest.raises(WorkflowError, match="without a ComfyUI workflow"):
        read_workflow(path)


def test_subgraph_nodes_count_and_types_found_in_code_are_not_listed(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    (project / "ComfyUI" / "nodes.py").write_text('NODE_CLASS_MAPPINGS = {"Unknowable": object}\n')
    flow = {"nodes": [{"type": "Unknowable"}],
            "definitions": {"subgraphs": [{"nodes": [{"type": "Inner", "properties": {}}]}]}}
    (project / "wf.json").write_text(json.dumps(flow))
    result = invoke_cli(["workflow", "import", "wf.json"], env=env_for(tmp_path), cwd=project)
    assert result.returncode == 0, result.stderr
    assert "provides: Inner" in result.stderr and "Unknowable" not in result.stderr
