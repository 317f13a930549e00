"""The lock audit: hashes on every installable file, indexes and sources as the profile says.

Unit tests drive `envbuild.uv.audit` on hand-written lock text; the end-to-end tests make real locks
with the real uv against the loopback index (one torch index serving a wheel without a hash) and
run `envbuild verify` / `envbuild export` as a user would.
"""

from __future__ import annotations

import itertools
import json
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.markers import Marker

from envbuild.core.errors import LockIntegrityError
from envbuild.uv.audit import audit_texts, require_clean
from envbuild.uv.audit_scope import markers_disjoint
from tests.support.deploy import Deployment, make_deployment, run_cli

MIRROR = "http://mirror.test/whl"
ENV = {"ENVBUILD_PYTORCH_INDEX": MIRROR}
PYPI = "https://pypi.org/simple"
SHA = "sha256:" + "ab" * 32
LINUX = "sys_platform == 'linux' and platform_machine == 'x86_64'"
WINDOWS = "sys_platform == 'win32' and platform_machine == 'AMD64'"

CU126_PYPROJECT = textwrap.dedent(f"""\
    [project]
    name = "comfyui-env-cu126"
    version = "0.0.0"
    requires-python = ">=3.10"
    dependencies = ["torch>=2.6.0", "torchaudio>=2.6.0", "torchvision>=0.21.0"]

    [tool.uv]
    package = false
    environments = ["{LINUX}", "{WINDOWS}"]
    required-environments = ["{LINUX}", "{WINDOWS}"]

    [tool.uv.sources]
    torch = {{index = "pytorch-cu126"}}
    torchaudio = {{index = "pytorch-cu126"}}
    torchvision = {{index = "pytorch-cu126"}}

    [[tool.uv.index]]
    name = "pytorch-cu126"
    url = "{MIRROR}/cu126"
    explicit = true
    """)


def _package(name: str, version: str, registry: str = PYPI, *, hash: str | None = SHA,
             deps: str = "", extra: str = "") -> str:
    digest = f', hash = "{hash}"' if hash else ""
    return textwrap.dedent(f"""
        [[package]]
        name = "{name}"
        version = "{version}"
        source = {{ registry = "{registry}" }}
        {extra}
        dependencies = [{deps}]
        wheels = [{{ url = "{registry}/files/{name}-{version}-py3-none-any.whl"{digest}, size = 1 }}]
        """)


def _lock(*packages: str, root_deps: str) -> str:
    head = textwrap.dedent(f"""\
        version = 1
        revision = 3
        requires-python = ">=3.10"
        supported-markers = ["{LINUX}", "{WINDOWS}"]

        [[package]]
        name = "comfyui-env-cu126"
        version = "0.0.0"
        source = {{ virtual = "." }}
        dependencies = [{root_deps}]
        """)
    return head + "".join(packages)


FAMILY = "".join(_package(n, v, f"{MIRROR}/cu126") for n, v in
                 (("torch", "2.7.1+cu126"), ("torchaudio", "2.7.1+cu126"), ("torchvision", "0.22.1+cu126")))
FAMILY_DEPS = '{ name = "torch" }, { name = "torchaudio" }, { name = "torchvision" },'


def _audit(pyproject: str, lock: str, profile: str = "cu126", env: dict[str, str] = ENV):  # type: ignore[no-untyped-def]
    """The audit as `trust` runs it: indexes and bases as the deployment resolves them from `env`."""
    from envbuild.deploy.deployment import load_deployment

    deployment = load_deployment(Path("/nonexistent-envbuild-test"), env)
    chosen = deployment.catalogue.get(profile)
    return audit_texts(pyproject, lock, chosen, folder=Path("locks") / profile,
                       indexes=deployment.indexes(chosen)[:3], pytorch_bases=deployment.pytorch_bases())


def test_clean_lock_passes() -> None:
    report = _audit(CU126_PYPROJECT, _lock(FAMILY, root_deps=FAMILY_DEPS))
    assert report.tampering == () and report.unhashed == ()
    assert (report.packages, report.artifacts) == (3, 3)
    require_clean(report)


def test_only_files_the_profile_can_install_are_audited() -> None:
    lock = _lock(
        FAMILY,
        _package("macos-only", "1.0", hash=None, deps='{ name = "mac-helper" }'),
        _package("mac-helper", "1.0", hash=None),
        _package("forked", "1.0", hash=None, extra="resolution-markers = [\"sys_platform == 'darwin'\"]"),
        _package("forked", "2.0", extra=f'resolution-markers = ["{LINUX}"]'),
        _package("numpy", "1.26.4", hash="md5:0123", extra="resolution-markers = [\"python_full_version < '3.11'\"]"),
        _package("orphan", "1.0", hash=None),
        textwrap.dedent("""
            [[package]]
            name = "gitdep"
            version = "0.1"
            source = { git = "https://example.test/gitdep?rev=abc#abc" }
            """),
        root_deps=FAMILY_DEPS + """
            { name = "macos-only", marker = "sys_platform == 'darwin'" },
            { name = "forked", version = "1.0", source = { registry = "https://pypi.org/simple" } },
            { name = "forked", version = "2.0", source = { registry = "https://pypi.org/simple" } },
            { name = "numpy", marker = "python_full_version < '3.11'" },
            { name = "gitdep" },""",
    )
    report = _audit(CU126_PYPROJECT, lock)
    flagged = {(a.package, a.version, a.kind) for a in report.unhashed}
    # A python-version fork is installable (md5 is not sha256); git cannot be hashed; a package nothing
    # points at is audited because nothing proves it is not installed.
    assert flagged == {("numpy", "1.26.4", "wheel"), ("gitdep", "0.1", "git"), ("orphan", "1.0", "wheel")}
    # Reached only through a darwin-only edge (also transitively), or forked for darwin only: skipped.
    assert set(report.skipped) == {"macos-only 1.0", "mac-helper 1.0", "forked 1.0"}
    with pytest.raises(LockIntegrityError, match=r"no sha256: numpy 1\.26\.4: wheel .*hash is not sha256 \(md5\)"):
        require_clean(report)
    require_clean(report, allow_unhashed=True)


@pytest.mark.parametrize(("a", "b", "disjoint"), [
    ("sys_platform == 'linux'", "sys_platform == 'darwin'", True),
    ("sys_platform != 'linux'", LINUX, True),
    ("platform_machine == 'AMD64'", LINUX, True),
    ("(sys_platform == 'darwin' or sys_platform == 'win32') and platform_machine == 'arm64'", LINUX, True),
    ("sys_platform == 'linux' and python_version >= '3.11'", LINUX, False),
    ("python_full_version < '3.11'", LINUX, False),
    ("'linux' in sys_platform", "sys_platform == 'darwin'", False),  # not understood: never claimed disjoint
    ("sys_platform == 'darwin' or platform_machine == 'x86_64'", LINUX, False),
])
def test_markers_disjoint(a: str, b: str, disjoint: bool) -> None:
    assert markers_disjoint(a, b) is disjoint
    assert markers_disjoint(b, a) is disjoint


_VALUES = {"sys_platform": ["linux", "darwin", "win32", "other"], "platform_machine": ["x86_64", "arm64", "other"],
           "python_version": ["3.10", "3.11", "3.12"]}
_ATOMS = st.one_of(
    st.builds(lambda v, op, x: f"{v} {op} '{x}'", st.sampled_from(["sys_platform", "platform_machine"]),
              st.sampled_from(["==", "!="]), st.sampled_from(["linux", "darwin", "x86_64", "arm64"])),
    st.builds(lambda op, x: f"python_version {op} '{x}'", st.sampled_from([">=", "<", "=="]),
              st.sampled_from(["3.10", "3.11", "3.12"])),
)
_MARKERS = st.recursive(_ATOMS, lambda inner: st.builds(lambda a, op, b: f"({a}) {op} ({b})", inner,
                                                         st.sampled_from(["and", "or"]), inner), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(_MARKERS, _MARKERS)
def test_markers_said_disjoint_never_hold_together(a: str, b: str) -> None:
    """Soundness: skipping a package is only safe if no environment satisfies both markers."""
    if not markers_disjoint(a, b):
        return
    for values in itertools.product(*_VALUES.values()):
        env = dict(zip(_VALUES, values, strict=True))
        env["python_full_version"] = env["python_version"] + ".0"
        assert not (Marker(a).evaluate(env) and Marker(b).evaluate(env)), (a, b, env)


@pytest.mark.parametrize(("old", "new", "message"), [
    (f'url = "{MIRROR}/cu126"', 'url = "http://evil.test/whl/cu126"',
     rf"index `pytorch-cu126` points at http://evil.test/whl/cu126, but this deployment locks profile cu126 "
     rf"against {MIRROR}/cu126"),
    ("explicit = true\n", "", r"not `explicit = true`"),
    ('torch = {index = "pytorch-cu126"}\n', "", r"torch is no longer pinned to index `pytorch-cu126`"),
    ('torch = {index = "pytorch-cu126"}', 'torch = {index = "pytorch-cu126"}\nnumpy = {index = "pytorch-cu126"}',
     r"pins numpy, which is not in profile cu126's torch family"),
    ("explicit = true\n", 'explicit = true\n\n[[tool.uv.index]]\nname = "extra"\nurl = "http://extra.test/simple"\n',
     r"`extra` \(http://extra.test/simple\) was added"),
    ("package = false\n", 'package = false\nindex-strategy = "unsafe-best-match"\n', r"sets `index-strategy`"),
    (f'environments = ["{LINUX}", "{WINDOWS}"]', f'environments = ["{LINUX}"]', r"environments = .* profile cu126 says"),
])
def test_pyproject_edits_away_from_the_profile(old: str, new: str, message: str) -> None:
    assert old in CU126_PYPROJECT
    report = _audit(CU126_PYPROJECT.replace(old, new, 1), _lock(FAMILY, root_deps=FAMILY_DEPS))
    assert any(re.search(message, t) for t in report.tampering), report.tampering
    with pytest.raises(LockIntegrityError, match="edited away from the profile"):
        require_clean(report, allow_unhashed=True)


def test_lock_taking_packages_from_the_wrong_index() -> None:
    lock = _lock(_package("torch", "99.0.0"), _package("torchaudio", "2.7.1+cu126", f"{MIRROR}/cu126"),
                 _package("torchvision", "0.22.1+cu126", f"{MIRROR}/cu126"),
                 _package("numpy", "99.0.0", f"{MIRROR}/cu126"), root_deps=FAMILY_DEPS + '{ name = "numpy" },')
    report = _audit(CU126_PYPROJECT, lock)
    assert any(f"torch 99.0.0 from {PYPI}, not from profile cu126's index" in t for t in report.tampering)
    assert any("numpy 99.0.0 from the PyTorch index" in t for t in report.tampering)


@pytest.mark.parametrize("name", ["pytorch-triton", "torchtriton"])
def test_a_pytorch_only_name_a_dependency_brings_from_pypi_is_refused(name: str) -> None:
    """Trust, round two, class 6: a planted `pytorch-triton 99.0.0` on PyPI reached the lock through a
    node's dependency, and `verify` said current."""
    planted = _package(name, "99.0.0")
    node_dep = _package("some-node-dep", "1.0", deps=f'{{ name = "{name}" }}')
    lock = _lock(FAMILY, node_dep, planted, root_deps=FAMILY_DEPS + '{ name = "some-node-dep" },')
    report = _audit(CU126_PYPROJECT, lock)
    assert any(f"{name} 99.0.0 from {PYPI}: only PyTorch's own indexes publish {name}" in t
               for t in report.tampering), report.tampering


def test_pypi_profile_takes_no_pytorch_index() -> None:
    mps = textwrap.dedent("""\
        [project]
        name = "comfyui-env-mps"
        version = "0.0.0"
        dependencies = ["torch>=2.6.0"]

        [tool.uv]
        package = false
        environments = ["sys_platform == 'darwin' and platform_machine == 'arm64'"]
        required-environments = ["sys_platform == 'darwin' and platform_machine == 'arm64'"]
        """)
    clean = _lock(_package("torch", "2.8.0"), _package("torchaudio", "2.8.0"), _package("torchvision", "0.23.0"),
                  root_deps=FAMILY_DEPS)
    assert _audit(mps, clean, "mps").tampering == ()
    edited = mps + '\n[tool.uv.sources]\ntorch = {index = "pt"}\n\n[[tool.uv.index]]\nname = "pt"\n' \
                   f'url = "{MIRROR}/cpu"\nexplicit = true\n'
    from_index = clean.replace(f'name = "torch"\nversion = "2.8.0"\nsource = {{ registry = "{PYPI}" }}',
                               f'name = "torch"\nversion = "2.8.0"\nsource = {{ registry = "{MIRROR}/cpu" }}')
    assert from_index != clean
    tampering = _audit(edited, from_index, "mps").tampering
    assert any("`pt` (http://mirror.test/whl/cpu) is present, but profile mps" in t for t in tampering)
    assert any("pins torch; profile mps takes every package from the default index" in t for t in tampering)
    assert any(f"uv.lock takes torch 2.8.0 from {MIRROR}/cpu" in t for t in tampering)


# -- end to end: real locks, the real uv, the CLI ---------------------------------------------------

def _hashless_index(index_server, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    """A copy of the cu126 torch index whose torchvision wheel is listed without a hash."""
    index = index_server.extra_index("hashless/cu126")
    for entry in index_server.torch_index("cu126").files():
        wheel = tmp_path / "hashless-wheels" / entry.filename
        wheel.parent.mkdir(exist_ok=True)
        wheel.write_bytes(entry.data)
        index.add(wheel, hash="none" if entry.project == "torchvision" else "good")
    return f"{index_server.url}/hashless"


def _locked(tmp_path: Path, env: dict[str, str]) -> Deployment:
    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    return site


def test_verify_passes_a_fresh_lock(tmp_path: Path, uv_env: dict[str, str]) -> None:
    site = _locked(tmp_path, uv_env)
    result = run_cli(["verify", "--all"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result
    assert ("cu126: current (locks/cu126: 11 packages, 11 files, all with sha256; indexes and sources as the "
            "profile says)") in result.stdout
    rows = json.loads(run_cli(["verify", "--json"], env=uv_env, cwd=site.root).stdout)
    assert [(r["profile"], r["ok"], r["unhashed"], r["tampering"]) for r in rows] == [("cu126", True, [], [])]


def test_hashless_wheel_is_caught_by_verify_and_export(tmp_path: Path, uv_env: dict[str, str], index_server) -> None:
    env = dict(uv_env, ENVBUILD_PYTORCH_INDEX=_hashless_index(index_server, tmp_path))
    site = _locked(tmp_path, env)
    assert 'name = "torchvision"' in (site.locks / "cu126" / "uv.lock").read_text()

    result = run_cli(["verify", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 5, result
    assert "cu126: unhashed (locks/cu126): current, but some files have no sha256" in result.stderr
    assert "no sha256: torchvision 0.22.1+cu126 wheel torchvision-0.22.1+cu126-py3-none-any.whl (no hash)" in result.stderr
    row = json.loads(run_cli(["verify", "--json"], env=env, cwd=site.root).stdout)[0]
    assert row["ok"] is False and [u["package"] for u in row["unhashed"]] == ["torchvision"]

    allowed = run_cli(["verify", "--allow-unhashed"], env=env, cwd=site.root)
    assert allowed.returncode == 0, allowed
    assert "warning: no sha256: torchvision" in allowed.stderr

    before = site.snapshot_locks()
    refused = run_cli(["export", "--profile", "cu126", "--format", "requirements"], env=env, cwd=site.root)
    assert refused.returncode == 5, refused
    assert "cannot be trusted" in refused.stderr and "--allow-unhashed" in refused.stderr
    assert not (site.root / "requirements-cu126.txt").exists()
    assert site.snapshot_locks() == before


def test_hand_edited_lock_folder_is_caught(tmp_path: Path, uv_env: dict[str, str], index_server) -> None:
    site = _locked(tmp_path, uv_env)
    pyproject = site.locks / "cu126" / "pyproject.toml"
    original = pyproject.read_text()
    index_url = f"{index_server.pytorch_base}/cu126"
    edits = [
        (f'url = "{index_url}"', 'url = "http://127.0.0.1:9/whl/cu126"',
         f"index `pytorch-cu126` points at http://127.0.0.1:9/whl/cu126, but this deployment locks profile cu126 "
         f"against {index_url}"),
        ("explicit = true\n", "", "index `pytorch-cu126` is not `explicit = true`"),
        ('torch = {index = "pytorch-cu126"}\n', "", "torch is no longer pinned to index `pytorch-cu126`"),
    ]
    for old, new, message in edits:
        assert old in original
        pyproject.write_text(original.replace(old, new, 1))
        result = run_cli(["verify", "--profile", "cu126"], env=uv_env, cwd=site.root)
        assert result.returncode == 5, result
        assert "cu126: edited (locks/cu126)" in result.stderr, result
        assert f"  {message}" in result.stderr, result
        assert "pyproject.toml differs from what envbuild wrote" in result.stderr
        exported = run_cli(["export", "--profile", "cu126", "--format", "pylock", "--allow-unhashed"],
                           env=uv_env, cwd=site.root)
        assert exported.returncode == 5 and message in exported.stderr, exported
    pyproject.write_text(original)

    # The same folder checked with another PyTorch base than it was locked with: stale, both URLs named.
    moved = dict(uv_env, ENVBUILD_PYTORCH_INDEX="http://127.0.0.1:9/whl")
    result = run_cli(["verify", "--profile", "cu126"], env=moved, cwd=site.root)
    assert result.returncode == 4, result
    assert "cu126: stale (locks/cu126)" in result.stderr
    assert f"the torch index changed ({index_url} → http://127.0.0.1:9/whl/cu126)" in result.stderr

    lock = site.locks / "cu126" / "uv.lock"
    text = lock.read_text()
    numpy_from_pypi = f'name = "numpy"\nversion = "2.1.0"\nsource = {{ registry = "{index_server.pypi_url}" }}'
    assert numpy_from_pypi in text
    lock.write_text(text.replace(numpy_from_pypi, numpy_from_pypi.replace(index_server.pypi_url, index_url)))
    result = run_cli(["verify", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert result.returncode == 5, result
    assert f"uv.lock takes numpy 2.1.0 from the PyTorch index {index_url}" in result.stderr
    assert "uv.lock differs from what `uv lock` wrote" in result.stderr
