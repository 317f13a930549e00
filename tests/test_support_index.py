"""The test-support wheels and loopback index behave like the real things, uv included."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.catalogue import TORCH_INDEXES, Catalogue
from tests.support.index import JSON_V1, IndexServer
from tests.support.wheels import (
    build_family_wheel,
    build_torch_wheel,
    build_wheel,
    read_wheel_metadata,
    record_digest,
)

if sys.version_info >= (3, 11):
    import tomllib

    def _toml(text: str) -> dict[str, Any]:
        return tomllib.loads(text)
else:  # 3.10: tomlkit is already an envbuild dependency
    import tomlkit

    def _toml(text: str) -> dict[str, Any]:
        return tomlkit.parse(text).unwrap()


UV_TIMEOUT = 120


# -- helpers -------------------------------------------------------------------
def _get(url: str, **headers: str) -> httpx.Response:
    # trust_env=False: no proxy or netrc from the machine for a loopback request.
    return httpx.get(url, headers=headers, trust_env=False, timeout=10, follow_redirects=True)


def _write_project(
    root: Path, deps: list[str], indexes: dict[str, str], sources: dict[str, str]
) -> Path:
    """A non-package uv project whose `sources` pin packages to explicit indexes."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        "[project]",
        'name = "t"',
        'version = "0"',
        'requires-python = ">=3.10"',
        f"dependencies = {json.dumps(deps)}",
        "",
        "[tool.uv]",
        "package = false",
        "",
        "[tool.uv.sources]",
        *(f'{pkg} = {{ index = "{name}" }}' for pkg, name in sources.items()),
        "",
    ]
    for name, url in indexes.items():
        lines += ["[[tool.uv.index]]", f'name = "{name}"', f'url = "{url}"', "explicit = true", ""]
    (root / "pyproject.toml").write_text("\n".join(lines))
    return root


def _uv(
    uv_bin: Path, env: dict[str, str], cwd: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(uv_bin), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=UV_TIMEOUT
    )
    if check and proc.returncode != 0:
        pytest.fail(f"uv {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _locked(project: Path) -> dict[str, dict[str, Any]]:
    lock = _toml((project / "uv.lock").read_text())
    return {pkg["name"]: pkg for pkg in lock["package"]}


# -- wheels --------------------------------------------------------------------
def test_record_hashes_sizes_and_determinism(tmp_path: Path) -> None:
    first = build_torch_wheel(tmp_path / "a", "2.7.1+cu126", cuda="12.6")
    second = build_torch_wheel(tmp_path / "b", "2.7.1+cu126", cuda="12.6")
    assert first.name == "torch-2.7.1+cu126-py3-none-any.whl"
    assert first.read_bytes() == second.read_bytes()

    with zipfile.ZipFile(first) as zf:
        names = zf.namelist()
        record_name = "torch-2.7.1+cu126.dist-info/RECORD"
        assert names[-1] == record_name
        rows = list(csv.reader(io.StringIO(zf.read(record_name).decode())))
        assert {row[0] for row in rows} == set(names)
        for path, digest, size in rows:
            if path == record_name:
                assert (digest, size) == ("", "")
                continue
            data = zf.read(path)
            assert digest == record_digest(data) and int(size) == len(data)
            assert not digest.endswith("=") and "+" not in digest and "/" not in digest[7:]
        wheel_file = zf.read("torch-2.7.1+cu126.dist-info/WHEEL").decode()
        assert "Root-Is-Purelib: true" in wheel_file and "Tag: py3-none-any" in wheel_file
        assert zf.read("torch-2.7.1+cu126.dist-info/top_level.txt") == b"torch\n"
        assert "cuda: Optional[str] = '12.6'" in zf.read("torch/version.py").decode()

    _, fields = read_wheel_metadata(first)
    assert fields["Name"] == "torch" and fields["Version"] == "2.7.1+cu126"
    assert fields["Requires-Dist"] == ["filelock", "typing-extensions"]

    fam = build_family_wheel(tmp_path, "torchvision", "0.22.1+cu126", "2.7.1+cu126")
    assert fam.name == "torchvision-0.22.1+cu126-py3-none-any.whl"
    assert read_wheel_metadata(fam)[1]["Requires-Dist"] == ["torch==2.7.1+cu126"]
    assert (
        build_wheel(tmp_path, "typing-extensions", "4.12.2").name
        == "typing_extensions-4.12.2-py3-none-any.whl"
    )


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_wheels_install(
    installer: str, tmp_path: Path, uv_bin: Path, uv_env: dict[str, str]
) -> None:
    wheels = [
        build_torch_wheel(tmp_path / "w", "2.7.1+rocm6.3", hip="6.3.42131", requires_dist=()),
        build_wheel(tmp_path / "w", "pillow", "11.0.0", import_name="PIL", requires_python=">=3.9"),
    ]
    target = tmp_path / "target"
    args = ["install", "--no-index", "--no-deps", "--target", str(target), *map(str, wheels)]
    if installer == "pip":
        pytest.importorskip("pip", reason="this test environment has no pip")
        argv = [sys.executable, "-m", "pip", "--quiet", *args]
    else:
        argv = [str(uv_bin), "pip", *args]
    proc = subprocess.run(argv, env=uv_env, capture_output=True, text=True, timeout=UV_TIMEOUT)
    assert proc.returncode == 0, proc.stderr

    probe = (
        "import torch, PIL; print(torch.__version__, torch.version.cuda, torch.version.hip, "
        "torch.cuda.is_available(), PIL.__version__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**uv_env, "PYTHONPATH": str(target)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert out == "2.7.1+rocm6.3 None 6.3.42131 False 11.0.0"
    assert (target / "torch-2.7.1+rocm6.3.dist-info" / "RECORD").is_file()


# -- index pages ---------------------------------------------------------------
def test_catalogue_contents(index_server: Catalogue) -> None:
    assert index_server.pytorch_base == f"{index_server.url}/whl"
    assert set(index_server.pypi.projects()) >= {
        "numpy",
        "six",
        "torch",
        "pytorch-triton",
        "typing-extensions",
        "pyyaml",
    }
    for variant, builds in TORCH_INDEXES.items():
        index = index_server.torch_index(variant)
        assert index.url == f"{index_server.pytorch_base}/{variant}"
        versions = {f.version for f in index.files("torch")}
        assert versions == {b.torch for b in builds}
        assert {f.version for f in index.files("numpy")} == {"99.0.0"}
    nightly = index_server.torch_index("nightly/cu132")
    assert [f.version for f in nightly.files("pytorch-triton")] == ["3.6.0+git11ec6354"]


def test_html_project_page(index_server: Catalogue) -> None:
    index = index_server.torch_index("cu126")
    resp = _get(f"{index.url}/torch/", Accept="text/html")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    page = resp.text
    entry = index.get("torch-2.7.1+cu126-py3-none-any.whl")
    assert entry is not None
    href = f'href="../files/torch-2.7.1%2Bcu126-py3-none-any.whl#sha256={entry.sha256}"'
    assert href in page
    assert 'data-requires-python="&gt;=3.9.0"' in page
    assert f'data-core-metadata="sha256={entry.metadata_sha256}"' in page
    assert f'data-dist-info-metadata="sha256={entry.metadata_sha256}"' in page
    assert "torch-2.6.0+cu126-py3-none-any.whl" in page

    meta = _get(f"{index.url}/files/torch-2.7.1%2Bcu126-py3-none-any.whl.metadata")
    assert (
        meta.status_code == 200
        and hashlib.sha256(meta.content).hexdigest() == entry.metadata_sha256
    )
    assert b"Version: 2.7.1+cu126" in meta.content
    wheel = _get(f"{index.url}/files/torch-2.7.1%2Bcu126-py3-none-any.whl")
    assert hashlib.sha256(wheel.content).hexdigest() == entry.sha256
    head = httpx.head(f"{index.url}/files/torch-2.7.1%2Bcu126-py3-none-any.whl", trust_env=False)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(entry.data)

    root = _get(f"{index.url}/").text
    assert 'href="torch/"' in root and 'href="torchvision/"' in root
    assert (
        _get(f"{index_server.pypi_url}/Typing_Extensions/").text
        == _get(f"{index_server.pypi_url}/typing-extensions/").text
    )
    assert _get(f"{index_server.pypi_url}/no-such-project/").status_code == 404
    assert _get(f"{index.url}/files/nope.whl").status_code == 404


def test_json_project_page(index_server: Catalogue) -> None:
    index = index_server.torch_index("nightly/cu132")
    resp = _get(f"{index.url}/torch/", Accept=f"{JSON_V1}, text/html;q=0.01")
    assert resp.headers["content-type"] == JSON_V1
    data = resp.json()
    assert data["meta"]["api-version"] == "1.1" and data["name"] == "torch"
    assert data["versions"] == ["2.16.0.dev20261201+cu132"]
    (file,) = data["files"]
    entry = index.get(file["filename"])
    assert entry is not None
    assert file["url"] == "../files/torch-2.16.0.dev20261201%2Bcu132-py3-none-any.whl"
    assert file["hashes"] == {"sha256": entry.sha256}
    assert file["requires-python"] == ">=3.9.0"
    assert file["core-metadata"] == {"sha256": entry.metadata_sha256}
    assert "dist-info-metadata" not in file  # PEP 714 name only: old pips crash on the legacy key
    # HTML preferred by q-value -> HTML
    assert (
        _get(f"{index.url}/torch/", Accept=f"{JSON_V1};q=0.1, text/html")
        .headers["content-type"]
        .startswith("text/html")
    )
    assert _get(f"{index.url}/", Accept=JSON_V1).json()["projects"][0] == {"name": "filelock"}


def test_hash_modes_metadata_off_and_remove(index_server: Catalogue, tmp_path: Path) -> None:
    index = index_server.extra_index("modes")
    good = index.add(build_wheel(tmp_path, "alpha", "1.0"))
    index.add(build_wheel(tmp_path, "beta", "1.0"), hash="none", metadata=False)
    wrong = index.add(build_wheel(tmp_path, "gamma", "1.0"), hash="wrong")
    assert f"#sha256={good.sha256}" in _get(f"{index.url}/alpha/").text
    beta = _get(f"{index.url}/beta/").text
    assert "#sha256" not in beta and "data-core-metadata" not in beta
    assert _get(f"{index.url}/beta/", Accept=JSON_V1).json()["files"][0]["hashes"] == {}
    assert _get(f"{index.url}/files/beta-1.0-py3-none-any.whl.metadata").status_code == 404
    gamma = _get(f"{index.url}/gamma/").text
    assert (
        wrong.listed_sha256 and wrong.listed_sha256 != wrong.sha256 and wrong.listed_sha256 in gamma
    )
    index.remove("alpha-1.0-py3-none-any.whl")
    assert _get(f"{index.url}/alpha/").status_code == 404


def test_faults_delays_and_request_log(index_server: Catalogue) -> None:
    server = index_server.server
    url = f"{index_server.pypi_url}/six/"
    server.clear_log()
    server.fail("/simple/six/", 503, times=2)
    assert [_get(url).status_code for _ in range(3)] == [503, 503, 200]
    assert server.requests_for("/simple/six/") == [("GET", "/simple/six/")] * 3

    server.fail("simple/six", 500)  # forever, until cleared
    assert _get(url).status_code == 500 and _get(url).status_code == 500
    server.clear_faults()
    assert _get(url).status_code == 200

    server.delay("/simple/einops/", 0.3)
    start = time.monotonic()
    assert _get(f"{index_server.pypi_url}/einops/").status_code == 200
    assert time.monotonic() - start >= 0.3


def test_server_survives_client_disconnects(tmp_path: Path) -> None:
    with IndexServer() as server:
        index = server.add_index("simple")
        index.add(build_wheel(tmp_path, "big", "1.0", files={"big/__init__.py": b"#" * 2_000_000}))
        host, port = server.url.removeprefix("http://").split(":")
        for _ in range(3):  # ask for a large file, then hang up mid-transfer
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(
                    b"GET /simple/files/big-1.0-py3-none-any.whl HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                sock.recv(100)
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"GET /sim")  # half a request line
        assert _get(f"{index.url}/big/").status_code == 200
        assert _get(f"{server.url}/simple").status_code == 200  # redirected to /simple/
    with pytest.raises(RuntimeError):
        _ = server.url


# -- the real uv ---------------------------------------------------------------
def test_uv_lock_and_sync_route_torch_to_its_index(
    index_server: Catalogue, uv_env: dict[str, str], uv_bin: Path, tmp_path: Path
) -> None:
    base = index_server.pytorch_base
    project = _write_project(
        tmp_path / "proj",
        ["torch", "six"],
        {"pytorch-cu126": f"{base}/cu126"},
        {"torch": "pytorch-cu126"},
    )
    index_server.server.clear_log()
    _uv(uv_bin, uv_env, project, "lock")
    pkgs = _locked(project)
    torch = pkgs["torch"]
    assert torch["version"] == "2.7.1+cu126"
    assert torch["source"] == {"registry": f"{base}/cu126"}
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", torch["wheels"][0]["hash"])
    assert "%2B" in torch["wheels"][0]["url"] or "+" in torch["wheels"][0]["url"]
    assert pkgs["six"]["version"] == "1.17.0" and pkgs["six"]["source"] == {
        "registry": index_server.pypi_url
    }
    assert (
        pkgs["filelock"]["version"] == "3.16.1"
        and pkgs["filelock"]["source"]["registry"] == index_server.pypi_url
    )
    # torch was never asked of the default index, and nothing else of the torch index.
    assert not index_server.server.requests_for("/simple/torch/")
    assert {
        r.path
        for r in index_server.server.requests_for("/whl/cu126/")
        if not r.path.startswith("/whl/cu126/files/")
    } == {"/whl/cu126/torch/"}

    _uv(uv_bin, uv_env, project, "sync", "--locked")
    py = project / ".venv" / "bin" / "python"
    out = subprocess.run(
        [
            str(py),
            "-c",
            "import torch, six; "
            "print(torch.version.cuda, torch.__version__, torch.cuda.is_available())",
        ],
        env=uv_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["12.6", "2.7.1+cu126", "False"]


def test_uv_html_only_index_hashless_file_and_recovery_after_500(
    index_server: Catalogue, uv_env: dict[str, str], uv_bin: Path, tmp_path: Path
) -> None:
    # HTML-only (like download.pytorch.org), so uv parses the PEP 503 page, `%2B` hrefs included.
    extra = index_server.extra_index("hashless", json=False)
    extra.add(build_wheel(tmp_path / "w", "nohash", "1.0+local"), hash="none")
    server = index_server.server
    server.clear_log()
    server.fail("/hashless/nohash/", 500, times=1)
    project = _write_project(tmp_path / "proj", ["nohash"], {"hl": extra.url}, {"nohash": "hl"})
    _uv(uv_bin, uv_env, project, "lock")
    locked = _locked(project)["nohash"]
    assert locked["version"] == "1.0+local"
    (wheel,) = locked["wheels"]
    assert wheel["url"] == f"{extra.url}/files/nohash-1.0%2Blocal-py3-none-any.whl"
    assert "hash" not in wheel
    # The first answer was the injected 500; uv retried and got the page.
    assert server.requests_for("/hashless/nohash/") == [("GET", "/hashless/nohash/")] * 2


def test_catalogue_reset_undoes_test_changes(index_server: Catalogue, tmp_path: Path) -> None:
    cu126 = index_server.torch_index("cu126")
    before = cu126.files()
    cu126.remove("torch-2.6.0+cu126-py3-none-any.whl")
    cu126.json = False
    index_server.extra_index("scratch").add(build_wheel(tmp_path, "scratch", "1.0"))
    index_server.server.fail("/simple/", 500)
    index_server.reset()
    assert cu126.files() == before and cu126.json
    assert "scratch" not in index_server.server.indexes
    assert _get(f"{index_server.pypi_url}/six/").status_code == 200


def test_uv_rejects_wrong_listed_hash_at_install(
    index_server: Catalogue, uv_env: dict[str, str], uv_bin: Path, tmp_path: Path
) -> None:
    extra = index_server.extra_index("wronghash")
    entry = extra.add(build_wheel(tmp_path / "w", "badhash", "1.0"), hash="wrong")
    project = _write_project(tmp_path / "proj", ["badhash"], {"wh": extra.url}, {"badhash": "wh"})
    _uv(uv_bin, uv_env, project, "lock")
    assert _locked(project)["badhash"]["wheels"][0]["hash"] == f"sha256:{entry.listed_sha256}"
    proc = _uv(uv_bin, uv_env, project, "sync", "--locked", check=False)
    assert proc.returncode != 0 and "Hash mismatch" in proc.stderr
