"""Companion packages (compiled against one torch): taken from the profile's index at the build whose torch
requirement matches the profile's torch, or refused before uv saying what a wheel would need."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomlkit

from envbuild.core.errors import ConfigError
from envbuild.torch.catalogue import builtin_profiles_dir
from envbuild.torch.companion_data import PYTORCH_INDEX, companion_table, index_companions
from envbuild.torch.profile_file import load_profile
from tests.support.catalogue import Catalogue
from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli
from tests.support.wheels import build_wheel

XFORMERS = {  # index -> (xformers version, the one torch it requires), as PyTorch's indexes carry them
    "cu126": [("0.0.29.post3", "2.6.0"), ("0.0.31", "2.7.1")],
    "cu128": [("0.0.31", "2.7.1"), ("0.0.32", "2.8.0")],
}


@pytest.fixture
def xformers_indexes(index_server: Catalogue, tmp_path: Path) -> Catalogue:
    """xformers per CUDA variant, each requiring one exact torch; PyPI's own build (another CUDA, a torch
    this profile's index does not have) planted where a node's plain `xformers` would otherwise go."""
    for variant, builds in XFORMERS.items():
        for version, torch in builds:
            index_server.torch_index(variant).add(build_wheel(
                tmp_path / "wheels" / variant, "xformers", f"{version}", requires_dist=(f"torch=={torch}",)))
    index_server.pypi.add(build_wheel(tmp_path / "wheels/pypi", "xformers", "0.0.33",
                                      requires_dist=("torch==2.9.0",)))
    return index_server


BUILTIN = "built-in"


def _site(tmp_path: Path, nodes: dict[str, str], companions: str | None = BUILTIN) -> Deployment:
    """`companions`: the built-in cu126 as it is (BUILTIN), or the deployment's own cu126 whose [companions]
    table is this text (None: no companions at all)."""
    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    if companions != BUILTIN:
        (site.root / "profiles").mkdir()
        (site.root / "profiles/cu126.toml").write_text(_cu126_with(companions))
    for name, text in nodes.items():
        site.add_node(name, text)
    return site


def _cu126_with(companions: str | None) -> str:
    """The built-in cu126, its own [companions] table replaced (comments elsewhere kept)."""
    document = tomlkit.parse((builtin_profiles_dir() / "cu126.toml").read_text())
    del document["companions"]
    text = tomlkit.dumps(document)
    return text if companions is None else f"{text}\n[companions]\n{companions}\n"


def test_a_node_asking_for_xformers_gets_the_build_for_the_profiles_torch_from_its_index(
    xformers_indexes: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    site = _site(tmp_path, {"node_x": "xformers\n"})
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    locked = locked_versions(site.root / "locks/cu126/uv.lock")
    cu126 = xformers_indexes.torch_index("cu126").url.rstrip("/")
    assert locked["torch"][0] == "2.7.1+cu126"
    assert locked["xformers"] == ("0.0.31", cu126)  # the build requiring torch==2.7.1, from the profile's index
    pyproject = tomlkit.parse((site.root / "locks/cu126/pyproject.toml").read_text())
    assert pyproject["tool"]["uv"]["sources"]["xformers"] == {"index": "pytorch-cu126"}
    fresh = dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "another-cache"))  # a full audit, no remembered verdict
    verify = run_cli(["verify", "--profile", "cu126"], env=fresh, cwd=site.root)
    assert verify.returncode == 0, verify
    listing = run_cli(["profiles"], env=env, cwd=site.root)  # where the refusal's "see `envbuild profiles`" looks
    assert "(companions: xformers >=0.0.29.post2)" in next(line for line in listing.stdout.splitlines()
                                                     if line.startswith("cu126 ")), listing
    check = run_cli(["lock", "--check", "--profile", "cu126"], env=fresh, cwd=site.root)
    assert check.returncode == 0 and "cu126: current" in check.stdout, check


def test_a_profile_without_the_companion_refuses_before_uv(
    xformers_indexes: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    site = _site(tmp_path, {"node_x": "xformers\n"}, companions=None)
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 2, result
    assert "`xformers` (node node_x): xformers is compiled against one torch and CUDA" in result.stderr, result
    assert "choose a profile that lists xformers in [companions]" in result.stderr
    assert not (site.root / "locks/cu126").exists()


def test_flash_attn_with_no_wheel_anywhere_is_refused_naming_what_a_wheel_needs(
    index_server: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    site = _site(tmp_path, {"node_fa": "einops\nflash-attn>=2.7\n"})
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 2, result
    assert "data/custom_nodes/node_fa/requirements.txt:2" in result.stderr, result
    assert "a wheel would need torch>=2.6.0,<2.15 built for CUDA 12.6 (cu126)" in result.stderr
    assert "https://github.com/Dao-AILab/flash-attention/releases" in result.stderr
    assert "--exclude-node node_fa" in result.stderr
    assert not [r for r in index_server.server.requests if "flash" in r.path]  # refused before uv asked anything


def test_companions_are_a_table_of_their_own_with_only_known_index_builds(tmp_path: Path) -> None:
    text = _cu126_with(None)
    good = tmp_path / "cu126.toml"
    good.write_text(f'{text}\n[companions]\nxformers = ">=0.0.29"\n')
    assert [c.name for c in load_profile(good).companions] == ["xformers"]
    for bad, message in (('numpy = "*"', "'numpy' is not a package PyTorch's indexes carry"),
                         ('flash-attn = "*"', "'flash-attn' is not a package PyTorch's indexes carry")):
        good.write_text(f"{text}\n[companions]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_profile(good)
    for bad, message in (('flash-attn = { index = "https://u:secret@wheels.test/simple" }', "user name or password"),
                         ('sageattention = { index = "https://wheels.test/simple" }', "PyPI does not serve"),
                         ('flash-attn = { index = "https://wheels.test/", format = "tree" }', "is not one of")):
        good.write_text(f"{text}\n[companions]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_profile(good)
    good.write_text(f'{text}\n[companions]\nflash-attn = {{ index = "https://wheels.test/fa.html", format = "flat" }}\n')
    assert [(c.name, c.format) for c in load_profile(good).companion_indexes] == [("flash-attn", "flat")]
    good.write_text(text + '\n[packages.xformers]\nversion = "*"\n')
    with pytest.raises(ConfigError, match="'xformers' is not a torch-family package"):
        load_profile(good)  # never in [packages]: that table is the torch family only


def test_every_companion_rule_has_a_source() -> None:
    table = companion_table()
    assert {"xformers", "flash-attn", "sageattention", "torchao", "torch-scatter", "triton-windows"} <= set(table)
    assert all(c.source.startswith("https://") and c.rule for c in table.values())
    assert index_companions() == {n for n, c in table.items() if c.wheels == PYTORCH_INDEX}
    assert all(c.prebuilt for c in table.values() if c.wheels == "elsewhere")


def test_profiles_update_keeps_companion_bounds_true_without_holding_torch_back(
    tmp_path: Path, index_server: Catalogue
) -> None:
    from envbuild.core.http.indexclient import HttpCache, IndexClient
    from envbuild.env.profiles_update import update_profiles
    from envbuild.settings.config import load_config
    from envbuild.torch.catalogue import load_catalogue

    index = index_server.extra_index("t-companions/cu126")
    wheels, both = tmp_path / "wheels", ("cp310-cp310-manylinux_2_28_x86_64", "cp310-cp310-win_amd64")
    for torch, vision, audio in (("2.6.0", "0.21.0", "2.6.0"), ("2.7.1", "0.22.1", "2.7.1"), ("2.8.0", "0.23.0", "2.8.0")):
        for tag in both:
            index.add(build_wheel(wheels, "torch", f"{torch}+cu126", tag=tag))
        index.add(build_wheel(wheels, "torchvision", f"{vision}+cu126", requires_dist=(f"torch=={torch}+cu126",)))
        index.add(build_wheel(wheels, "torchaudio", f"{audio}+cu126", requires_dist=(f"torch=={torch}+cu126",)))
    for version, torch in (("0.0.28", "2.5.1"), ("0.0.29.post3", "2.6.0"), ("0.0.31", "2.7.1")):
        index.add(build_wheel(wheels, "xformers", version, requires_dist=(f"torch=={torch}",)))
    site = make_deployment(tmp_path / "site")
    (site.root / "profiles").mkdir()
    envs = "[\"sys_platform == 'linux' and platform_machine == 'x86_64'\", " \
           "\"sys_platform == 'win32' and platform_machine == 'AMD64'\"]"
    (site.root / "profiles/tcomp.toml").write_text(f"""\
schema = 1
name = "tcomp"
description = "test"
accelerator = "cuda"
accelerator-version = "12.6"
local-version = "cu126"

[index]
name = "pytorch-tcomp"
url = "{index.url}"

[packages]
torch = ">=2.6.0"
torchvision = ">=0.21.0"
torchaudio = ">=2.6.0"

[companions]
xformers = ">=0.0.28"  # 0.0.28 needs torch 2.5.1, which this index does not carry

[platforms]
environments = {envs}
required-environments = {envs}
""")
    config = load_config(site.root)
    with IndexClient(HttpCache(tmp_path / "cache"), backoff=0.01, timeout=5) as client:
        report = update_profiles(config, load_catalogue(config.profiles_dirs), ["tcomp"], client, environ={},
                                 today="2026-12-03")
    (result,) = report.tables
    assert result.error is None, result
    # torch 2.8.0 has no xformers build: the family still moves on, and a note says what a node would meet.
    assert result.newest["torch"] == "2.8.0" and "xformers" not in result.newest
    assert any(n.startswith("xformers: no release within >=0.0.29.post3 is built for torch 2.8.0") for n in result.notes)
    assert [(c.package, c.new, c.table) for c in result.changes] == [("xformers", ">=0.0.29.post3", "companions")]
    (text,) = report.new_texts.values()
    assert 'xformers = ">=0.0.29.post3"' in text and "# 0.0.28 needs torch 2.5.1" in text
    written = tmp_path / "tcomp.toml"
    written.write_text(text)
    assert [c.as_written() for c in load_profile(written).companions] == ["xformers >=0.0.29.post3"]


def test_a_node_version_outside_the_profile_bound_is_a_conflict_before_uv(
    index_server: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    site = _site(tmp_path, {"node_old": "xformers<0.0.20\n"})
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 2, result
    assert "conflicting requirements for xformers" in result.stderr and "node node_old" in result.stderr, result
    assert not (site.root / "locks/cu126").exists()


def test_a_companion_reached_only_through_a_dependency_is_asked_for_directly_and_locked_again(
    xformers_indexes: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    """uv's sources apply to direct requirements only: a dependency's `xformers` resolves from PyPI (here a
    build pinning the profile's torch, so uv takes it). envbuild asks for it directly and locks again."""
    wheels = tmp_path / "wheels/pypi"
    xformers_indexes.pypi.add(build_wheel(wheels, "xformers", "0.0.31", requires_dist=("torch==2.7.1",)))
    xformers_indexes.pypi.add(build_wheel(wheels, "xtool", "1.0", requires_dist=("xformers",)))
    site = _site(tmp_path, {"node_t": "xtool\n"})
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    assert "cu126: asked for xformers directly, as profile cu126 takes it (node node_t → xtool → xformers took " \
           "xformers 0.0.31 from " in result.stdout, result
    cu126 = xformers_indexes.torch_index("cu126").url.rstrip("/")
    assert locked_versions(site.root / "locks/cu126/uv.lock")["xformers"] == ("0.0.31", cu126)
    folder = site.root / "locks/cu126"
    pyproject = tomlkit.parse((folder / "pyproject.toml").read_text())
    assert "xformers>=0.0.29.post2" in pyproject["project"]["dependencies"]  # type: ignore[operator]
    assert pyproject["tool"]["uv"]["sources"]["xformers"] == {"index": "pytorch-cu126"}  # type: ignore[index]
    fingerprint = json.loads((folder / "envbuild-lock.json").read_text())
    assert fingerprint["companions"] == ["xformers"]
    assert "- settled by envbuild after the lock: `xformers` asked for directly (a dependency's)" in \
        (site.root / "locks/README.md").read_text()
    fresh = dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "another-cache"))
    check = run_cli(["lock", "--check", "--profile", "cu126"], env=fresh, cwd=site.root)
    assert check.returncode == 0 and "cu126: current" in check.stdout, check
    again = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert again.returncode == 0 and "uv not run" in again.stdout, again
    # The fingerprint is not trusted: a companion the profile does not list is an edit, not an ask.
    fingerprint["companions"] = ["torchao", "xformers"]
    (folder / "envbuild-lock.json").write_text(json.dumps(fingerprint))
    edited = run_cli(["lock", "--check", "--profile", "cu126"], env=dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "c3")),
                     cwd=site.root)
    assert edited.returncode == 5, edited
    assert 'envbuild-lock.json asks for "torchao" as a companion, which profile cu126 does not list' in \
        edited.stdout + edited.stderr, edited


def test_a_torch_bound_package_a_dependency_brings_that_no_index_has_for_this_torch_is_refused(
    xformers_indexes: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    """The guard sees the inputs' own lines; after the lock, a dependency's xformers under a profile that does
    not list it (PyPI's build: another CUDA's) is refused the same way, naming the chain."""
    wheels = tmp_path / "wheels/pypi"
    xformers_indexes.pypi.add(build_wheel(wheels, "xformers", "0.0.31", requires_dist=("torch==2.7.1",)))
    xformers_indexes.pypi.add(build_wheel(wheels, "xtool", "1.0", requires_dist=("xformers",)))
    site = _site(tmp_path, {"node_t": "xtool\n"}, companions=None)
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 2, result
    assert "node node_t → xtool → xformers brings xformers 0.0.31, compiled against one torch and CUDA, and no " \
           "index of profile cu126 has it for this torch" in result.stderr, result
    assert "--exclude-node node_t" in result.stderr
    assert not (site.root / "locks/cu126").exists()


def test_a_prebuilt_wheel_index_of_the_profiles_own_serves_flash_attn_alone(
    index_server: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    prebuilt = index_server.extra_index("prebuilt/flash-attn")
    wheels = tmp_path / "wheels/prebuilt"
    for version, torch in (("2.8.0", "2.7.1"), ("2.8.1", "2.8.0")):
        prebuilt.add(build_wheel(wheels, "flash-attn", version, import_name="flash_attn",
                                 requires_dist=(f"torch=={torch}",)))
    prebuilt.add(build_wheel(wheels, "einops", "99.0.0"))  # planted: explicit, so never taken for einops
    site = _site(tmp_path, {"node_fa": "einops\nflash-attn>=2.7\n"},
                 companions=f'flash-attn = {{ version = ">=2.7", index = "{prebuilt.url}" }}')
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    locked = locked_versions(site.root / "locks/cu126/uv.lock")
    assert locked["flash-attn"] == ("2.8.0", prebuilt.url.rstrip("/"))  # the build for the profile's torch 2.7.1
    assert locked["einops"][0] == "0.8.0"
    fresh = dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "another-cache"))
    verify = run_cli(["verify", "--profile", "cu126"], env=fresh, cwd=site.root)
    assert verify.returncode == 0, verify
    # Routing anything else to that index is an edit the audit names.
    pyproject = site.root / "locks/cu126/pyproject.toml"
    document = tomlkit.parse(pyproject.read_text())
    document["tool"]["uv"]["sources"]["einops"] = {"index": "companion-flash-attn"}  # type: ignore[index]
    pyproject.write_text(tomlkit.dumps(document))
    edited = run_cli(["verify", "--profile", "cu126"], env=dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "c3")),
                     cwd=site.root)
    assert edited.returncode != 0 and "pins einops" in edited.stdout + edited.stderr, edited


def test_pypi_companions_come_from_pypi_only_and_name_only_per_cuda_builds(tmp_path: Path) -> None:
    document = tomlkit.parse(_cu126_with(None))
    del document["pypi"]["companions"]  # type: ignore[union-attr]
    text = tomlkit.dumps(document)
    path = tmp_path / "cu126.toml"
    for bad, message in (('xformers = { version = ">=0.0.30", index = "https://wheels.test/" }', "from PyPI only"),
                         ('flash-attn = ">=2.7"', "'flash-attn' is not a package whose PyPI releases are built"),
                         ('xformers = 3', "must be")):
        path.write_text(f"{text}\n[pypi.companions]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_profile(path)
    del document["pypi"]
    path.write_text(tomlkit.dumps(document) + '\n[pypi.companions]\nxformers = ">=0.0.30"\n')
    with pytest.raises(ConfigError, match=r"needs the \[pypi\] table's torch"):
        load_profile(path)
    path.write_text(f'{text}\n[pypi.companions]\nxformers = ">=0.0.30,<0.0.32"\n')
    profile = load_profile(path)
    assert profile.companions == () and [c.as_written() for c in profile.pypi_companions] == [
        "xformers >=0.0.30,<0.0.32"]
    variant = profile.pypi_variant()
    assert variant is not None and [c.name for c in variant.companions] == ["xformers"]
    assert variant.companion_indexes == () and variant.index_url is None


def test_builtin_profiles_take_xformers_where_their_index_or_pypi_carries_a_build() -> None:
    """Which builds exist (facebookresearch/xformers wheels.yml per tag) is in each profile's comments; here:
    every CUDA line with builds lists it, and the -pypi variants only where PyPI's build has their CUDA."""
    from envbuild.torch.catalogue import load_catalogue

    catalogue = load_catalogue([])
    listing = {name: [c.name for c in catalogue.get(name).companions] for name in catalogue.names()}
    assert {n for n, c in listing.items() if c == ["xformers"]} == {
        "cu124", "cu126", "cu128", "cu130", "rocm6.3", "cu124-pypi", "cu126-pypi", "cu128-pypi"}
    assert all(not c for n, c in listing.items() if n in ("cpu", "xpu", "mps", "nightly-cu132", "cu130-pypi"))
