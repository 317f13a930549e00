"""The catalogue of today (issue 26): which lines exist and when each ended, the torchaudio family rule, and what
ComfyUI does with comfy-kitchen and comfy-aimdo on each profile. Fast: profile files and rule tables only."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from envbuild.comfy.compiled import compiled_note
from envbuild.core.errors import ConfigError, ConflictError, RequirementFileError
from envbuild.pkgs.merging import merge
from envbuild.pkgs.requirements import Origin, SourcedRequirement
from envbuild.pkgs.uvlock import parse_uv_lock
from envbuild.settings.config import load_config
from envbuild.torch import gpu
from envbuild.torch.catalogue import load_catalogue
from envbuild.torch.family import audio_pairs, family_packages, guard_torchaudio, refuse_unpaired
from envbuild.torch.gpu.explain import recommendation_reason
from envbuild.torch.gpu.model import Gpu, Machine
from envbuild.torch.profile_file import check_profile, load_profile
from envbuild.uv.guard import constraints_text, locked_family

CATALOGUE = load_catalogue([])


def ask(text: str, source: str = "node audio-node", path: str = "custom_nodes/audio-node/requirements.txt",
        line: int = 3) -> SourcedRequirement:
    return SourcedRequirement(Requirement(text), Origin(path, line, source), text)


# --------------------------------------------------------------------------- the catalogue
def test_every_profile_of_today_is_listed_and_valid() -> None:
    names = set(CATALOGUE.names())
    assert {"cu126", "cu128", "cu130", "cu132", "cu130-pypi", "cu132-pypi", "nightly-cu132", "rocm6.3", "rocm7.2",
            "rocm7.14", "xpu", "mps", "cpu"} <= names
    assert "nightly-cu128" not in names  # its builds were removed from the nightly index
    for name in names:
        CATALOGUE.get(name).validate()


@pytest.mark.parametrize(("name", "last"), [
    ("cu124", "2.6"), ("cu126", "2.14"), ("cu128", "2.11"), ("rocm6.3", "2.9"), ("cu130", None), ("cu132", None),
    ("cu124-pypi", "2.6"), ("cu126-pypi", "2.7"), ("cu128-pypi", "2.10"), ("cu130-pypi", "2.14"),
    ("cu132-pypi", None), ("rocm7.2", None), ("xpu", None)])
def test_each_line_says_when_it_ended(name: str, last: str | None) -> None:
    assert CATALOGUE.get(name).last_torch == last


def test_cu132_pypi_is_torch_2_15_for_linux_x86_64_and_aarch64() -> None:
    profile = CATALOGUE.get("cu132-pypi")
    torch = next(p for p in profile.packages if p.name == "torch")
    assert torch.specifier.contains("2.15.0") and not torch.specifier.contains("2.14.1")
    assert profile.index_url is None and profile.base == "cu132"
    assert set(profile.environments) == set(profile.required_environments) == {
        'sys_platform == "linux" and platform_machine == "x86_64"',
        'sys_platform == "linux" and platform_machine == "aarch64"'}
    cu130 = next(p for p in CATALOGUE.get("cu130-pypi").packages if p.name == "torch")
    assert not cu130.specifier.contains("2.15.0")  # the cap moved: 2.15 on PyPI is CUDA 13.2
    assert CATALOGUE.for_cuda("13.2").name == "cu132" and CATALOGUE.for_cuda("132").name == "cu132"


def test_no_xformers_where_its_workflows_publish_no_build() -> None:
    for name in ("cu132", "cu132-pypi", "nightly-cu132", "rocm7.2", "rocm7.14"):
        assert not CATALOGUE.get(name).companions, name


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "cu999.toml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


HEAD = '''\
    schema = 1
    name = "cu999"
    accelerator = "cuda"
    accelerator-version = "99.0"
    '''


def test_last_torch_must_be_a_minor_and_bound_the_torch_range(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + 'last-torch = "2.14.1"\n[index]\nname = "x"\nurl = "https://x.test/whl"\n'
                 '[packages]\ntorch = ">=2.6.0"\n')
    with pytest.raises(ConfigError, match=r"cu999.toml:5: `last-torch = \"2.14.1\"` is not a torch minor"):
        load_profile(path)
    path = write(tmp_path, HEAD + 'last-torch = "2.14"\n[index]\nname = "x"\nurl = "https://x.test/whl"\n'
                 '[packages]\ntorch = ">=2.6.0"\n')
    with pytest.raises(ConfigError, match=r"cu999.toml:10: `packages.torch = \">=2.6.0\"` admits torch 2.15.0.dev0, "
                                          r"but `last-torch = \"2.14\"` says the line ended"):
        check_profile(load_profile(path))  # checked where a lock is planned (packaging stays off the no-op path)
    path = write(tmp_path, HEAD + 'last-torch = "2.14"\n[index]\nname = "x"\nurl = "https://x.test/whl"\n'
                 '[packages]\ntorch = ">=2.6.0,<2.15"\n')
    assert check_profile(load_profile(path)).last_torch == "2.14"


def test_pypi_platforms_are_linux_only(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + '[index]\nname = "x"\nurl = "https://x.test/whl"\n[packages]\ntorch = ">=2.6"\n'
                 '[pypi]\ntorch = ">=2.11"\n[pypi.platforms]\n'
                 'environments = ["sys_platform == \'win32\' and platform_machine == \'AMD64\'"]\n')
    with pytest.raises(ConfigError, match=r"cu999.toml:13: `pypi.platforms.environments` covers Windows AMD64"):
        load_profile(path)


# --------------------------------------------------------------------------- the torch family: torchaudio
@pytest.mark.parametrize(("name", "pairs"), [
    ("cu124", True), ("cu128", True), ("cu126-pypi", True), ("cu128-pypi", True), ("rocm6.3", True),
    ("cu126", False), ("cu130", False), ("cu130-pypi", False), ("cu132", False), ("cu132-pypi", False),
    ("nightly-cu132", False), ("rocm7.2", False), ("rocm7.14", False), ("cpu", False), ("mps", False)])
def test_torchaudio_is_in_the_family_only_where_every_torch_has_one(name: str, pairs: bool) -> None:
    profile = CATALOGUE.get(name)
    assert audio_pairs(profile) is pairs
    assert ("torchaudio" in {p.name for p in family_packages(profile)}) is pairs
    assert "torchaudio" not in {p.name for p in family_packages(profile, exclude=("torchaudio",))}


def test_an_input_asking_for_torchaudio_without_a_torch_of_its_minor_is_refused_with_the_fixes() -> None:
    with pytest.raises(RequirementFileError) as caught:
        guard_torchaudio([ask("torchaudio>=2.0")], CATALOGUE.get("cu132-pypi"), (), "envbuild.toml [lock] exclude")
    text = f"{caught.value}\n{caught.value.hint}"
    assert text.startswith("custom_nodes/audio-node/requirements.txt:3: `torchaudio>=2.0` (node audio-node)")
    assert "torchaudio's last line is 2.11" in text
    assert '[lock] exclude = ["torchaudio"]' in text and "comfy/audio.py" in text
    assert "--exclude-node audio-node" in text and "cu128 ends with 2.11" in text


def test_excluded_torchaudio_is_left_out_and_said_and_a_pairing_profile_keeps_it() -> None:
    kept, notes = guard_torchaudio([ask("torchaudio"), ask("six")], CATALOGUE.get("cu132"), ("torchaudio",),
                                   "envbuild.toml [lock] exclude")
    assert [r.text for r in kept] == ["six"]
    assert "torchaudio left out: envbuild.toml [lock] exclude excludes torchaudio" in notes[0].message
    kept, notes = guard_torchaudio([ask("torchaudio")], CATALOGUE.get("cu128"), (), "x")
    assert [r.text for r in kept] == ["torchaudio"] and notes == []


def test_lock_exclude_accepts_only_what_comfyui_runs_without(tmp_path: Path) -> None:
    (tmp_path / "envbuild.toml").write_text('[lock]\nexclude = ["TorchAudio"]\n', encoding="utf-8")
    assert load_config(tmp_path).exclude_packages == ("torchaudio",)
    (tmp_path / "envbuild.toml").write_text('[lock]\nexclude = ["torchvision"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="'torchvision' cannot be left out"):
        load_config(tmp_path)


def lock_text(*packages: tuple[str, str, str], deps: str = "") -> str:
    rows = [f'version = 1\nrequires-python = ">=3.11"\n\n[[package]]\nname = "deploy"\nversion = "0"\n'
            f'source = {{ virtual = "." }}\ndependencies = [{deps}]\n']
    for name, version, registry in packages:
        rows.append(f'[[package]]\nname = "{name}"\nversion = "{version}"\nsource = {{ registry = "{registry}" }}\n')
    return "\n".join(rows)


def test_a_torchaudio_of_another_minor_in_the_lock_is_refused_and_the_guard_pins_it() -> None:
    pypi = "https://pypi.org/simple"
    lock = parse_uv_lock(lock_text(("torch", "2.15.0", pypi), ("torchaudio", "2.11.1", pypi),
                                   ("audio-thing", "1.0", pypi), deps='{ name = "audio-thing" }'), "uv.lock")
    profile = CATALOGUE.get("cu132-pypi")
    merged = merge([ask("audio-thing")], [])
    with pytest.raises(ConflictError) as caught:
        refuse_unpaired(lock, profile, merged)
    assert "torchaudio 2.11.1" in str(caught.value) and "beside torch 2.15" in str(caught.value)
    assert '[lock] exclude = ["torchaudio"]' in (caught.value.hint or "")
    # constraints.txt pins every family member the lock holds, listed by the profile or not.
    pins = [line for line in constraints_text(profile, locked_family(profile, lock)).splitlines()
            if not line.startswith("#")]
    assert pins == ["torch==2.15.0", "torchaudio==2.11.1"]
    paired = parse_uv_lock(lock_text(("torch", "2.11.0", pypi), ("torchaudio", "2.11.0", pypi)), "uv.lock")
    refuse_unpaired(paired, CATALOGUE.get("cu128"), merge([], []))


# --------------------------------------------------------------------------- detect: ended lines
def test_a_pascal_card_gets_cu126_the_last_build_for_its_gpu() -> None:
    machine = Machine("Linux", "x86_64", (Gpu("nvidia", "NVIDIA GeForce GTX 1080", "6.1", "sm_61"),),
                      "580.82.07", "nvidia-smi", "13.0", None, ())
    profiles = [CATALOGUE.get(n) for n in CATALOGUE.names() if CATALOGUE.get(n).base is None]
    rec = gpu.recommend(machine, profiles, gpu.load_rules())
    assert (rec.profile, rec.last_torch, rec.last_for_gpu) == ("cu126", "2.14", True)
    assert recommendation_reason(rec).endswith("→ cu126, the last build for your GPU: torch ≤ 2.14.")
    blackwell = machine._replace(gpus=(Gpu("nvidia", "NVIDIA GeForce RTX 5090", "12.0", "sm_120"),),
                                 nvidia_driver="595.45.04", max_cuda="13.2")
    rec = gpu.recommend(blackwell, profiles, gpu.load_rules())
    assert (rec.profile, rec.last_torch) == ("cu132", None)


def test_an_amd_gpu_gets_the_rocm_build_whose_list_confirms_it() -> None:
    machine = Machine("Linux", "x86_64", (Gpu("amd", "AMD GPU gfx1100", None, "gfx1100"),), None, None, None,
                      None, ())
    profiles = [CATALOGUE.get(n) for n in ("rocm6.3", "rocm7.2", "rocm7.14")]
    assert gpu.recommend(machine, profiles, gpu.load_rules()).profile == "rocm7.2"


# --------------------------------------------------------------------------- ComfyUI's compiled packages
@pytest.mark.parametrize(("name", "kitchen", "aimdo"), [
    ("cu126", "turns its CUDA backend off", "without DynamicVRAM"),
    ("cu128", "turns its CUDA backend off", "comfy-aimdo: DynamicVRAM"),
    ("cu132-pypi", "its CUDA kernels", "comfy-aimdo: DynamicVRAM"),
    ("rocm6.3", "HIP extension does not load", "needs ROCm 7+"),
    ("rocm7.2", "its HIP kernels", "from ROCm 7.14"),
    ("mps", "eager PyTorch path", "without DynamicVRAM")])
def test_comfy_kitchen_and_aimdo_are_judged_never_refused(name: str, kitchen: str, aimdo: str) -> None:
    note = compiled_note(CATALOGUE.get(name), ["comfy-kitchen", "comfy-aimdo", "six"])
    assert note is not None and note.startswith(f"ComfyUI's compiled packages on {name}: ")
    kitchen_part = note[note.index("comfy-kitchen:"):]
    aimdo_part = note[note.index("comfy-aimdo:"):note.index("comfy-kitchen:")]
    assert kitchen in kitchen_part and aimdo in aimdo_part
    if name == "cu126":
        assert "for it: a CUDA 13 profile (cu130, cu132" in kitchen_part
    assert compiled_note(CATALOGUE.get(name), ["six"]) is None


def test_torch_2_15_needs_a_deployment_without_python_3_10_said_before_uv(tmp_path: Path,
                                                                           uv_env: dict[str, str]) -> None:
    from tests.support.deploy import make_deployment, run_cli

    site = make_deployment(tmp_path / "site", profiles=("cu132-pypi",), requires_python=">=3.10")
    result = run_cli(["merge", "--profile", "cu132-pypi"], env=dict(uv_env, ENVBUILD_UV="/nonexistent"),
                     cwd=site.root)
    assert result.returncode == 2, result
    assert ('envbuild.toml: `[lock] requires-python = ">=3.10"` admits Python 3.10, which profile cu132-pypi\'s '
            "torch has no wheel for (it needs Python >=3.11: ") in result.stderr
    assert "cu132.toml:" in result.stderr and 'set `[lock] requires-python = ">=3.11"`' in result.stderr


# --------------------------------------------------------------------------- loopback: the real CLI and uv
OLD_COMFYUI = "torch\ntorchsde\ntorchvision\ntorchaudio\nnumpy>=1.25.0\neinops\n"  # ComfyUI up to about v0.33


def test_torchaudio_refused_before_uv_left_out_by_exclude_and_kept_where_torch_has_one(
        tmp_path: Path, uv_env: dict[str, str]) -> None:
    from tests.support.deploy import locked_versions, make_deployment, run_cli

    site = make_deployment(tmp_path / "site", requirements=OLD_COMFYUI)
    no_uv = dict(uv_env, ENVBUILD_UV="/nonexistent")  # refused before uv runs at all
    refused = run_cli(["lock", "--profile", "cu126"], env=no_uv, cwd=site.root)
    assert refused.returncode == 2, refused
    assert refused.stderr.startswith("error: ComfyUI/requirements.txt:4: `torchaudio` (ComfyUI): profile cu126's "
                                     "torch (torch>=2.6.0,<2.15) has no torchaudio of its minor"), refused
    assert '[lock] exclude = ["torchaudio"]' in refused.stderr and "comfy/audio.py" in refused.stderr
    # cu128 ends with 2.11: its torchaudio is locked with torch, from the profile's index.
    kept = run_cli(["lock", "--profile", "cu128"], env=uv_env, cwd=site.root)
    assert kept.returncode == 0, kept
    versions = locked_versions(site.locks / "cu128" / "uv.lock")
    assert versions["torchaudio"][0].split(".")[:2] == versions["torch"][0].split(".")[:2]
    assert f"torchaudio=={versions['torchaudio'][0]}" in (site.locks / "cu128" / "constraints.txt").read_text()
    # The deployment setting leaves it out, each line said; the lock holds none.
    config = (site.root / "envbuild.toml").read_text(encoding="utf-8")
    (site.root / "envbuild.toml").write_text(config + 'exclude = ["torchaudio"]\n', encoding="utf-8")
    left_out = run_cli(["lock", "--profile", "cu126"], env=uv_env, cwd=site.root)
    assert left_out.returncode == 0, left_out
    assert ("cu126: ComfyUI/requirements.txt:4 (ComfyUI): torchaudio left out: envbuild.toml [lock] exclude "
            "excludes torchaudio") in left_out.stderr, left_out
    assert "torchaudio" not in locked_versions(site.locks / "cu126" / "uv.lock")
    assert "ComfyUI's compiled packages" not in left_out.stdout  # this ComfyUI has neither


def test_a_torchaudio_that_pins_no_torch_is_held_at_torchs_minor(tmp_path: Path, uv_env: dict[str, str],
                                                                index_server) -> None:
    """torchaudio 2.11.0 declares no torch requirement, so uv takes it beside torch 2.10; envbuild locks again
    with torchaudio held at 2.10 (envbuild/data/torch_bound.toml), never committing the pair."""
    from tests.support.deploy import locked_versions, make_deployment, run_cli
    from tests.support.wheels import build_family_wheel, build_torch_wheel, build_wheel

    index = index_server.extra_index("whl/cu999")
    wheels = tmp_path / "wheels"
    index.add(build_torch_wheel(wheels, "2.10.0+cu999", cuda="12.9"))
    index.add(build_family_wheel(wheels, "torchvision", "0.25.0+cu999", "2.10.0+cu999"))
    index.add(build_family_wheel(wheels, "torchaudio", "2.10.0+cu999", "2.10.0+cu999"))
    index.add(build_wheel(wheels, "torchaudio", "2.11.0+cu999"))  # pins nothing, as the real 2.11.0
    site = make_deployment(tmp_path / "site", requirements=OLD_COMFYUI, profiles=("cu999",))
    (site.root / "profiles").mkdir()
    (site.root / "profiles" / "cu999.toml").write_text(textwrap.dedent(f'''\
        schema = 1
        name = "cu999"
        accelerator = "cuda"
        accelerator-version = "12.9"
        local-version = "cu999"
        [index]
        name = "pytorch-cu999"
        url = "{index.url}"
        [packages]
        torch = ">=2.10.0,<2.12"
        torchvision = ">=0.25.0"
        torchaudio = ">=2.10.0,<2.12"
        [platforms]
        environments = ["sys_platform == 'linux' and platform_machine == 'x86_64'"]
        '''), encoding="utf-8")
    result = run_cli(["lock", "--profile", "cu999"], env=uv_env, cwd=site.root)
    assert result.returncode == 0, result
    versions = locked_versions(site.locks / "cu999" / "uv.lock")
    assert (versions["torch"][0], versions["torchaudio"][0]) == ("2.10.0+cu999", "2.10.0+cu999")
    assert "held torchaudio at 2.10 for torch 2.10 (uv took 2.11.0+cu999" in result.stdout, result


def test_doctor_and_detect_say_a_fitting_line_ended() -> None:
    from envbuild.torch.gpu.explain import fit_reason_with_line

    machine = Machine("Linux", "x86_64", (Gpu("nvidia", "NVIDIA GeForce GTX 1080", "6.1", "sm_61"),),
                      "580.82.07", "nvidia-smi", "13.0", None, ())
    fit = gpu.assess(machine, CATALOGUE.get("cu126"), gpu.load_rules())
    assert fit.ok and fit_reason_with_line(fit).endswith(
        "; its line ended with torch 2.14 (no newer torch is built for cu126)")
    assert "ended" not in fit_reason_with_line(gpu.assess(machine, CATALOGUE.get("cpu"), gpu.load_rules()))
