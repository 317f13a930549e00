"""ComfyUI-Manager snapshots in and out, and Comfy Registry nodes from a loopback registry."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from envbuild.comfy.snapshots import read_snapshot
from tests.support.deploy import Deployment, make_deployment, run_cli
from tests.support.gitrepos import commit_files, file_url, git, git_env, make_repo
from tests.support.httpserver import QuietHTTPServer

DATA = Path(__file__).parent / "data"


class Registry:
    """A Comfy Registry on loopback: `/nodes/<id>/install?version=<v>` and the archives it points at."""

    def __init__(self) -> None:
        self.archives: dict[tuple[str, str], bytes] = {}
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if len(parts) == 3 and parts[0] == "nodes" and parts[2] == "install":
                    version = parse_qs(url.query).get("version", [""])[0]
                    if (parts[1], version) not in registry.archives:
                        return self._send(404, b"{}")
                    body = {"id": parts[1], "version": version,
                            "downloadUrl": f"{registry.url}/files/{parts[1]}-{version}.zip"}
                    return self._send(200, json.dumps(body).encode())
                if len(parts) == 2 and parts[0] == "nodes":  # the node's page: its latest version
                    versions = sorted(v for n, v in registry.archives if n == parts[1])
                    if not versions:
                        return self._send(404, b"{}")
                    body = {"id": parts[1], "latest_version": {"version": versions[-1]}}
                    return self._send(200, json.dumps(body).encode())
                if len(parts) == 2 and parts[0] == "files":
                    for (node_id, version), data in registry.archives.items():
                        if parts[1] == f"{node_id}-{version}.zip":
                            return self._send(200, data)
                return self._send(404, b"")

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def publish(self, node_id: str, version: str, requirements: str, *, extra: str = "") -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("__init__.py", f"NODE_CLASS_MAPPINGS = {{}}\n{extra}")
            archive.writestr("requirements.txt", requirements)
            archive.writestr("pyproject.toml", f'[project]\nname = "{node_id}"\nversion = "{version}"\n')
        self.archives[(node_id, version)] = buffer.getvalue()
        return buffer.getvalue()


@pytest.fixture
def registry() -> Iterator[Registry]:
    served = Registry()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site", profiles=("cu126",))


@pytest.fixture
def env(uv_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return git_env(uv_env) | {"ENVBUILD_CACHE_DIR": str(tmp_path / "envbuild-cache")}


def test_the_managers_json_and_yaml_snapshots_read_alike() -> None:
    """Both files were written by the Manager's own code path (`json.dump(indent=4)`, and `yaml.dump` of
    `{"custom_nodes": snapshot}`)."""
    from_json, from_yaml = read_snapshot(DATA / "manager-snapshot.json"), read_snapshot(DATA / "manager-snapshot.yaml")
    assert from_json == from_yaml
    assert from_json.comfyui == "1f3c8a3f5e0c4b9e8d7a6b5c4d3e2f1a0b9c8d7e"
    assert [(p.name, p.commit, p.disabled) for p in sorted(from_json.pins)] == [
        ("ComfyUI-KJNodes", "3a5b7c9d1e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b", False),
        ("ComfyUI_essentials", "fedcba9876543210fedcba9876543210fedcba98", True),
    ]
    assert dict(from_json.registry) == {"comfyui-impact-pack": "8.8.1"}
    assert from_json.files == ("my_node.py",)
    assert len(from_json.pips) == 3
    assert any("the Manager" in s for s in from_json.skipped)


def test_import_sets_the_comfyui_ref_and_reports_what_it_does_not_take(deployment: Deployment,
                                                                       env: dict[str, str]) -> None:
    toml = deployment.root / "envbuild.toml"
    toml.write_text(toml.read_text().replace('path = "ComfyUI"', 'path = "ComfyUI"\ngit = "https://example.invalid/'
                                                                   'ComfyUI"\nref = "v0.3.40"'))
    result = run_cli(["node", "import", str(DATA / "manager-snapshot.yaml")], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    text = toml.read_text()
    assert 'ref = "1f3c8a3f5e0c4b9e8d7a6b5c4d3e2f1a0b9c8d7e"' in text
    assert "[custom-nodes.ComfyUI-KJNodes]" in text and "[custom-nodes.comfyui-impact-pack]" in text
    assert "disabled = true" in text
    assert "not imported: single-file node my_node.py" in result.stderr, result
    assert "not imported: https://github.com/ltdrdata/ComfyUI-Manager (the Manager" in result.stderr, result
    assert "3 installed package(s) listed under `pips` were not taken" in result.stdout, result


def test_snapshot_in_fetch_lock_and_snapshot_out_with_a_registry_node(
    deployment: Deployment, env: dict[str, str], registry: Registry, tmp_path: Path
) -> None:
    repo = tmp_path / "upstream" / "ComfyUI-Good"
    first = make_repo(repo, {"__init__.py": "", "requirements.txt": "einops\n"})
    commit_files(repo, {"requirements.txt": "einops\nsix\n"}, "needs six")  # the snapshot pins the first
    archive = registry.publish("comfyui-reg", "1.2.0", "pyyaml\n")
    snapshot = {"comfyui": None, "git_custom_nodes": {file_url(repo): {"hash": first, "disabled": False}},
                "cnr_custom_nodes": {"comfyui-reg": "1.2.0"}, "file_custom_nodes": [], "pips": {"six==1.0": ""}}
    (tmp_path / "snap.json").write_text(json.dumps(snapshot, indent=4))
    toml = deployment.root / "envbuild.toml"
    toml.write_text(toml.read_text() + f'\n[nodes]\nregistry = "{registry.url}"\n')
    assert run_cli(["node", "import", str(tmp_path / "snap.json")], env=env, cwd=deployment.root).returncode == 0
    result = run_cli(["fetch"], env=env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert git(deployment.nodes / "ComfyUI-Good", "rev-parse", "HEAD") == first
    installed = deployment.nodes / "comfyui-reg"
    assert (installed / "requirements.txt").read_text() == "pyyaml\n"
    assert (installed / ".tracking").is_file()  # the Manager recognises a registry install by it
    digest = hashlib.sha256(archive).hexdigest()
    assert f'sha256 = "{digest}"' in toml.read_text()  # recorded at the first fetch
    assert run_cli(["lock", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    assert run_cli(["lock", "--check"], env=env, cwd=deployment.root).returncode == 0
    again = run_cli(["fetch"], env=env, cwd=deployment.root)
    assert again.returncode == 0 and "comfyui-reg: data/custom_nodes/comfyui-reg already at" in again.stdout, again
    # --force never re-extracts a node already at its pin: what the user put in it stays.
    (installed / "my_settings.json").write_text("{}")
    forced = run_cli(["fetch", "--force"], env=env, cwd=deployment.root)
    assert forced.returncode == 0 and (installed / "my_settings.json").is_file(), forced
    # The same version re-published with other bytes: refused, named, nothing installed.
    registry.publish("comfyui-reg", "1.2.0", "pyyaml\n", extra="# changed\n")
    shutil.rmtree(installed)
    result = run_cli(["fetch"], env=env, cwd=deployment.root)
    assert result.returncode == 8, result
    assert f"but the pin records {digest}" in result.stderr, result
    assert not installed.exists()
    # Out again, as the Manager restores it.
    exported = tmp_path / "out.json"
    assert run_cli(["node", "export", "--manager-snapshot", str(exported)], env=env,
                   cwd=deployment.root).returncode == 0
    written = json.loads(exported.read_text())
    assert written == {"comfyui": None, "git_custom_nodes": {file_url(repo): {"hash": first, "disabled": False}},
                       "cnr_custom_nodes": {"comfyui-reg": "1.2.0"}, "file_custom_nodes": [], "pips": {}}
    yaml_out = tmp_path / "out.yaml"
    assert run_cli(["node", "export", "--manager-snapshot", str(yaml_out)], env=env,
                   cwd=deployment.root).returncode == 0
    assert read_snapshot(yaml_out) == read_snapshot(exported)


def test_a_registry_archive_reaching_outside_its_folder_is_refused(registry: Registry, tmp_path: Path) -> None:
    from envbuild.comfy.registry import RegistryError, fetch_registry_node
    from envbuild.settings.pins import NodePin

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("__init__.py", "")
        archive.writestr("../../escaped.py", "print('outside')\n")
    registry.archives[("evil-node", "1.0.0")] = buffer.getvalue()
    pin = NodePin("evil-node", "", "", "1.0.0", False, "1.0.0")
    custom_nodes = tmp_path / "custom_nodes"
    with pytest.raises(RegistryError, match="a path outside its folder"):
        fetch_registry_node(pin, custom_nodes / "evil-node", base=registry.url)
    assert not (tmp_path / "escaped.py").exists() and not (custom_nodes / "evil-node").exists()
    missing = pin._replace(name="no-such-node")
    with pytest.raises(RegistryError, match="answered HTTP 404"):
        fetch_registry_node(missing, custom_nodes / "no-such-node", base=registry.url)


def _archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(("members", "message"), [
    ({"__init__.py": b"", ".git/config": b"[core]\n\tfsmonitor = touch /tmp/pwned\n"}, "version-control data"),
    ({"__init__.py": b"", "x": b"a file", "x/y.py": b"inside it"}, "both a file 'x' and a path inside it"),
    ({"__init__.py": b"", "Readme.md": b"1", "README.md": b"2"}, "differ only in case"),
])
def test_a_registry_archive_envbuild_cannot_unpack_safely_is_refused_whole(
        registry: Registry, tmp_path: Path, members: dict[str, bytes], message: str) -> None:
    """Trust, round two, class 3: the .git/config case ran its fsmonitor command on `node remove`."""
    from envbuild.comfy.registry import RegistryError, fetch_registry_node
    from envbuild.settings.pins import NodePin

    registry.archives[("odd-node", "1.0.0")] = _archive(members)
    pin = NodePin("odd-node", "", "", "1.0.0", False, "1.0.0")
    with pytest.raises(RegistryError, match=message):
        fetch_registry_node(pin, tmp_path / "custom_nodes" / "odd-node", base=registry.url)
    assert not (tmp_path / "custom_nodes" / "odd-node").exists()
    custom_nodes = tmp_path / "custom_nodes"
    assert not custom_nodes.exists() or list(custom_nodes.iterdir()) == []  # no scratch folder left either


def test_a_registry_archive_inflating_past_the_limit_is_refused_before_writing(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3 MB zip inflating to 3 GiB filled the disk (exit 70); the limit is scaled down here."""
    from envbuild.comfy import registry as module
    from envbuild.settings.pins import NodePin

    monkeypatch.setattr(module, "INFLATED_LIMIT", 1024 * 1024)
    bomb = _archive({"__init__.py": b"", "weights.bin": b"\0" * (4 * 1024 * 1024)})
    assert len(bomb) < 64 * 1024
    registry.archives[("bomb-node", "1.0.0")] = bomb
    pin = NodePin("bomb-node", "", "", "1.0.0", False, "1.0.0")
    with pytest.raises(module.RegistryError, match="inflates to more than 1 MiB"):
        module.fetch_registry_node(pin, tmp_path / "custom_nodes" / "bomb-node", base=registry.url)
    assert not (tmp_path / "custom_nodes" / "bomb-node").exists()


def test_node_add_of_a_registry_id_pins_its_archive_hash_and_locks(
        registry: Registry, deployment: Deployment, env: dict[str, str]) -> None:
    """Issue: `node add ID[@VERSION]` adds a Comfy Registry node (archive hash pinned, as `node import` does)."""
    archive = registry.publish("comfyui-reg", "1.2.0", "pyyaml\n")
    registry.publish("comfyui-reg", "1.1.0", "six\n")
    toml = deployment.root / "envbuild.toml"
    toml.write_text(toml.read_text() + f'\n[nodes]\nregistry = "{registry.url}"\n')
    added = run_cli(["node", "add", "comfyui-reg"], env=env, cwd=deployment.root)  # the latest: 1.2.0
    assert added.returncode == 0, added
    assert "node comfyui-reg: added from the Comfy Registry at 1.2.0" in added.stdout
    digest = hashlib.sha256(archive).hexdigest()
    text = toml.read_text()
    assert '[custom-nodes.comfyui-reg]' in text and 'version = "1.2.0"' in text and f'sha256 = "{digest}"' in text
    assert (deployment.nodes / "comfyui-reg" / "requirements.txt").read_text() == "pyyaml\n"
    assert 'name = "pyyaml"' in (deployment.locks / "cu126" / "uv.lock").read_text()
    assert run_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=deployment.root).returncode == 0
    again = run_cli(["node", "add", "comfyui-reg@1.1.0"], env=env, cwd=deployment.root)
    assert again.returncode == 2 and "pinned already" in again.stderr, again
    missing = run_cli(["node", "add", "no-such-node"], env=env, cwd=deployment.root)
    assert missing.returncode != 0 and "no-such-node" in missing.stderr and "check the id" in missing.stderr
