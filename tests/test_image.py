"""`envbuild image`: the build context from a committed lock, and (marked `container`) a real build.

The context tests need no container engine: they prove what the context holds — the trusted lock,
the sources, the nodes, an entrypoint with the torch guard — and what it never holds (this
machine's paths, credentials, caches). The container tests build with podman against the loopback
index, run the image, and prove that a node change leaves the torch layer alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from envbuild.pkgs.uvlock import first_locked_version
from tests.support.container import CA_BUNDLE, Podman, Unavailable, setup_podman
from tests.support.deploy import Deployment, make_deployment, run_cli

SECRET = "s3cr3t-token-value"
FAKE_MAIN = """\
import os, sys
import torch
print("fake ComfyUI", torch.__version__, "args:", " ".join(sys.argv[1:]))
print("python:", sys.executable, "uid:", os.getuid())
with open(os.environ["PIP_CONSTRAINT"]) as handle:
    print("guard:", [line for line in handle.read().splitlines() if line.startswith("torch==")])
print("nodes:", sorted(os.listdir("/opt/comfyui/custom_nodes")))
os.makedirs("/data/output", exist_ok=True)
open("/data/output/written", "w").close()
"""


SCAN = f"""\
import os
found = [os.path.join(d, f) for top in ("/opt", "/etc", "/home", "/run", "/var/cache", "/root", "/tmp")
         for d, _, files in os.walk(top) for f in files if not os.path.islink(os.path.join(d, f))
         and b"{SECRET}" in open(os.path.join(d, f), "rb").read()]
print(*(found or ["clean"]))
print(*[f"left:{{p}}" for p in ("/usr/local/bin/uv", "/run/secrets/ca", "/var/cache/envbuild-uv") if os.path.exists(p)])
"""


@pytest.fixture
def env(uv_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return dict(uv_env, ENVBUILD_CACHE_DIR=str(tmp_path / "envbuild-cache"), UV_INDEX_TEAM_PASSWORD=SECRET)


@pytest.fixture
def site(tmp_path: Path) -> Deployment:
    deployment = make_deployment(tmp_path / "site", profiles=("cu126",))
    (deployment.comfyui / "main.py").write_text(FAKE_MAIN, encoding="utf-8")
    node = deployment.add_node("comfy-foo", "einops\n")
    deployment.add_node("comfy-old.disabled", "einops\n")
    (node / "__pycache__").mkdir()
    (node / "__pycache__" / "x.pyc").write_bytes(b"cache")
    (node / ".git").mkdir()
    (node / ".git" / "config").write_text(f"url = https://user:{SECRET}@example.com/x\n", encoding="utf-8")
    os.symlink(str(tmp_path), node / "elsewhere")  # a link out of the node: never followed into the image
    (deployment.comfyui / "models").mkdir()
    (deployment.comfyui / "models" / "big.safetensors").write_bytes(b"weights")
    return deployment


def _lock(site: Deployment, env: dict[str, str]) -> None:
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 0, result


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_context_holds_the_lock_sources_and_nothing_of_the_machine(
    site: Deployment, env: dict[str, str], tmp_path: Path
) -> None:
    _lock(site, env)
    result = run_cli(["image", "--profile", "cu126", "-o", "ctx"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    context = site.root / "ctx"
    files = _files(context)
    for name in ("pyproject.toml", "uv.lock", "constraints.txt"):
        assert files[f"lock/{name}"] == (site.locks / "cu126" / name).read_bytes()
    assert "comfyui/main.py" in files and "comfyui/requirements.txt" in files
    assert "nodes/comfy-foo/requirements.txt" in files and "nodes/comfyui-manager/requirements.txt" in files
    assert not [n for n in files if "__pycache__" in n or "/.git/" in n or n.startswith("comfyui/models")]
    assert sorted({n.split("/")[1] for n in files if n.startswith("nodes/")}) == ["comfy-foo", "comfyui-manager"]
    assert not (context / "nodes" / "comfy-foo" / "elsewhere").exists()
    for name, data in files.items():  # no path of this machine, no credential, anywhere
        text = data.decode("utf-8", "replace")
        for leak in (str(tmp_path), str(Path.home()), SECRET, env["UV_CACHE_DIR"]):
            assert leak not in text, (name, leak)
    containerfile = files["Containerfile"].decode()
    assert 'how="--locked --project /envbuild-build/lock"' in files["build/install.sh"].decode()
    assert os.access(context / "build" / "install.sh", os.X_OK)
    assert "ARG BASE_IMAGE=docker.io/library/python:3.13-slim" in containerfile
    assert "--mount=type=cache" in containerfile and "--mount=type=secret,id=ca" in containerfile
    assert "USER 10001:10001" in containerfile and "VOLUME /data" in containerfile and "EXPOSE 8188" in containerfile
    assert 'PIP_CONSTRAINT="/opt/envbuild/lock/constraints.txt"' in containerfile
    assert "PATH=/opt/venv/bin:$PATH" in containerfile
    # The torch layer comes before the rest of the venv, the nodes last.
    order = [containerfile.index(s) for s in ("COPY --from=torch", "COPY --from=deps", "COPY comfyui/", "COPY nodes/")]
    assert order == sorted(order)
    torch_layer = files["torch/pylock.toml"].decode()
    assert 'name = "torch"' in torch_layer and 'name = "einops"' not in torch_layer
    assert "--base-directory /data" in files["envbuild/entrypoint.sh"].decode()
    assert "--enable-manager" not in files["envbuild/entrypoint.sh"].decode()  # the legacy clone is a custom node


def test_base_flag_and_a_stale_lock(site: Deployment, env: dict[str, str]) -> None:
    _lock(site, env)
    result = run_cli(["image", "--profile", "cu126", "-o", "ctx", "--base", "localhost/mine:1"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    assert "ARG BASE_IMAGE=localhost/mine:1" in (site.root / "ctx" / "Containerfile").read_text()
    site.add_node("comfy-bar", "pyyaml\n")
    result = run_cli(["image", "--profile", "cu126", "-o", "ctx2"], env=env, cwd=site.root)
    assert result.returncode == 4 and "out of date" in result.stderr, result
    assert not (site.root / "ctx2").exists()


def test_context_inside_the_sources_is_refused_and_build_without_an_engine_says_so(
    site: Deployment, env: dict[str, str], tmp_path: Path
) -> None:
    _lock(site, env)
    result = run_cli(["image", "--profile", "cu126", "-o", "data/custom_nodes/ctx"], env=env, cwd=site.root)
    assert result.returncode == 2 and "is inside data/custom_nodes" in result.stderr, result
    assert not (site.nodes / "ctx").exists()
    (site.root / "notes").mkdir()
    (site.root / "notes" / "todo.txt").write_text("mine")
    for target in ("notes", "."):  # -o replaces the folder whole: never one envbuild did not write
        result = run_cli(["image", "--profile", "cu126", "-o", target], env=env, cwd=site.root)
        assert result.returncode == 2 and "is not a build context" in result.stderr, result
    assert (site.root / "notes" / "todo.txt").read_text() == "mine" and (site.root / "envbuild.toml").is_file()
    no_engine = dict(env, PATH=str(Path(env["PATH"].split(os.pathsep)[0])))  # uv's folder only
    result = run_cli(["image", "--profile", "cu126", "-o", "ctx", "--build"], env=no_engine, cwd=site.root)
    assert result.returncode == 2 and "needs podman, docker or buildah" in result.stderr, result
    assert (site.root / "ctx" / "Containerfile").is_file()


def test_a_git_pinned_comfyui_is_fetched_in_the_build_at_the_locked_commit(
    site: Deployment, env: dict[str, str]
) -> None:
    import subprocess

    git = ["git", "-C", str(site.comfyui), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "ComfyUI"]):
        subprocess.run([*git, *argv], check=True, capture_output=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    config = (site.root / "envbuild.toml").read_text()
    site.write_config(config.replace('path = "ComfyUI"\n',
                                     'path = "ComfyUI"\ngit = "https://github.com/comfyanonymous/ComfyUI"\nref = "v0.3.0"\n'))
    _lock(site, env)
    result = run_cli(["image", "--profile", "cu126", "-o", "ctx"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    containerfile = (site.root / "ctx" / "Containerfile").read_text()
    assert "FROM ${GIT_IMAGE} AS src-comfyui" in containerfile
    assert f'git fetch -q --depth 1 "https://github.com/comfyanonymous/ComfyUI" {commit}' in containerfile
    assert f'test "$(git rev-parse HEAD)" = {commit}' in containerfile
    assert "COPY --from=src-comfyui /src/ /opt/comfyui/" in containerfile and "COPY comfyui/" not in containerfile
    assert not any((site.root / "ctx" / "comfyui").iterdir())


def test_torch_layer_is_what_only_the_torch_family_needs() -> None:
    from envbuild.image.context import torch_layer_packages
    from envbuild.pkgs.uvlock import parse_uv_lock
    from envbuild.torch.catalogue import load_catalogue

    lock = parse_uv_lock("""
version = 1
requires-python = ">=3.10"

[[package]]
name = "site"
version = "0"
source = { virtual = "." }
dependencies = [{ name = "torch" }, { name = "einops" }, { name = "filelock" }]

[[package]]
name = "torch"
version = "2.7.0"
source = { registry = "https://download.pytorch.org/whl/cu126" }
dependencies = [{ name = "filelock" }, { name = "nvidia-cublas-cu12" }, { name = "triton" }]

[[package]]
name = "nvidia-cublas-cu12"
version = "12.6"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "triton"
version = "3.3.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "filelock"
version = "3.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "einops"
version = "0.8"
source = { registry = "https://pypi.org/simple" }
""", "uv.lock")
    profile = load_catalogue(()).get("cu126")
    assert torch_layer_packages(profile, lock) == ("nvidia-cublas-cu12", "torch", "triton")


# --- a real build -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def podman(uv_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    try:
        yield setup_podman(uv_bin, tmp_path_factory.mktemp("podman"))
    except Unavailable as exc:
        pytest.skip(f"podman cannot build and run containers here: {exc}")


def _build(site: Deployment, env: dict[str, str], podman: Podman, tag: str, *more: str) -> tuple[float, str]:
    args = ["image", "--profile", "cu126", "-o", "ctx", "--build", "--tag", tag, "--base", podman.base_image,
            "--engine-arg=--pull=never", "--engine-arg=--network=host",
            f"--engine-arg=--build-arg=UV_IMAGE={podman.uv_image}", *more]
    if CA_BUNDLE.is_file():
        args.append(f"--ca={CA_BUNDLE}")
    started = time.perf_counter()
    result = run_cli(args, env=env, cwd=site.root, timeout=600)
    assert result.returncode == 0, result
    return time.perf_counter() - started, result.stdout


@pytest.mark.container
def test_image_builds_runs_and_a_node_change_keeps_the_torch_layer(
    site: Deployment, env: dict[str, str], podman: Podman
) -> None:
    _lock(site, env)
    tag = f"localhost/envbuild-test:{os.getpid()}"
    try:
        first, stdout = _build(site, env, podman, tag)
        image_id, _, size = stdout.strip().splitlines()[-1].partition(" ")
        assert image_id.startswith("sha256:") and size.endswith(("MiB", "GiB")), stdout
        run = podman.run("run", "--rm", "--network", "none", tag, "--quick-test-for-ci")
        assert run.returncode == 0, run.stderr
        locked = first_locked_version((site.locks / "cu126" / "uv.lock").read_text(encoding="utf-8"), "torch")
        assert locked and f"fake ComfyUI {locked} args:" in run.stdout, run.stdout  # the locked torch, imported
        assert f"guard: ['torch=={locked}']" in run.stdout, run.stdout
        assert "--base-directory /data" in run.stdout and run.stdout.rstrip().endswith("['comfy-foo', 'comfyui-manager']")
        assert "python: /opt/venv/bin/python uid: 10001" in run.stdout, run.stdout
        assert "guard: ['torch==" in run.stdout, run.stdout
        probe = podman.run("run", "--rm", "--network", "none", "--entrypoint", "python", tag, "-c",
                           "import torch, sys; print(torch.__file__)")
        assert probe.returncode == 0 and probe.stdout.startswith("/opt/venv/"), probe
        history = podman.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag)
        assert SECRET not in history.stdout and "BEGIN CERTIFICATE" not in history.stdout
        scan = podman.run("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "python", tag, "-c", SCAN)
        assert scan.returncode == 0 and scan.stdout.split() == ["clean"], scan  # no secret, no uv, no cache inside
        layers = podman.layers(tag)

        # A node's code changes: only the last layer is new.
        (site.nodes / "comfy-foo" / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {'x': 1}\n")
        code_change, _ = _build(site, env, podman, tag)
        assert podman.layers(tag)[:-1] == layers[:-1]

        # A node needs one more package: re-locked, the rest of the venv is rebuilt, the torch layer is not.
        (site.nodes / "comfy-foo" / "requirements.txt").write_text("einops\npyyaml\nrequests\n")
        _lock(site, env)
        requirement_change, _ = _build(site, env, podman, tag)
        after = podman.layers(tag)
        torch_at = 2  # the base, the /data folder, then the torch layer
        assert after[:torch_at + 1] == layers[:torch_at + 1]
        print(f"\nimage {image_id} {size}; build {first:.1f} s; node code change {code_change:.1f} s; "
              f"node requirement change {requirement_change:.1f} s")
    finally:
        podman.run("rmi", "-f", tag)


@pytest.mark.container
def test_image_installs_through_an_install_mode_mirror_named_only_in_a_secret(
    site: Deployment, env: dict[str, str], podman: Podman, index_server, tmp_path: Path
) -> None:
    from tests.test_mirrors import mirror_pypi, mirror_torch

    _lock(site, env)
    mirror_torch(index_server, tmp_path)
    mirror_pypi(index_server, tmp_path)
    index_server.server.fail("/whl/", 503)  # the canonical indexes are down: only the mirror serves
    index_server.server.fail("/simple/", 503)
    mirror = f"{index_server.url}/mirror"
    mirrored = dict(env, ENVBUILD_PYTORCH_MIRROR=f"{mirror}/whl", ENVBUILD_PYPI_MIRROR=f"{mirror}-pypi/simple")
    tag = f"localhost/envbuild-test-mirror:{os.getpid()}"
    seen = len(index_server.server.requests)
    try:
        _build(site, mirrored, podman, tag, "--engine-arg=--no-cache")
        fetched = [path for _, path in index_server.server.requests[seen:] if path.endswith(".whl")]
        assert fetched and all(path.startswith(("/mirror/whl/", "/mirror-pypi/simple/")) for path in fetched), fetched
        history = podman.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag)
        assert history.returncode == 0 and mirror not in history.stdout
        probe = podman.run("run", "--rm", "--network", "none", "--entrypoint", "python", tag, "-c", "import torch")
        assert probe.returncode == 0, probe.stderr
    finally:
        podman.run("rmi", "-f", tag)


@pytest.mark.container
def test_a_torch_layer_file_that_does_not_match_the_locks_hash_fails_the_build(
    site: Deployment, env: dict[str, str], podman: Podman
) -> None:
    import re

    _lock(site, env)
    result = run_cli(["image", "--profile", "cu126", "-o", "ctx"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    pylock = site.root / "ctx" / "torch" / "pylock.toml"
    text = pylock.read_text()
    torch_block = text[text.index('name = "torch"'):]
    digest = re.search(r'sha256 = "([0-9a-f]{64})"', torch_block)
    assert digest is not None
    pylock.write_text(text.replace(digest.group(1), "0" * 64))
    build = podman.run("build", "--pull=never", "--network=host", "--no-cache", "--build-arg",
                       f"BASE_IMAGE={podman.base_image}", "--build-arg", f"UV_IMAGE={podman.uv_image}",
                       "-t", f"localhost/envbuild-test-tampered:{os.getpid()}", str(site.root / "ctx"))
    podman.run("rmi", "-f", f"localhost/envbuild-test-tampered:{os.getpid()}")
    assert build.returncode != 0, build.stdout[-2000:]
    assert "Hash mismatch for `torch==" in build.stderr, build.stderr[-2000:]


def test_context_never_carries_credential_files_nor_what_envbuildignore_names(
    site: Deployment, env: dict[str, str], tmp_path: Path
) -> None:
    """Trust, round two, class 4: `.env`, `.git-credentials` and `.netrc` of ComfyUI and of every node
    were copied into the context (and so into a pushed image)."""
    _lock(site, env)
    node = site.nodes / "comfy-foo"
    for folder in (site.comfyui, node):
        (folder / ".env").write_text(f"HF_TOKEN={SECRET}\n")
        (folder / ".git-credentials").write_text(f"https://u:{SECRET}@github.com\n")
        (folder / ".secrets").mkdir()
        (folder / ".secrets" / "key").write_text(SECRET)
    (node / "private_notes.md").write_text(SECRET)
    (node / "cache").mkdir()
    (node / "cache" / "big.bin").write_bytes(b"x")
    (site.root / ".envbuildignore").write_text("# mine\nprivate_*.md\ncomfy-foo/cache\ncache\n")
    result = run_cli(["image", "--profile", "cu126", "-o", "ctx"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    files = _files(site.root / "ctx")
    assert not [n for n in files if "/." in n or n.startswith(".")], files.keys()
    assert "nodes/comfy-foo/requirements.txt" in files
    assert "nodes/comfy-foo/private_notes.md" not in files and "nodes/comfy-foo/cache/big.bin" not in files
    assert not [n for n, data in files.items() if SECRET.encode() in data]


def test_nodes_dirs_outside_the_deployment_are_refused_for_an_image(
    site: Deployment, env: dict[str, str], tmp_path: Path
) -> None:
    _lock(site, env)
    elsewhere = tmp_path / "elsewhere-nodes"
    elsewhere.mkdir()
    with (site.root / "envbuild.toml").open("a") as handle:
        handle.write(f'\n[nodes]\ndirs = ["data/custom_nodes", "{elsewhere}"]\n')
    result = run_cli(["image", "--profile", "cu126", "-o", "ctx"], env=env, cwd=site.root)
    assert result.returncode == 2 and "outside the deployment folder" in result.stderr, result
