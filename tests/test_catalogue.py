"""`envbuild profiles update` against loopback indexes: what counts, the policy, the cache, the CLI.

Every test writes its own profile into a deployment's `profiles/` folder and serves its own index
(`index_server.extra_index`), so the built-in profiles are never read or rewritten here.
"""

from __future__ import annotations

import json
import socket
import textwrap
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from envbuild.core.http.indexclient import DistFile, HttpCache, IndexClient, parse_page
from envbuild.env.profiles_update import STAMP, UpdateReport, update_profiles
from envbuild.settings.config import load_config
from envbuild.torch.catalogue import load_catalogue
from envbuild.torch.profile_file import load_profile
from envbuild.torch.releases import cuda_of, lowest_python, public_spec, wheel_platforms
from tests.support.deploy import Deployment, make_deployment, run_cli
from tests.support.httpserver import QuietHTTPServer
from tests.support.index import Index
from tests.support.wheels import build_wheel

LINUX = "cp310-cp310-manylinux_2_28_x86_64"
WIN = "cp310-cp310-win_amd64"
BOTH = (LINUX, WIN)
ENVS = """[
    "sys_platform == 'linux' and platform_machine == 'x86_64'",
    "sys_platform == 'win32' and platform_machine == 'AMD64'",
]"""


def publish(index: Index, dest: Path, name: str, version: str, *, tags: Sequence[str] = BOTH,
            requires: Sequence[str] = (), metadata: bool = True) -> None:
    for tag in tags:
        index.add(build_wheel(dest, name, version, tag=tag, requires_dist=requires), metadata=metadata)


def family(index: Index, dest: Path, torch: str, vision: str, audio: str, label: str = "cu126",
           torch_tags: Sequence[str] = BOTH) -> None:
    publish(index, dest, "torch", f"{torch}+{label}", tags=torch_tags)
    publish(index, dest, "torchvision", f"{vision}+{label}", requires=[f"torch=={torch}+{label}"])
    publish(index, dest, "torchaudio", f"{audio}+{label}", requires=[f"torch=={torch}+{label}"])


def write_profile(deployment: Deployment, name: str, index_url: str, packages: str, *, extra: str = "") -> Path:
    folder = deployment.root / "profiles"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.toml"
    head = f"""\
# Test profile {name}: this comment must survive --write.
schema = 1
name = "{name}"
description = "test profile"
accelerator = "cuda"
accelerator-version = "12.6"
channel = "stable"
local-version = "cu126"

[index]
name = "pytorch-{name}"
url = "{index_url}"

[packages]
"""
    tail = f"\n[platforms]\nenvironments = {ENVS}\nrequired-environments = {ENVS}\n"
    path.write_text(head + textwrap.dedent(packages).strip() + "\n" + tail + extra, encoding="utf-8")
    return path


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "site")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[IndexClient]:
    with IndexClient(HttpCache(tmp_path / "cache"), backoff=0.01, timeout=5) as made:
        yield made


def run_update(deployment: Deployment, client: IndexClient, names: Sequence[str],
               environ: dict[str, str] | None = None) -> UpdateReport:
    config = load_config(deployment.root)
    return update_profiles(config, load_catalogue(config.profiles_dirs), names, client, environ=environ or {},
                           today="2026-11-25")


def table(report: UpdateReport, profile: str):  # type: ignore[no-untyped-def]
    return next(t for t in report.tables if t.profile == profile)


# -- what counts -----------------------------------------------------------------------------------
def test_wheel_tags_map_to_platforms_for_the_lowest_python() -> None:
    def fits(filename: str, requires: str | None = None) -> set[str]:
        return wheel_platforms(DistFile(filename, "u", requires, None, None, False), (3, 10))[0]

    assert fits("torch-2.7.1-cp310-cp310-manylinux_2_28_x86_64.whl") == {"linux-x86_64"}
    assert fits("torch-2.3.0-cp310-cp310-linux_x86_64.whl") == {"linux-x86_64"}  # old PyTorch-index spelling
    assert fits("torch-2.7.1-cp310-none-macosx_11_0_arm64.whl") == {"macos-arm64"}
    assert fits("torchvision-0.29.2-py3-none-win_amd64.whl") == {"win-amd64"}
    assert fits("x-1.0-cp39-abi3-manylinux2014_aarch64.whl") == {"linux-aarch64"}
    assert fits("x-1.0-py3-none-any.whl") >= {"linux-x86_64", "win-amd64", "macos-arm64"}
    assert fits("torch-2.15.0-cp311-cp311-manylinux_2_28_x86_64.whl") == set()
    assert fits("torch-2.14.0-cp310-cp310t-manylinux_2_28_x86_64.whl") == set()  # free-threaded only
    assert fits("x-1.0-cp310-cp310-musllinux_1_2_x86_64.whl") == set()
    assert fits("x-1.0-py3-none-any.whl", requires=">=3.11") == set()
    assert lowest_python(">=3.10,<3.14") == (3, 10) and lowest_python(">=3.10.1") == (3, 10)


def test_cuda_and_pins_come_from_metadata_requirements() -> None:
    old = [Requirement('nvidia-cuda-runtime-cu12 (==12.4.127) ; platform_system == "Linux"')]
    new = [Requirement("cuda-toolkit[cudart,nvrtc]==13.0.2; platform_system == 'Linux'")]
    assert cuda_of(old) == "12.4" and cuda_of(new) == "13.0" and cuda_of([Requirement("numpy")]) is None
    assert public_spec(SpecifierSet("==2.7.1+cu126")) == SpecifierSet("==2.7.1")


def test_html_and_json_pages_name_the_metadata_file() -> None:
    page = "http://h/simple/torch/"
    html = (b'<a href="../files/torch-1-py3-none-any.whl#sha256=ab" data-requires-python="&gt;=3.9" '
            b'data-dist-info-metadata="sha256=cd">torch-1-py3-none-any.whl</a>'
            b'<a href="https://f/torch-2-py3-none-any.whl" data-yanked="">x</a>')
    first, second = parse_page(html, "text/html", page)
    assert first == DistFile("torch-1-py3-none-any.whl", "http://h/simple/files/torch-1-py3-none-any.whl", ">=3.9",
                             "http://h/simple/files/torch-1-py3-none-any.whl.metadata", "cd", False)
    assert second.yanked and second.metadata_url is None
    body = json.dumps({"files": [{"filename": "t-1-py3-none-any.whl", "url": "t-1-py3-none-any.whl",
                                  "core-metadata": {"sha256": "ef"}}]}).encode()
    (only,) = parse_page(body, "application/vnd.pypi.simple.v1+json", page)
    assert only.metadata_url == "http://h/simple/torch/t-1-py3-none-any.whl.metadata" and only.metadata_sha256 == "ef"


# -- the policy against loopback indexes -----------------------------------------------------------
def test_newest_compatible_set_floor_raised_and_left_out_versions_explained(
    deployment: Deployment, client: IndexClient, index_server, tmp_path: Path
) -> None:
    index = index_server.extra_index("t-policy/cu126")
    wheels = tmp_path / "wheels"
    family(index, wheels, "2.6.0", "0.21.0", "2.6.0")
    family(index, wheels, "2.7.1", "0.22.1", "2.7.1")
    publish(index, wheels, "torch", "2.5.1+cu126", tags=(LINUX,))  # no Windows wheel
    publish(index, wheels, "torch", "2.8.0+cu126", tags=("cp311-cp311-manylinux_2_28_x86_64", "cp311-cp311-win_amd64"))
    publish(index, wheels, "torchvision", "0.23.0+cu126", requires=["torch==2.8.0+cu126"])
    publish(index, wheels, "torchvision", "0.24.0+cu126", requires=["torch==2.9.0+cu126"])  # torch not on the index
    publish(index, wheels, "torch", "2.7.1+cpu")  # another build's label on the same index: never counts
    write_profile(deployment, "tpol", index.url, """\
        torch = ">=2.5.0"  # inline comment
        torchvision = ">=0.21.0"
        torchaudio = ">=2.6.0"
        """)
    report = run_update(deployment, client, ["tpol"])
    result = table(report, "tpol")
    assert result.error is None and not report.unreadable
    assert result.newest == {"torch": "2.7.1", "torchvision": "0.22.1", "torchaudio": "2.7.1"}
    assert [(c.package, c.old, c.new) for c in result.changes] == [("torch", ">=2.5.0", ">=2.6.0")]
    assert "2.5.0: no 2.5 release counts" in result.changes[0].reason
    assert "torch 2.8.0 left out: no CPython 3.10 wheel for linux-x86_64; no CPython 3.10 wheel for win-amd64" \
        in result.notes
    assert "torchvision 0.24.0 left out: needs torch==2.9.0" in result.notes
    # The listing came as PEP 691 JSON, and no wheel was ever downloaded (metadata files only).
    paths = [r.path for r in index_server.server.requests_for("/t-policy/")]
    assert all(p.endswith(("/", ".metadata")) for p in paths), paths


def test_html_only_index_that_stopped_gets_a_ceiling(
    deployment: Deployment, client: IndexClient, index_server, tmp_path: Path
) -> None:
    old = index_server.extra_index("t-stop/old", json=False)
    new = index_server.extra_index("t-stop/new")
    family(old, tmp_path / "w-old", "2.5.1", "0.20.1", "2.5.1")
    family(old, tmp_path / "w-old", "2.6.0", "0.21.0", "2.6.0")
    family(new, tmp_path / "w-new", "2.7.1", "0.22.1", "2.7.1")
    specs = 'torch = ">=2.5.0"\ntorchvision = ">=0.20.0"\ntorchaudio = ">=2.5.0"\n'
    write_profile(deployment, "told", old.url, specs)
    write_profile(deployment, "tnew", new.url, specs.replace("2.5.0", "2.7.0").replace("0.20.0", "0.22.0"))
    report = run_update(deployment, client, ["told", "tnew"])
    stopped = table(report, "told")
    assert stopped.newest == {"torch": "2.6.0", "torchvision": "0.21.0", "torchaudio": "2.6.0"}
    assert {c.package: c.new for c in stopped.changes} == {
        "torch": ">=2.5.0,<=2.6.0", "torchvision": ">=0.20.0,<=0.21.0", "torchaudio": ">=2.5.0,<=2.6.0"}
    assert "stopped at torch 2.6.0" in stopped.changes[0].reason
    assert any(n.endswith('add `last-torch = "2.6"` to told.toml once PyTorch\'s release matrix confirms the line '
                          "ended") for n in stopped.notes), stopped.notes
    assert table(report, "tnew").changes == ()
    diff = report.diff(load_config(deployment.root))
    assert '+torch = ">=2.5.0,<=2.6.0"' in diff and diff.count("\n+torch = ") == 1  # tnew: only its stamp
    # Alone, an index cannot tell that it stopped: nothing to compare with, so no ceiling.
    assert table(run_update(deployment, client, ["told"]), "told").changes == ()


def test_pypi_table_follows_the_cuda_in_torch_metadata(
    deployment: Deployment, client: IndexClient, index_server, tmp_path: Path
) -> None:
    pypi = index_server.extra_index("t-pypi/simple")
    wheels = tmp_path / "pypi"
    runtime = {"2.6.0": "12.4.127", "2.7.0": "12.6.77", "2.7.1": "12.6.77", "2.8.0": "12.8.90"}
    for torch, cuda in runtime.items():
        publish(pypi, wheels, "torch", torch, tags=(LINUX,),
                requires=[f'nvidia-cuda-runtime-cu12=={cuda}; platform_system == "Linux"'])
    for vision, torch in {"0.21.0": "2.6.0", "0.22.0": "2.7.0", "0.22.1": "2.7.1", "0.23.0": "2.8.0"}.items():
        publish(pypi, wheels, "torchvision", vision, tags=(LINUX,), requires=[f"torch=={torch}"])
    publish(pypi, wheels, "torchaudio", "2.11.0", tags=(LINUX,))  # pins no torch: built for which one?
    write_profile(deployment, "tpy", "https://download.pytorch.org/whl/cu126", 'torch = ">=2.6.0"', extra=textwrap.dedent("""
        # PyPI note: kept.
        [pypi]
        torch = ">=2.7.0"
        torchvision = ">=0.22.0,<0.24.0"
        """))
    report = run_update(deployment, client, ["tpy-pypi"], environ={"UV_DEFAULT_INDEX": pypi.url})
    result = table(report, "tpy-pypi")
    assert result.table == "pypi" and result.index_url == pypi.url
    assert result.newest == {"torch": "2.7.1", "torchvision": "0.22.1"}
    changes = {c.package: (c.new, c.reason) for c in result.changes}
    assert changes["torch"] == (">=2.7.0,<2.8.0", "newest release for this build: 2.7.1; 2.8.0: built for CUDA 12.8")
    assert changes["torchvision"][0] == ">=0.22.0,<0.23.0"
    text = report.new_texts[deployment.root / "profiles" / "tpy.toml"]
    assert "# PyPI note: kept." in text and f"[pypi]\n{STAMP} read {pypi.url} on 2026-11-25" in text


def test_pypi_companions_follow_the_torch_the_pypi_table_counts(
    deployment: Deployment, client: IndexClient, index_server, tmp_path: Path
) -> None:
    pypi = index_server.extra_index("t-pypi-companions/simple")
    wheels = tmp_path / "pypi"
    for torch, cuda in {"2.6.0": "12.4.127", "2.7.1": "12.6.77"}.items():
        publish(pypi, wheels, "torch", torch, tags=(LINUX,),
                requires=[f'nvidia-cuda-runtime-cu12=={cuda}; platform_system == "Linux"'])
    publish(pypi, wheels, "torchvision", "0.22.1", tags=(LINUX,), requires=["torch==2.7.1"])
    for version, torch in (("0.0.29.post3", "2.6.0"), ("0.0.31", "2.7.1")):
        publish(pypi, wheels, "xformers", version, tags=(LINUX,), requires=[f"torch=={torch}"])
    write_profile(deployment, "tpyc", "https://download.pytorch.org/whl/cu126", 'torch = ">=2.6.0"',
                  extra=textwrap.dedent("""
        [pypi]
        torch = ">=2.7.0,<2.8.0"
        torchvision = ">=0.22.0,<0.23.0"

        # the -pypi variant's companion: its own ceiling is kept
        [pypi.companions]
        xformers = ">=0.0.29,<0.0.32"
        """))
    report = run_update(deployment, client, ["tpyc-pypi"], environ={"UV_DEFAULT_INDEX": pypi.url})
    result = table(report, "tpyc-pypi")
    assert result.error is None, result
    assert result.newest == {"torch": "2.7.1", "torchvision": "0.22.1", "xformers": "0.0.31"}
    # 0.0.29.post3 pins torch 2.6.0, PyPI's CUDA 12.4 build: its line no longer counts, the floor rises.
    assert [(c.package, c.new, c.table) for c in result.changes] == [
        ("xformers", ">=0.0.31,<0.0.32", "pypi.companions")]
    text = report.new_texts[deployment.root / "profiles" / "tpyc.toml"]
    assert '# the -pypi variant\'s companion: its own ceiling is kept\n[pypi.companions]\nxformers = ">=0.0.31,<0.0.32"' \
        in text, text
    written = tmp_path / "tpyc.toml"
    written.write_text(text)
    assert [c.as_written() for c in load_profile(written).pypi_companions] == ["xformers >=0.0.31,<0.0.32"]


def test_not_on_the_index_is_an_answer_and_403_means_missing(
    deployment: Deployment, client: IndexClient, index_server, tmp_path: Path
) -> None:
    index = index_server.extra_index("t-missing/cu126")
    publish(index, tmp_path / "w", "torch", "2.7.1+cu126")
    publish(index, tmp_path / "w", "torchvision", "0.22.1+cu126", requires=["torch==2.7.1+cu126"])
    write_profile(deployment, "tmiss", index.url, 'torch = ">=2.7.0"\ntorchvision = ">=0.22.0"\ntorchaudio = ">=2.7.0"')
    index_server.server.fail("/t-missing/cu126/torchvision/", 403, times=1)
    report = run_update(deployment, client, ["tmiss"])
    assert not report.unreadable
    assert table(report, "tmiss").error in (f"torchaudio is not on {index.url}", f"torchvision is not on {index.url}")


# -- faults, cache, offline ------------------------------------------------------------------------
def test_500_then_recovery_and_an_unreachable_index(
    deployment: Deployment, client: IndexClient, index_server, tmp_path: Path
) -> None:
    index = index_server.extra_index("t-flaky/cu126")
    family(index, tmp_path / "w", "2.7.1", "0.22.1", "2.7.1")
    write_profile(deployment, "tflaky", index.url, 'torch = ">=2.7.0"\ntorchvision = ">=0.22.0"\ntorchaudio = ">=2.7.0"')
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/whl/cu126"
    write_profile(deployment, "tdown", closed, 'torch = ">=2.7.0"')
    index_server.server.fail("/t-flaky/cu126/torch/", 500, times=1)
    report = run_update(deployment, client, ["tflaky", "tdown"])
    assert table(report, "tflaky").newest["torch"] == "2.7.1"
    assert len(index_server.server.requests_for("/t-flaky/cu126/torch/")) == 2  # retried once
    (url, reason), = report.unreadable
    assert url == f"{closed}/torch/" and reason.startswith("connection failed") and "(3 tries)" in reason
    assert table(report, "tdown").error.startswith(f"could not read {closed}/torch/")


def test_offline_uses_the_cache_and_a_failing_index_falls_back_to_it(
    deployment: Deployment, tmp_path: Path, index_server
) -> None:
    index = index_server.extra_index("t-cache/cu126")
    family(index, tmp_path / "w", "2.7.1", "0.22.1", "2.7.1")
    write_profile(deployment, "tcache", index.url, 'torch = ">=2.7.0"\ntorchvision = ">=0.22.0"\ntorchaudio = ">=2.7.0"')
    cache = HttpCache(tmp_path / "cache")
    with IndexClient(cache, offline=True) as offline:
        cold = run_update(deployment, offline, ["tcache"])
    assert "not in the cache (offline)" in cold.unreadable[0][1]
    with IndexClient(cache, backoff=0.01) as online:
        assert table(run_update(deployment, online, ["tcache"]), "tcache").cache_age is None
    index_server.server.clear_log()
    with IndexClient(cache, offline=True) as offline:
        warm = run_update(deployment, offline, ["tcache"])
    assert table(warm, "tcache").newest["torch"] == "2.7.1" and table(warm, "tcache").cache_age is not None
    assert index_server.server.requests_for("/t-cache/") == []
    index_server.server.fail("/t-cache/", 503)  # the index goes down: the stale copy answers, and says so
    with IndexClient(cache, backoff=0.01) as online:
        fallback = run_update(deployment, online, ["tcache"])
    assert table(fallback, "tcache").newest["torch"] == "2.7.1"
    assert any("HTTP 503 (3 tries); used the cached copy from" in reason for _, reason in fallback.unreadable)


class _Origin(BaseHTTPRequestHandler):
    """Serves fixed answers with chosen headers; answers If-None-Match and Range like a CDN."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server: _OriginServer = self.server  # type: ignore[assignment]
        server.seen.append((self.path, dict(self.headers)))
        body, headers = server.routes.get(self.path, (b"", {}))
        status, extra = int(headers.get("X-Test-Status", 200 if body else 404)), {}
        if headers.get("ETag") and self.headers.get("If-None-Match") == headers["ETag"]:
            status, body = 304, b""
        elif self.headers.get("Range") and body:
            first, _, last = self.headers["Range"].removeprefix("bytes=").partition("-")
            start = len(body) - int(last) if first == "" else int(first)
            end = len(body) - 1 if first == "" or not last else min(int(last), len(body) - 1)
            status, extra = 206, {"Content-Range": f"bytes {start}-{end}/{len(body)}"}
            body = body[start:end + 1]
        self.send_response(status)
        for key, value in {**headers, **extra, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class _OriginServer(QuietHTTPServer):

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Origin)
        self.routes: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


@pytest.fixture
def origin() -> Iterator[_OriginServer]:
    server = _OriginServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_http_caching_max_age_etag_and_metadata_by_range(origin: _OriginServer, tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "torch", "2.7.1", tag=LINUX, files={"torch/__init__.py": "x = 1\n" * 5000},
                        requires_dist=["nvidia-cuda-runtime-cu12==12.6.77"])
    html = f'<a href="/files/{wheel.name}">{wheel.name}</a>'.encode()
    origin.routes["/a/torch/"] = (html, {"Content-Type": "text/html", "Cache-Control": "max-age=600"})
    origin.routes["/b/torch/"] = (html, {"Content-Type": "text/html", "Cache-Control": "no-cache", "ETag": '"v1"'})
    origin.routes["/c/torch/"] = (html, {"Content-Type": "text/html"})
    origin.routes[f"/files/{wheel.name}"] = (wheel.read_bytes(), {"Content-Type": "application/zip"})
    cache = HttpCache(tmp_path / "cache", ttl=0.0)  # only the server's headers keep anything fresh
    with IndexClient(cache) as client:
        for prefix in ("a", "b", "c"):
            client.project_page(f"{origin.url}/{prefix}", "torch")
        origin.seen.clear()
        pages = [client.project_page(f"{origin.url}/{prefix}", "torch") for prefix in ("a", "b", "c")]
        assert [p for p, _ in origin.seen] == ["/b/torch/", "/c/torch/"]  # max-age=600 kept /a fresh
        assert origin.seen[0][1].get("If-None-Match") == '"v1"'  # revalidated; the 304 kept the copy
        assert all(len(page.files) == 1 for page in pages)
        origin.seen.clear()
        metadata = client.metadata(pages[0].files[0])  # no PEP 658 file: range reads of the zip's end
    assert b"Requires-Dist: nvidia-cuda-runtime-cu12==12.6.77" in metadata
    assert all(headers.get("Range") for _, headers in origin.seen) and len(origin.seen) == 1  # the tail holds it all


def test_answers_without_cache_headers_stay_fresh_an_hour_and_a_403_answers_offline(
    origin: _OriginServer, tmp_path: Path
) -> None:
    """What the README promises beyond RFC 9111 (why the cache is not hishel: see HttpCache)."""
    origin.routes["/d/torch/"] = (b'<a href="/files/torch-1-py3-none-any.whl">t</a>', {"Content-Type": "text/html"})
    origin.routes["/s3/nosuch/"] = (b"", {"X-Test-Status": "403"})  # the PyTorch index lacks the project
    cache = HttpCache(tmp_path / "cache")
    with IndexClient(cache) as client:
        assert client.project_page(f"{origin.url}/d", "torch").age is None
        assert not client.project_page(f"{origin.url}/s3", "nosuch").found
        origin.seen.clear()
        assert client.project_page(f"{origin.url}/d", "torch").age is not None and origin.seen == []
    with IndexClient(cache, offline=True) as offline:
        missing = offline.project_page(f"{origin.url}/s3", "nosuch")
    assert not missing.found and missing.age is not None


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_write_keeps_comments_and_is_idempotent(
    deployment: Deployment, uv_env: dict[str, str], index_server, tmp_path: Path
) -> None:
    index = index_server.extra_index("t-cli/cu126")
    family(index, tmp_path / "w", "2.6.0", "0.21.0", "2.6.0")
    family(index, tmp_path / "w", "2.7.1", "0.22.1", "2.7.1")
    path = write_profile(deployment, "tcli", index.url, """\
        torch = ">=2.4.0"  # the floor this note explains
        torchvision = ">=0.21.0"
        torchaudio = ">=2.6.0"
        """)
    env = {**uv_env, "ENVBUILD_CACHE_DIR": str(tmp_path / "cache")}
    dry = run_cli(["profiles", "update", "--profile", "tcli"], env=env, cwd=deployment.root)
    assert dry.returncode == 0, dry
    assert "-torch = \">=2.4.0\"  # the floor this note explains" in dry.stdout
    assert "+torch = \">=2.6.0\"  # the floor this note explains" in dry.stdout
    assert "(run with --write to apply)" in dry.stdout and ">=2.4.0" in path.read_text()
    wrote = run_cli(["profiles", "update", "--profile", "tcli", "--write", "--json"], env=env, cwd=deployment.root)
    assert wrote.returncode == 0, wrote
    data = json.loads(wrote.stdout)
    assert data["written"] == ["profiles/tcli.toml"] and data["tables"][0]["newest"]["torch"] == "2.7.1"
    text = path.read_text()
    assert text.startswith("# Test profile tcli: this comment must survive --write.")
    assert 'torch = ">=2.6.0"  # the floor this note explains' in text
    assert f"[packages]\n{STAMP} read {index.url} on " in text
    assert load_profile(path).packages[0].specifier == SpecifierSet(">=2.6.0")
    again = run_cli(["profiles", "update", "--profile", "tcli", "--offline"], env=env, cwd=deployment.root)
    assert again.returncode == 0, again
    assert "bounds are true to the index" in again.stdout and "---" not in again.stdout
    assert "(offline: cached " in again.stdout
    listing = run_cli(["profiles", "--json"], env=env, cwd=deployment.root)
    assert {"name": "tcli", "torch": ">=2.6.0"}.items() <= next(
        row for row in json.loads(listing.stdout) if row["name"] == "tcli").items()


def test_cli_reports_the_unreachable_index_and_exits_1(deployment: Deployment, uv_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/whl/cu126"
    write_profile(deployment, "tgone", closed, 'torch = ">=2.7.0"\ntorchvision = ">=0.22.0"')
    env = {**uv_env, "ENVBUILD_CACHE_DIR": str(tmp_path / "cache")}
    result = run_cli(["profiles", "update", "--profile", "tgone"], env=env, cwd=deployment.root)
    assert result.returncode == 6, result  # an index that cannot be read
    assert f"{closed}/ (torch, torchvision): connection failed" in result.stderr
    assert Version("2.7.0") in SpecifierSet(">=2.7.0")  # the profile file is untouched
    assert '>=2.7.0"\ntorchvision' in (deployment.root / "profiles" / "tgone.toml").read_text()


def test_a_line_the_catalogue_lacks_is_proposed_as_a_profile_that_locks(
    deployment: Deployment, client: IndexClient, index_server, uv_env: dict[str, str], tmp_path: Path
) -> None:
    """The index's own torch/ page lists every line's wheels: cu134 and rocm7.99 have no profile, so each gets a
    proposed file (never loaded until renamed); renamed, the cu134 proposal validates and locks."""
    from envbuild.env.profiles_update import write_updates
    from tests.support.wheels import build_family_wheel, build_torch_wheel

    root, line = index_server.extra_index("whl"), index_server.extra_index("whl/cu134")
    wheels = tmp_path / "wheels"
    for version in ("2.14.1+cu126", "2.14.1+cu134", "2.15.0+cu134", "2.14.1+rocm7.99", "2.15.0+cpu"):
        root.add(build_torch_wheel(wheels / "root", version, cuda="13.4" if "cu134" in version else None))
    root.add(build_family_wheel(wheels / "root", "torchvision", "0.29.1+cu134", "2.14.1+cu134"))
    line.add(build_torch_wheel(wheels / "cu134", "2.15.0+cu134", cuda="13.4"))
    line.add(build_family_wheel(wheels / "cu134", "torchvision", "0.29.2+cu134", "2.15.0+cu134"))
    environ = {"ENVBUILD_PYTORCH_INDEX": index_server.pytorch_base, "UV_DEFAULT_INDEX": index_server.pypi_url}
    report = run_update(deployment, client, [], environ)
    assert [n.split(":")[0] for n in report.new_lines] == [
        "new line cu134 (cuda 13.4)", "new line rocm7.99 (rocm 7.99)"]
    proposed = deployment.root / "profiles" / "cu134.toml.proposed"
    assert proposed in report.new_texts and "+++ b/profiles/cu134.toml.proposed" in report.diff(load_config(
        deployment.root))
    # Write the proposals only: the same run also proposes bounds for the built-in profiles (this fake index).
    import dataclasses

    write_updates(dataclasses.replace(report, new_texts={p: t for p, t in report.new_texts.items()
                                                         if p.suffix == ".proposed"}))
    text = proposed.read_text(encoding="utf-8")
    assert text.startswith("# PROPOSED by `envbuild profiles update` on 2026-11-25")
    assert 'url = "https://download.pytorch.org/whl/cu134"' in text and '[[arch]] row for cuda = "13.4"' in text
    assert "cu134" not in load_catalogue(load_config(deployment.root).profiles_dirs).names()  # not loaded as is
    assert 'pytorch-triton-rocm = ">=0"' in (deployment.root / "profiles" / "rocm7.99.toml.proposed").read_text()
    proposed.rename(proposed.with_suffix(""))
    profile = load_profile(deployment.root / "profiles" / "cu134.toml").validate()
    assert (profile.accelerator_version, profile.local_version) == ("13.4", "cu134")
    assert [p.as_written() for p in profile.packages] == ["torch >=2.14.1", "torchvision >=0.29.1"]
    result = run_cli(["lock", "--profile", "cu134"], env=uv_env, cwd=deployment.root)
    assert result.returncode == 0, result
    assert "torch==2.15.0+cu134" in (deployment.locks / "cu134" / "constraints.txt").read_text(encoding="utf-8")
    # A second run proposes nothing new for a line that now has a profile, and keeps an unchanged proposal.
    again = run_update(deployment, client, [], environ)
    assert [n.split(":")[0] for n in again.new_lines] == ["new line rocm7.99 (rocm 7.99)"]
    assert not any(str(p).endswith(".proposed") for p in again.new_texts)
