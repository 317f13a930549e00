"""Exports that install, diffs between profile locks, and the generated locks/README.md.

Locks come from the real CLI and the real uv against the loopback index; the exports are then
installed the way a user would: pip with `--require-hashes` into a fresh `python -m venv`, and
`uv pip sync` of the pylock into a fresh uv venv. Nothing reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from envbuild.env.export import default_filename
from envbuild.pkgs.diff import diff_locks, render_table
from envbuild.pkgs.uvlock import parse_uv_lock
from envbuild.torch.catalogue import load_catalogue
from envbuild.uv.locks_readme import write_locks_readme
from tests.support.deploy import Deployment, make_deployment, run_cli, torch_in_venv, venv_python

# Same torch release on both CUDA indexes, so the locks differ only by local label and index.
PINNED = "torch==2.7.1\ntorchvision==0.22.1\ntorchaudio==2.7.1\ntorchsde\nnumpy>=1.25.0\neinops\npyyaml\n"


@pytest.fixture
def site(tmp_path: Path, uv_env: dict[str, str]) -> Deployment:
    deployment = make_deployment(tmp_path / "site", requirements=PINNED)
    # ComfyUI's old torchaudio line: cu126's torch reaches 2.14, which has none, so the deployment leaves it out.
    config = (deployment.root / "envbuild.toml").read_text(encoding="utf-8")
    (deployment.root / "envbuild.toml").write_text(config + 'exclude = ["torchaudio"]\n', encoding="utf-8")
    for profile in ("cu126", "cu128"):
        result = run_cli(["lock", "--profile", profile], env=uv_env, cwd=deployment.root)
        assert result.returncode == 0, result
    return deployment


def _pip_install(venv: Path, requirements: Path, env: dict[str, str], index_url: str) -> dict[str, str]:
    """What the export's header says: `pip install --no-deps --require-hashes -r` into a fresh venv."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip_env = dict(env, PIP_INDEX_URL=index_url, PIP_CONFIG_FILE="/dev/null", PIP_DISABLE_PIP_VERSION_CHECK="1",
                   PIP_NO_CACHE_DIR="1", PIP_NO_INPUT="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv_python(venv)), "install", "--no-deps", "--require-hashes",
         "-r", str(requirements)],
        env=pip_env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return pip_env


def test_requirements_export_installs_with_pip_require_hashes(
    site: Deployment, uv_env: dict[str, str], index_server, tmp_path: Path
) -> None:
    before = site.snapshot_locks()
    index_server.server.clear_log()
    result = run_cli(["export", "--profile", "cu126", "--format", "requirements"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result
    assert index_server.server.requests == []  # from the committed lock: no index, no resolver
    assert site.snapshot_locks() == before
    text = (site.root / "requirements-cu126.txt").read_text()
    assert f"--extra-index-url {index_server.pytorch_base}/cu126\n" in text
    assert "cannot pin a package to an index" in text
    entries = re.split(r"\n(?=[A-Za-z0-9])", text[text.index("\n\n") + 2:].strip())
    assert len(entries) == 10 and all("--hash=sha256:" in entry for entry in entries), entries
    assert any(entry.startswith("torch==2.7.1+cu126 ") for entry in entries)

    venv = tmp_path / "pip-venv"
    _pip_install(venv, site.root / "requirements-cu126.txt", uv_env, index_server.pypi_url)
    assert torch_in_venv(venv) == ("2.7.1+cu126", "12.6")
    # pip found the torch build on the torch index the file names.
    assert index_server.server.requests_for("/whl/cu126/files/torch-2.7.1")


def test_pylock_export_syncs_with_uv(site: Deployment, uv_env: dict[str, str], index_server, tmp_path: Path,
                                     uv_bin: Path) -> None:
    result = run_cli(["export", "--profile", "cu128", "--format", "pylock"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result
    pylock = site.root / "pylock.cu128.toml"
    assert f'index = "{index_server.pytorch_base}/cu128"' in pylock.read_text()
    venv = tmp_path / "uv-venv"
    for argv in ([str(uv_bin), "venv", "-q", str(venv)],
                 [str(uv_bin), "pip", "sync", "--python", str(venv_python(venv)), str(pylock)]):
        proc = subprocess.run(argv, env=uv_env, cwd=site.root, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert torch_in_venv(venv) == ("2.7.1+cu128", "12.8")


def test_export_to_stdout_and_bad_pylock_names(site: Deployment, uv_env: dict[str, str]) -> None:
    result = run_cli(["export", "--profile", "cu126", "--format", "pylock", "-o", "-"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result
    assert result.stdout.startswith("# Exported by envbuild from locks/cu126/uv.lock (profile cu126)")
    assert 'lock-version = "1.0"' in result.stdout
    bad = run_cli(["export", "--profile", "cu126", "--format", "pylock", "-o", "cu126.toml"], env=uv_env,
                  cwd=site.root)
    assert bad.returncode == 2 and "not a PEP 751 lock file name" in bad.stderr, bad
    assert default_filename("rocm6.3", "pylock") == "pylock.rocm6-3.toml"
    missing = run_cli(["export", "--profile", "cu130", "--format", "requirements"], env=uv_env, cwd=site.root)
    assert missing.returncode == 4 and "no lock for profile cu130" in missing.stderr, missing


def test_diff_cu126_vs_cu128(site: Deployment, uv_env: dict[str, str], index_server) -> None:
    result = run_cli(["diff", "cu126", "cu128"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result
    base = index_server.pytorch_base
    assert result.stdout == textwrap.dedent(f"""\
        cu126 vs cu128: 2 of 10 packages differ

        package      cu126         cu128         differs
        -----------  ------------  ------------  ------------------
        torch        2.7.1+cu126   2.7.1+cu128   local label, index
        torchvision  0.22.1+cu126  0.22.1+cu128  local label, index

        indexes:
          torch: {base}/cu126 → {base}/cu128
          torchvision: {base}/cu126 → {base}/cu128
        """)
    as_json = run_cli(["diff", "cu126", "cu128", "--json"], env=uv_env, cwd=site.root)
    assert as_json.stdout == run_cli(["diff", "cu126", "cu128", "--json"], env=uv_env, cwd=site.root).stdout
    data = json.loads(as_json.stdout)
    assert (data["a"], data["b"], data["same"]) == ("cu126", "cu128", 8)
    torch = data["differences"][0]
    assert torch == {"name": "torch", "status": "changed", "changes": ["local", "index"],
                     "a": {"versions": ["2.7.1+cu126"], "sources": [f"{base}/cu126"]},
                     "b": {"versions": ["2.7.1+cu128"], "sources": [f"{base}/cu128"]}}
    missing = run_cli(["diff", "cu126", "cu130"], env=uv_env, cwd=site.root)
    assert missing.returncode == 4 and "no committed lock `cu130`" in missing.stderr, missing


def _lock_text(*packages: tuple[str, str, str]) -> str:
    body = "".join(f'\n[[package]]\nname = "{n}"\nversion = "{v}"\nsource = {{ registry = "{r}" }}\n'
                   for n, v, r in packages)
    return 'version = 1\n\n[[package]]\nname = "root"\nversion = "0.0.0"\nsource = { virtual = "." }\n' + body


def test_diff_kinds_on_hand_written_locks() -> None:
    pypi = "https://pypi.org/simple"
    a = parse_uv_lock(_lock_text(("numpy", "1.26.4", pypi), ("numpy", "2.1.0", pypi), ("six", "1.17.0", pypi),
                                 ("onlya", "1.0", pypi)), Path("a/uv.lock"))
    b = parse_uv_lock(_lock_text(("numpy", "2.1.0", pypi), ("six", "1.17.0", "https://mirror.test/simple"),
                                 ("onlyb", "2.0", pypi)), Path("b/uv.lock"))
    diff = diff_locks(a, b, "a", "b")
    assert [(d.name, d.changes) for d in diff.differences] == [
        ("numpy", ("version",)), ("onlya", ()), ("onlyb", ()), ("six", ("index",))]
    table = render_table(diff)
    assert table.splitlines()[2:8] == [
        "package  a              b       differs",
        "-------  -------------  ------  ---------",
        "numpy    1.26.4, 2.1.0  2.1.0   version",
        "onlya    1.0            -       only in a",
        "onlyb    -              2.0     only in b",
        "six      1.17.0         1.17.0  index",
    ]
    assert diff.same == 0
    assert render_table(diff_locks(a, a, "a", "a")) == "a and a: all 3 packages are the same\n"


def test_locks_readme(site: Deployment, index_server) -> None:
    for profile, date in (("cu126", None), ("cu128", "2025-08-01")):
        fingerprint = site.locks / profile / "envbuild-lock.json"
        data = json.loads(fingerprint.read_text())
        data.setdefault("extra", {}).pop("locked-at", None)
        if date:
            data["extra"]["locked-at"] = date
        fingerprint.write_text(json.dumps(data))
    path = write_locks_readme(site.locks, load_catalogue())
    text = path.read_text()
    assert path == site.locks / "README.md"
    base = index_server.pytorch_base
    assert f"| `cu126` | 2.7.1+cu126 | {base}/cu126 | CUDA 12.6 | 10 | unknown |" in text
    assert f"| `cu128` | 2.7.1+cu128 | {base}/cu128 | CUDA 12.8 | 10 | 2025-08-01 |" in text
    assert text.index("## cu126") < text.index("## cu128")
    assert "- inputs: `ComfyUI/requirements.txt`, `data/custom_nodes/comfyui-manager/requirements.txt`" in text
    assert "```bash\nenvbuild sync --profile cu128\n```" in text
    assert write_locks_readme(site.locks, load_catalogue()).read_text() == text  # deterministic


def test_a_requirements_export_of_a_lock_that_dropped_a_cv2_build_installs_with_pip_no_deps(
    opencv_pypi, uv_env: dict[str, str], tmp_path: Path
) -> None:
    """The override that drops cvtool's opencv-python is uv's alone: the export is the whole resolution and
    pip installs it as such (--no-deps), one cv2 provider in the environment."""
    without_audio = PINNED.replace("torchaudio==2.7.1\n", "")  # cu126's torch reaches 2.14: no torchaudio
    site = make_deployment(tmp_path / "site", requirements=without_audio + "cvtool\nopencv-python-headless\n")
    assert run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root).returncode == 0
    result = run_cli(["export", "--profile", "cu126", "--format", "requirements"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result
    text = (site.root / "requirements-cu126.txt").read_text()
    assert "# Install: pip install --no-deps --require-hashes -r <this file>" in text
    assert "\nopencv-python-headless==" in text and "\nopencv-python==" not in text
    venv = tmp_path / "pip-venv"
    pip_env = _pip_install(venv, site.root / "requirements-cu126.txt", uv_env, opencv_pypi.pypi_url)
    listed = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv_python(venv)), "list",
                             "--format", "freeze"], env=pip_env, capture_output=True, text=True, check=True).stdout
    assert "opencv-python-headless==" in listed and "opencv-python==" not in listed and "cvtool==1.0" in listed


def test_export_never_writes_over_a_file_envbuild_did_not_write(site: Deployment, uv_env: dict[str, str]) -> None:
    """`export -o envbuild.toml` replaced the deployment's settings before (trust, round two, class 5)."""
    config = site.root / "envbuild.toml"
    before = config.read_bytes()
    refused = run_cli(["export", "--profile", "cu126", "-o", "envbuild.toml", "--format", "requirements"],
                      env=uv_env, cwd=site.root)
    assert refused.returncode == 2 and "exists and envbuild did not write it" in refused.stderr, refused
    assert config.read_bytes() == before
    first = run_cli(["export", "--profile", "cu126", "--format", "requirements", "-o", "req.txt"], env=uv_env, cwd=site.root)
    again = run_cli(["export", "--profile", "cu126", "--format", "requirements", "-o", "req.txt"], env=uv_env, cwd=site.root)
    assert first.returncode == 0 and again.returncode == 0, again  # its own export is written over
    snapshot = site.root / "snap.json"
    snapshot.write_text("mine")
    refused = run_cli(["node", "export", "--manager-snapshot", "snap.json"], env=uv_env, cwd=site.root)
    assert refused.returncode == 2 and snapshot.read_text() == "mine", refused
    assert run_cli(["node", "export", "--manager-snapshot", "snap.json", "--force"], env=uv_env,
                   cwd=site.root).returncode == 0
