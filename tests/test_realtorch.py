"""Real torch, end to end: ComfyUI's requirements locked and synced for CUDA 13.0 with PyPI's torch.

The torch family comes from PyPI's own CUDA 13.0 build (torch 2.14.1, profile cu130-pypi) through a
loopback pull-through mirror (tests/support/pullthrough.py): it answers torch, torchvision, triton,
the nvidia/cuda wheels and the other projects this machine's local indexes hold from those local
files, and relays every other project from PyPI, as a company's mirror does. envbuild's PyPI
mirror setting points at it in mode "lock", so the lock names the mirror only. No torch byte comes
from the internet. Skipped, with the reason, where the local indexes (or the disk space) are not.

The first tests check the mirror itself, hermetically (a tiny local tree, the session's fake PyPI
as upstream); the last one is the real-torch run, marked `realtorch` and `network`.

Cost of the real run, cold: ~3.8 GB through the mirror (3.2 GB of local wheels, 0.6 GB of
ComfyUI's own wheels relayed from PyPI), ~6.6 GB unpacked into uv's cache; the lock itself reads
only each wheel's METADATA, with range requests. `ENVBUILD_REALTORCH_CACHE=DIR` keeps uv's cache in
DIR, and the mirror on the port recorded there (uv keys its cache by the index URL), so the next
run is warm; by default the cache is a temporary folder deleted after the test. The venv is
always deleted.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.catalogue import Catalogue
from tests.support.deploy import Deployment, Result, locked_versions, make_deployment, run_cli, venv_python
from tests.support.pullthrough import LocalStore, PullThrough
from tests.support.wheels import build_torch_wheel, build_wheel

PROFILE = "cu130-pypi"
TORCH = "2.14.1"
CACHE_ENV = "ENVBUILD_REALTORCH_CACHE"
PORT_FILE = "pullthrough-port"
MIN_FREE_BYTES = 20 * 10**9  # uv's unpacked cache is ~6.6 GB; room for a copy if the venv cannot hardlink
FIXTURES = Path(__file__).parent / "fixtures"
# Projects that must come from the local files only (PyPI has newer torch builds for other CUDAs).
LOCAL_ONLY = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-toolkit)$")
IMPORT_PROBE = "import torch; print(torch.version.cuda); print((torch.ones(2) + 1).sum().item())"


# -- the mirror itself, hermetic ----------------------------------------------------------------

def _local_tree(root: Path) -> LocalStore:
    """A PEP 503 tree like /opt/pypi (relative hrefs into ../../files) plus a find-links folder."""
    files = root / "files"
    torch = build_torch_wheel(files, "2.14.1", cuda="13.0", requires_dist=("six",))
    demo = build_wheel(files, "demo-pkg", "1.0", requires_python=">=3.8")
    torch_sha = hashlib.sha256(torch.read_bytes()).hexdigest()
    pages = {"torch": f'<a href="../../files/{torch.name}#sha256={torch_sha}">{torch.name}</a>',
             "demo-pkg": f'<a href="../../files/{demo.name}" data-requires-python="&gt;=3.8">{demo.name}</a>'}
    for project, link in pages.items():
        (root / "simple" / project).mkdir(parents=True)
        (root / "simple" / project / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{link}\n</body></html>\n")
    build_torch_wheel(root / "flat", "2.13.0+cpu")
    return LocalStore([root / "simple"], [root / "flat"])


@pytest.fixture
def local_mirror(tmp_path: Path, index_server: Catalogue) -> Iterator[PullThrough]:
    """Local tree first, the session's fake PyPI (which plants a torch 99) as upstream."""
    store = _local_tree(tmp_path / "local")
    with PullThrough(store, upstream=index_server.pypi_url, upstream_files=f"{index_server.pypi_url}/files",
                     timeout=10) as server:
        yield server


def _links(page: str) -> dict[str, str]:
    """filename -> href of a PEP 503 page."""
    return {name: html.unescape(href) for href, name in re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', page)}


def test_mirror_answers_a_local_project_from_the_local_files_only(local_mirror: PullThrough,
                                                                 index_server: Catalogue) -> None:
    page = httpx.get(f"{local_mirror.simple_url}/torch/")
    assert page.status_code == 200
    links = _links(page.text)
    # The local index's wheel and the find-links one; never upstream's torch 99.
    assert sorted(links) == ["torch-2.13.0+cpu-py3-none-any.whl", "torch-2.14.1-py3-none-any.whl"]
    assert not index_server.server.requests_for("/simple/torch")
    for name, href in links.items():
        url, digest = href.split("#sha256=")
        assert url.startswith(f"{local_mirror.url}/local/")
        assert hashlib.sha256(httpx.get(url).content).hexdigest() == digest, name
    demo = httpx.get(f"{local_mirror.simple_url}/demo-pkg/").text  # its local link had no sha256: hashed here
    (href,) = _links(demo).values()
    assert "#sha256=" in href and 'data-requires-python="&gt;=3.8"' in demo
    moved = httpx.get(f"{local_mirror.simple_url}/Demo_Pkg/")
    assert moved.status_code == 301 and moved.headers["location"] == "/simple/demo-pkg/"


def test_mirror_serves_local_files_with_head_and_byte_ranges(local_mirror: PullThrough) -> None:
    (url,) = [h.split("#")[0] for n, h in _links(httpx.get(f"{local_mirror.simple_url}/demo-pkg/").text).items()]
    data = httpx.get(url).content
    head = httpx.head(url)
    assert head.headers["accept-ranges"] == "bytes" and int(head.headers["content-length"]) == len(data)
    for spec, expected in (("bytes=0-9", data[:10]), ("bytes=-22", data[-22:]), ("bytes=5-", data[5:])):
        part = httpx.get(url, headers={"Range": spec})
        assert (part.status_code, part.content) == (206, expected), spec
    assert httpx.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    assert httpx.get(url, headers={"Range": "bytes=9-2"}).content == data  # invalid: the whole file
    assert httpx.get(url.replace("/local/", "/local/0").rsplit("/", 1)[0] + "/x.whl").status_code == 404


def test_mirror_relays_other_projects_with_their_files_pointed_at_itself(local_mirror: PullThrough,
                                                                         index_server: Catalogue) -> None:
    page = httpx.get(f"{local_mirror.simple_url}/six/")
    assert page.status_code == 200
    ((name, href),) = _links(page.text).items()
    assert href.startswith(f"{local_mirror.url}/packages/")
    url, digest = href.split("#sha256=")
    assert hashlib.sha256(httpx.get(url).content).hexdigest() == digest
    assert int(httpx.head(url).headers["content-length"]) == len(httpx.get(url).content)
    assert index_server.server.requests_for("/simple/six/")
    assert httpx.get(f"{local_mirror.simple_url}/no-such-project/").status_code == 404
    assert local_mirror.pages("relay") == {"six", "no-such-project"}


def test_mirror_says_502_when_upstream_cannot_be_reached(tmp_path: Path) -> None:
    with PullThrough(_local_tree(tmp_path), upstream="http://127.0.0.1:9/simple", timeout=2) as server:
        answer = httpx.get(f"{server.simple_url}/six/")
    assert answer.status_code == 502 and "127.0.0.1:9" in answer.text


def test_uv_locks_and_syncs_through_the_mirror(local_mirror: PullThrough, uv_env: dict[str, str],
                                               uv_bin: Path, tmp_path: Path) -> None:
    """uv reads local wheels' metadata with range requests and takes torch from the local files only."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(f"""\
[project]
name = "probe"
version = "0"
requires-python = ">=3.10"
dependencies = ["torch", "demo-pkg"]

[tool.uv]
package = false

[[tool.uv.index]]
name = "mirror"
url = "{local_mirror.simple_url}"
default = true
""")
    env = {k: v for k, v in uv_env.items() if k != "UV_DEFAULT_INDEX"}
    env["UV_PROJECT_ENVIRONMENT"] = str(tmp_path / "venv")
    for argv in ([str(uv_bin), "lock"], [str(uv_bin), "sync", "--locked"]):
        done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    urls = lock_urls(project / "uv.lock")
    assert urls["torch"] == [u for u in urls["torch"] if u.startswith(f"{local_mirror.url}/local/")] != []
    assert urls["six"] and all(u.startswith(f"{local_mirror.url}/packages/") for u in urls["six"])
    assert locked_versions(project / "uv.lock")["torch"] == ("2.14.1", local_mirror.simple_url)
    assert any(s.status == 206 for s in local_mirror.served() if s.source == "local")


# -- the real torch ------------------------------------------------------------------------------

@dataclass
class Workspace:
    root: Path
    cache: Path
    keep_cache: bool
    python: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def venv(self) -> Path:
        return self.root / "venv"


def local_torch(store: LocalStore) -> str | None:
    files = store.files("torch") or ()
    wheel = next((f for f in files if f.filename.startswith(f"torch-{TORCH}-cp311-") and "x86_64" in f.filename), None)
    return str(wheel.path) if wheel else None


def python311() -> str | None:
    """The venv needs CPython 3.11: the local wheels are cp311."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    return shutil.which("python3.11")


def _free(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """Skip where this test cannot run; afterwards delete the venv (and the cache unless kept)."""
    if not (sys.platform == "linux" and platform.machine() == "x86_64"):
        pytest.skip("realtorch: the local torch wheels are for Linux x86_64")
    if local_torch(LocalStore()) is None:
        pytest.skip(f"realtorch: no local torch {TORCH} cp311 wheel in /opt/pypi/simple or /opt/pypi-more/simple "
                    "(this test runs on the image that carries them)")
    python = python311()
    if python is None:
        pytest.skip("realtorch: needs a CPython 3.11 (the local wheels are cp311): run pytest with 3.11")
    kept = os.environ.get(CACHE_ENV)
    cache = Path(kept).expanduser().absolute() if kept else tmp_path / "uv-cache"
    for where in {cache, tmp_path}:
        if _free(where) < MIN_FREE_BYTES:
            pytest.skip(f"realtorch: {_free(where) / 1e9:.1f} GB free at {where}, needs "
                        f"{MIN_FREE_BYTES / 1e9:.0f} GB (uv's cache of torch and its CUDA wheels is ~6.6 GB)")
    space = Workspace(tmp_path, cache, bool(kept), python)
    try:
        yield space
    finally:
        if space.venv.is_symlink():  # a link to its generation (rmtree refuses links)
            space.venv.unlink()
        shutil.rmtree(space.venv, ignore_errors=True)
        shutil.rmtree(space.root / ".envbuild-generations", ignore_errors=True)
        if not space.keep_cache:
            shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def mirror(workspace: Workspace) -> Iterator[PullThrough]:
    """On the port a kept cache remembers (a new port would make uv's whole cache cold), else any."""
    port_file = workspace.cache / PORT_FILE
    recorded = port_file.read_text().strip() if workspace.keep_cache and port_file.is_file() else ""
    preferred = int(recorded) if recorded.isdigit() else 0
    with PullThrough(port=preferred) as server:
        if workspace.keep_cache:
            workspace.cache.mkdir(parents=True, exist_ok=True)
            port_file.write_text(str(server.port))
        yield server


def realtorch_env(root: Path, cache: Path, python: str, mirror_url: str, uv_bin: Path) -> dict[str, str]:
    """This process's environment without uv/pip/envbuild settings, plus the mirror (lock mode) and cache."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UV_", "PIP_", "ENVBUILD_")) and k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH")}
    env.update(
        UV_CACHE_DIR=str(cache), UV_PYTHON=python, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1",
        PIP_CONFIG_FILE=os.devnull, XDG_CONFIG_HOME=str(root / "xdg-config"),
        ENVBUILD_USER_CONFIG=str(root / "no-user-config.toml"), ENVBUILD_CACHE_DIR=str(root / "envbuild-cache"),
        ENVBUILD_PYPI_MIRROR=f"{mirror_url}/simple", ENVBUILD_MIRROR_MODE="lock",
        PATH=os.pathsep.join([str(uv_bin.parent), os.environ.get("PATH", "")]),
    )
    return env


def realtorch_site(root: Path) -> Deployment:
    """The real ComfyUI requirements.txt (no torchaudio in it); the Manager as make_deployment's (plus pip)."""
    site = make_deployment(root / "site", requirements=(FIXTURES / "comfyui" / "requirements.txt").read_text(),
                           profiles=(PROFILE,), requires_python="==3.11.*")
    # This machine's local wheel indexes (which the mirror answers from) hold x86_64 files only, and a lock
    # builds nothing (no-build): the deployment's own cu130 locks Linux x86_64 alone, not aarch64 too.
    builtin = (Path(__file__).resolve().parents[1] / "profiles" / "cu130.toml").read_text(encoding="utf-8")
    own = builtin.replace("    \"sys_platform == 'linux' and platform_machine == 'aarch64'\",\n", "")
    assert own != builtin
    (site.root / "profiles").mkdir()
    (site.root / "profiles" / "cu130.toml").write_text(own, encoding="utf-8")
    return site


def _timed(space: Workspace, name: str, args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Result:
    started = time.perf_counter()
    result = run_cli(args, env=env, cwd=cwd, timeout=timeout)
    space.timings[name] = time.perf_counter() - started
    return result


def lock_urls(lock: Path) -> dict[str, list[str]]:
    """name -> every file URL the lock records for it (wheels and sdist)."""
    urls: dict[str, list[str]] = {}
    for block in lock.read_text(encoding="utf-8").split("\n[[package]]\n")[1:]:
        name = re.search(r'^name = "([^"]+)"', block, re.M)
        if name:
            urls[name.group(1)] = re.findall(r'\burl = "([^"]+)"', block)
    return urls


def _assert_lock_through_mirror(site: Deployment, mirror: PullThrough) -> None:
    lock = site.locks / PROFILE / "uv.lock"
    versions = locked_versions(lock)
    assert versions["torch"] == (TORCH, mirror.simple_url)
    assert not {name: v for name, v in versions.items() if v[1] not in (mirror.simple_url, ".")}, \
        "every package is locked from the mirror"
    urls = lock_urls(lock)
    assert all(u.startswith(mirror.url + "/") for file_urls in urls.values() for u in file_urls), \
        "the lock names the mirror only"
    local_only = {name for name in versions if LOCAL_ONLY.match(name)}
    assert {"torch", "torchvision", "triton", "cuda-toolkit", "nvidia-cudnn-cu13"} <= local_only
    for name in local_only:
        assert urls[name] and all(u.startswith(f"{mirror.url}/local/") for u in urls[name]), (name, urls[name])
    assert versions["torchvision"][0] in {"0.28.0", "0.29.0", "0.29.1"}
    assert "torchaudio" not in versions


def _assert_no_torch_from_internet(mirror: PullThrough) -> None:
    relayed = [s.path for s in mirror.served() if s.source == "relay"]
    assert not [p for p in relayed if p.startswith("/simple/") and LOCAL_ONLY.match(p.split("/")[2])], relayed
    assert not [p for p in relayed if re.search(r"/(torch|torchvision|triton|nvidia_[^/]*|cuda_toolkit)-[^/]*$", p)]


def _assert_doctor(result: Result) -> None:
    """Without a GPU, `machine runs profile` fails (exit 1); the lock, venv and torch checks must pass."""
    assert result.returncode in (0, 1), result
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    for name in ("lock state", "venv matches lock", "torch build"):
        assert checks[name]["status"] == "pass", checks[name]
    assert checks["torch build"]["detail"].startswith(f"torch {TORCH} (CUDA 13.0)"), checks["torch build"]


@pytest.mark.realtorch
@pytest.mark.network
def test_comfyui_with_pypi_cuda130_torch_through_a_pull_through_mirror(
    workspace: Workspace, mirror: PullThrough, uv_bin: Path, record_property: Callable[[str, object], None],
) -> None:
    site = realtorch_site(workspace.root)
    env = realtorch_env(workspace.root, workspace.cache, workspace.python, mirror.url, uv_bin)

    locked = _timed(workspace, "lock", ["lock", "--profile", PROFILE], env, site.root, timeout=900)
    assert locked.returncode == 0, locked
    _assert_lock_through_mirror(site, mirror)

    venv = str(workspace.venv)
    synced = _timed(workspace, "sync", ["sync", "--profile", PROFILE, "--venv", venv], env, site.root, timeout=900)
    assert synced.returncode == 0, synced
    assert f"torch {TORCH} (CUDA 13.0)" in synced.output  # read from metadata and torch/version.py, no import
    _assert_no_torch_from_internet(mirror)

    doctor = _timed(workspace, "verify", ["doctor", "--profile", PROFILE, "--venv", venv, "--no-import", "--json"],
                    env, site.root, timeout=300)
    _assert_doctor(doctor)

    started = time.perf_counter()
    probe = subprocess.run([str(venv_python(workspace.venv)), "-c", IMPORT_PROBE], capture_output=True, text=True,
                           timeout=300, env=env, cwd=workspace.root)
    workspace.timings["import"] = time.perf_counter() - started
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["13.0", "4.0"]

    summary = ", ".join(f"{k} {v:.1f} s" for k, v in workspace.timings.items())
    gigabytes = mirror.bytes_served("local") / 1e9, mirror.bytes_served("relay") / 1e9
    for key, value in workspace.timings.items():
        record_property(f"realtorch_{key}_s", round(value, 2))
    print(f"realtorch: {summary}; mirror served {gigabytes[0]:.2f} GB local, {gigabytes[1]:.2f} GB relayed "
          f"({'kept' if workspace.keep_cache else 'temporary'} uv cache {workspace.cache})")
