"""envbuild.torch.gpu: parsers on captured outputs, detection through fake tools, and the verdicts.

No GPU is needed: fake `nvidia-smi` / `rocm_agent_enumerator` scripts print the files in
tests/data/gpu/, and detection's `root` points /sys, /proc and /opt at a tmp dir.
Verdicts are asserted as codes and facts; a few golden tests pin the wording of the main cases.
"""

from __future__ import annotations

import importlib.resources
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from envbuild.core.errors import ConfigError, DetectionError
from envbuild.torch import gpu
from envbuild.torch.gpu import Fit, Gpu, GpuBuilds, GpuCheck, Machine, Recommendation, Target
from envbuild.torch.gpu import verdicts as v
from envbuild.torch.gpu.explain import fit_reason, recommendation_action, recommendation_reason
from envbuild.torch.gpu.rules import COMPAT, FULL, NONE, cubin_for

DATA = Path(__file__).parent / "data" / "gpu"
RULES_FILE = Path(__file__).parent.parent / "envbuild" / "data" / "cuda_rules.toml"
QUERY = "--query-gpu=name,driver_version,compute_cap --format=csv,noheader"
QUERY_NO_CC = "--query-gpu=name,driver_version --format=csv,noheader"

needs_sh = pytest.mark.skipif(sys.platform == "win32", reason="fake tools are /bin/sh scripts")


@dataclass(frozen=True)
class Profile:
    name: str
    accelerator: str
    accelerator_version: str | None
    channel: str = "stable"
    last_torch: str | None = None


PROFILES = (
    Profile("cpu", "cpu", None),
    Profile("cu124", "cuda", "12.4"),
    Profile("cu126", "cuda", "12.6"),
    Profile("cu128", "cuda", "12.8"),
    Profile("cu130", "cuda", "13.0"),
    Profile("nightly-cu132", "cuda", "13.2", "nightly"),
    Profile("rocm6.3", "rocm", "6.3"),
    Profile("xpu", "xpu", None),
    Profile("mps", "mps", None),
)
CUDA = ("cu124", "cu126", "cu128", "cu130")
RTX_4070S = "NVIDIA GeForce RTX 4070 SUPER"
RTX_5090 = "NVIDIA GeForce RTX 5090"
GTX_1080 = "NVIDIA GeForce GTX 1080"
V100 = "Tesla V100-SXM2-16GB"


@pytest.fixture
def rules() -> gpu.Rules:
    return gpu.load_rules()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty fake filesystem root: no /sys, /proc or /opt unless a test writes them."""
    fake = tmp_path / "root"
    fake.mkdir()
    return fake


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


def put(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


def fake_tool(bindir: Path, name: str, answers: Mapping[str, tuple[str, int]]) -> None:
    """A /bin/sh script that, per argument string, prints a data file and exits with a code."""
    cases = [f"  '{args}') cat '{DATA / datafile}'; exit {code} ;;" for args, (datafile, code) in answers.items()]
    script = "\n".join(["#!/bin/sh", 'case "$*" in', *cases, '  *) echo "unexpected: $*" >&2; exit 99 ;;', "esac", ""])
    tool = bindir / name
    tool.write_text(script, encoding="utf-8")
    tool.chmod(0o755)


def fake_nvidia_smi(bindir: Path, case: str) -> None:
    fake_tool(bindir, "nvidia-smi", {QUERY: (f"{case}.query.txt", 0), "": (f"{case}.smi.txt", 0)})


def fake_v100_470(bindir: Path) -> None:
    """An old nvidia-smi: it refuses the compute_cap field, answers without it."""
    answers = {
        QUERY: ("v100-470.query-compute_cap.txt", 2),
        QUERY_NO_CC: ("v100-470.query.txt", 0),
        "": ("v100-470.smi.txt", 0),
    }
    fake_tool(bindir, "nvidia-smi", answers)


def detect(root: Path, bindir: Path | str = "", system: str = "Linux", machine: str = "x86_64", **env: str) -> Machine:
    return gpu.detect_machine(env={"PATH": str(bindir), **env}, system=system, machine=machine, root=root)


def nvidia(name: str, cc: str | None) -> Gpu:
    return Gpu("nvidia", name, cc, "sm_" + cc.replace(".", "") if cc else None)


def linux(gpus: list[Gpu], driver: str | None, cuda: str | None, machine: str = "x86_64") -> Machine:
    source = "nvidia-smi" if driver else None
    return Machine("Linux", machine, tuple(gpus), driver, source, cuda, None, ())


def amd_machine(rocm: str | None) -> Machine:
    return Machine("Linux", "x86_64", (Gpu("amd", "AMD GPU gfx1100", None, "gfx1100"),), None, None, None, rocm, ())


def fit_of(rec: Recommendation, name: str) -> Fit:
    return next(f for f in rec.fits if f.profile == name)


def codes(rec: Recommendation) -> dict[str, str]:
    return {f.profile: f.code for f in rec.fits}


def check(name: str, cc: str, family: str, runs: str | None = None) -> GpuCheck:
    return GpuCheck(name, cc, "sm_" + cc.replace(".", ""), family, runs)


# --------------------------------------------------------------------------- package and rules file
def test_nothing_in_the_package_reads_os_environ() -> None:
    """The CLI passes its environment in; a default to os.environ would let a test leak the real one."""
    package = Path(gpu.__file__).parent
    assert not [p.name for p in package.glob("*.py") if "os.environ" in p.read_text(encoding="utf-8")]
    with pytest.raises(TypeError):
        gpu.detect_machine(system="Darwin", machine="arm64")  # type: ignore[call-arg]


def test_rules_file_is_a_package_resource_without_init() -> None:
    resource = importlib.resources.files("envbuild") / "data" / "cuda_rules.toml"
    assert resource.is_file()
    assert not (RULES_FILE.parent / "__init__.py").exists()


def test_every_rule_row_cites_a_known_source(rules: gpu.Rules) -> None:
    sources = dict(rules.sources)
    rows = (*rules.drivers, *rules.arches, *rules.rocm_arches)
    assert rows and all(row.source in sources for row in rows)
    assert all(url.startswith("https://") for url in sources.values())
    assert rules.read_on == "2026-11-25"


def test_rules_reject_a_row_without_a_known_source(tmp_path: Path) -> None:
    text = RULES_FILE.read_text(encoding="utf-8")
    broken = tmp_path / "rules.toml"
    broken.write_text(text.replace('source = "uv_backend"', 'source = "hearsay"', 1), encoding="utf-8")
    with pytest.raises(DetectionError, match="unknown sources: hearsay"):
        gpu.load_rules(broken)


def test_a_rules_file_that_is_not_toml_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "rules.toml"
    broken.write_text(RULES_FILE.read_text(encoding="utf-8") + "\n[driver\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rules\.toml: is not valid TOML"):
        gpu.load_rules(broken)


def test_python_310_reads_the_rules_with_tomlkit(monkeypatch: pytest.MonkeyPatch) -> None:
    with_tomllib = gpu.load_rules(RULES_FILE)
    monkeypatch.setattr(sys, "version_info", (3, 10, 0))
    assert gpu.load_rules(RULES_FILE) == with_tomllib


# --------------------------------------------------------------------------- parsers
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("rtx4070s-570", [(RTX_4070S, "8.9", "sm_89")]),
        ("rtx5090-575", [(RTX_5090, "12.0", "sm_120")]),
        ("mixed-1080-4090-570", [(GTX_1080, "6.1", "sm_61"), ("NVIDIA GeForce RTX 4090", "8.9", "sm_89")]),
        ("v100-470", [(V100, None, None)]),
    ],
)
def test_parse_nvidia_smi_query(case: str, expected: list[tuple[str, str | None, str | None]]) -> None:
    gpus = gpu.parse_nvidia_smi_query((DATA / f"{case}.query.txt").read_text())
    assert [(g.name, g.compute_capability, g.arch) for g in gpus] == expected
    assert all(g.vendor == "nvidia" for g in gpus)


@pytest.mark.parametrize(
    "datafile", ["garbage.txt", "no-driver.smi.txt", "v100-470.query-compute_cap.txt", "rtx4070s-570.smi.txt"]
)
def test_parse_nvidia_smi_query_rejects_anything_else(datafile: str) -> None:
    assert gpu.parse_nvidia_smi_query((DATA / datafile).read_text()) == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("rtx4070s-570", ("570.133.07", "12.8")),
        ("rtx5090-575", ("575.57.08", "12.9")),
        ("rtx5090-580", ("580.82.07", "13.0")),
        ("gtx1080-535", ("535.183.01", "12.2")),
        ("v100-470", ("470.256.02", "11.4")),
        ("no-driver", (None, None)),
    ],
)
def test_parse_nvidia_smi_header(case: str, expected: tuple[str | None, str | None]) -> None:
    assert gpu.parse_nvidia_smi_header((DATA / f"{case}.smi.txt").read_text()) == expected


def test_parse_proc_driver_version_both_kernel_modules() -> None:
    assert gpu.parse_proc_driver_version((DATA / "proc-version-550.txt").read_text()) == "550.54.14"
    assert gpu.parse_proc_driver_version((DATA / "proc-version-open-570.txt").read_text()) == "570.86.15"
    assert gpu.parse_proc_driver_version((DATA / "garbage.txt").read_text()) is None


def test_parse_rocm_agents_drops_the_cpu_agent() -> None:
    assert gpu.parse_rocm_agents((DATA / "rocm-agents-gfx1100.txt").read_text()) == ["gfx1100"]
    assert gpu.parse_rocm_agents("gfx000\ngfx90a\ngfx90a\nerror: no ROCm\n") == ["gfx90a", "gfx90a"]


# --------------------------------------------------------------------------- driver table
@pytest.mark.parametrize(
    ("driver", "system", "expected"),
    [
        ("570.133.07", "Linux", ("12.8", "toolkit")),
        ("570.26", "Linux", ("12.8", "toolkit")),
        ("570.25", "Linux", ("12.6", "toolkit")),
        ("560.28.03", "Linux", ("12.6", "toolkit")),
        ("535.183.01", "Linux", ("12.2", "toolkit")),
        ("470.256.02", "Linux", ("11.4", "toolkit")),
        ("580.82.07", "Linux", ("13.0", "toolkit")),
        ("595.45.04", "Linux", ("13.2", "toolkit")),
        ("576.02", "Windows", ("12.9", "toolkit")),
        ("440.33", "Linux", (None, "none")),
    ],
)
def test_max_cuda_for_driver(driver: str, system: str, expected: tuple[str | None, str], rules: gpu.Rules) -> None:
    assert gpu.max_cuda_for_driver(driver, system, rules) == expected


# --------------------------------------------------------------------------- binary compatibility
@pytest.mark.parametrize(
    ("cc", "targets", "cubin"),
    [
        ("8.9", ["7.5", "8.0", "8.6", "9.0"], "8.6"),  # Ada runs the Ampere sm_86 cubin
        ("6.1", ["5.0", "6.0", "7.0"], "6.0"),  # GTX 10xx runs sm_60
        ("12.1", ["10.0", "12.0"], "12.0"),  # DGX Spark runs sm_120
        ("12.0", ["9.0", "10.0"], None),  # sm_100 does not run on sm_120
        ("6.1", ["7.5", "8.0"], None),
        ("7.0", ["7.5"], None),  # a newer minor does not run on an older one
    ],
)
def test_cubin_runs_within_a_major_on_equal_or_newer_minor(cc: str, targets: list[str], cubin: str | None) -> None:
    assert cubin_for(cc, targets) == cubin


# --------------------------------------------------------------------------- assessment (pure machines)
def test_cu128_lost_volta_in_torch_2_11(rules: gpu.Rules) -> None:
    machine = linux([nvidia(V100, "7.0")], "570.133.07", "12.8")
    cu128 = PROFILES[3]
    assert gpu.assess(machine, cu128, rules, torch_version="2.10.0").code == v.FITS
    old = gpu.assess(machine, cu128, rules, torch_version="2.11.0+cu128")
    assert (old.ok, old.code, old.gap, old.torch_version) == (False, v.NO_KERNELS, "older", "2.11.0+cu128")
    assert old.blocking == check(V100, "7.0", "Volta")
    assert old.targets[0] == Target("7.5", "Turing")
    assert gpu.assess(machine, cu128, rules).code == v.NO_KERNELS  # no torch version: the newest row
    newer = gpu.assess(machine, cu128, rules, torch_version="2.12")
    assert (newer.code, newer.torch_version, newer.blocking) == (v.NO_ARCH_RULE, "2.12", None)


def test_linux_aarch64_uses_its_own_rows(rules: gpu.Rules) -> None:
    spark = linux([nvidia("NVIDIA GB10", "12.1")], "580.95.05", "13.0", machine="aarch64")
    rec = gpu.recommend(spark, PROFILES, rules)
    assert (rec.profile, rec.code, rec.covering) == ("cu130", v.FITS, ("cu128", "cu130"))
    assert fit_of(rec, "cu130").gpus == (check("NVIDIA GB10", "12.1", "Blackwell", runs="12.0"),)
    no_kernels = fit_of(rec, "cu126")
    assert (no_kernels.code, no_kernels.gap, no_kernels.blocking.name if no_kernels.blocking else None) == (
        v.NO_KERNELS, "newer", "NVIDIA GB10")
    assert fit_of(rec, "cu124").code == v.NO_ARCH_RULE  # no aarch64 row for cu124


def test_gpus_no_single_build_serves(rules: gpu.Rules) -> None:
    machine = linux([nvidia(GTX_1080, "6.1"), nvidia(RTX_5090, "12.0")], "580.82.07", "13.0")
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (rec.profile, rec.code, rec.candidates) == (None, v.NO_SINGLE_BUILD, CUDA)
    assert rec.per_gpu == (
        GpuBuilds(check(GTX_1080, "6.1", "Pascal"), ("cu124", "cu126")),
        GpuBuilds(check(RTX_5090, "12.0", "Blackwell"), ("cu128", "cu130")),
    )


def test_nightly_is_picked_only_when_asked(rules: gpu.Rules) -> None:
    machine = linux([nvidia(RTX_4070S, "8.9")], "595.45.04", "13.2")
    offered = [PROFILES[0], PROFILES[5]]  # cpu, nightly-cu132
    plain = gpu.recommend(machine, offered, rules)
    assert (plain.profile, plain.code, plain.vendor, recommendation_action(plain)) == ("cpu", v.NO_PROFILE_FOR_GPU, "nvidia", None)
    assert gpu.recommend(machine, offered, rules, include_nightly=True).profile == "nightly-cu132"
    stable = (*PROFILES, Profile("cu132", "cuda", "13.2"))  # the same CUDA as the nightly: stable wins
    assert gpu.recommend(machine, stable, rules, include_nightly=True).profile == "cu132"


def test_without_a_cpu_profile_the_fallback_asks_for_one(rules: gpu.Rules) -> None:
    rec = gpu.recommend(linux([], None, None), [PROFILES[6]], rules)
    assert (rec.profile, rec.code, recommendation_action(rec)) == (None, v.NO_GPU, "add a cpu profile")


def test_amd_with_older_rocm_says_what_to_upgrade(rules: gpu.Rules) -> None:
    rec = gpu.recommend(amd_machine("6.1.3"), PROFILES, rules)
    assert (rec.profile, rec.code, rec.vendor, rec.installed_rocm) == (None, v.NO_BUILD_FITS, "amd", "6.1.3")
    assert (rec.candidates, rec.upgrade_for, rec.required_rocm) == (("rocm6.3",), "rocm6.3", "6.3")
    assert fit_of(rec, "rocm6.3").code == v.ROCM_TOO_OLD


def test_windows_cuda_13_without_header_counts_as_minor_version_compat(root: Path, rules: gpu.Rules) -> None:
    """NVIDIA lists no Windows toolkit driver for CUDA 13.x (N/A), only the >= 580 floor."""
    env = {"ENVBUILD_CUDA_DRIVER_VERSION": "581.57", "ENVBUILD_GPU_COMPUTE_CAP": "12.0"}
    machine = detect(root, system="Windows", machine="AMD64", **env)
    assert machine.max_cuda == "12.9"
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (rec.profile, rec.support, rec.compat_newer) == ("cu128", FULL, ("cu130",))
    cu130 = fit_of(rec, "cu130")
    assert (cu130.code, cu130.support, cu130.max_cuda, cu130.full_driver) == (v.FITS, COMPAT, "12.9", None)


# --------------------------------------------------------------------------- detection + recommendation
@needs_sh
def test_rtx_4070_super_on_570_gets_cu128(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    fake_nvidia_smi(bindir, "rtx4070s-570")
    machine = detect(root, bindir)
    assert machine.gpus == (Gpu("nvidia", RTX_4070S, "8.9", "sm_89"),)
    assert (machine.nvidia_driver, machine.driver_source, machine.max_cuda) == ("570.133.07", "nvidia-smi", "12.8")
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (rec.profile, rec.code, recommendation_action(rec), rec.support) == ("cu128", v.FITS, None, FULL)
    assert (rec.covering, rec.blocked, rec.blocked_driver) == (CUDA, "cu130", "580.65.06")
    assert fit_of(rec, "cu128").gpus == (check(RTX_4070S, "8.9", "Ada Lovelace", runs="8.6"),)
    assert [f.profile for f in rec.fits] == [p.name for p in PROFILES]


@needs_sh
def test_rtx_5090_on_575_gets_cu128_not_cu130(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    fake_nvidia_smi(bindir, "rtx5090-575")
    rec = gpu.recommend(detect(root, bindir), PROFILES, rules)
    assert (rec.profile, rec.covering, rec.blocked) == ("cu128", ("cu128", "cu130"), "cu130")
    cu126 = fit_of(rec, "cu126")
    assert (cu126.code, cu126.gap, cu126.targets[-1]) == (v.NO_KERNELS, "newer", Target("9.0", "Hopper"))
    cu130 = fit_of(rec, "cu130")
    assert (cu130.code, cu130.required_driver, cu130.driver, cu130.max_cuda, cu130.support) == (
        v.DRIVER_TOO_OLD, "580.65.06", "575.57.08", "12.9", NONE)


@needs_sh
def test_rtx_5090_on_580_gets_cu130(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    fake_nvidia_smi(bindir, "rtx5090-580")
    rec = gpu.recommend(detect(root, bindir), PROFILES, rules)
    assert (rec.profile, rec.support, rec.blocked, rec.compat_newer) == ("cu130", FULL, None, ())
    assert rec.gpus == (check(RTX_5090, "12.0", "Blackwell"),)


@needs_sh
def test_gtx_1080_on_535_gets_cu126_through_minor_version_compat(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    fake_nvidia_smi(bindir, "gtx1080-535")
    rec = gpu.recommend(detect(root, bindir), PROFILES, rules)
    assert (rec.profile, rec.support, rec.full_driver, rec.max_cuda) == ("cu126", COMPAT, "560.28.03", "12.2")
    assert (fit_of(rec, "cu128").code, fit_of(rec, "cu128").gap) == (v.NO_KERNELS, "older")


@needs_sh
def test_mixed_gpus_are_served_for_the_weakest(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    fake_nvidia_smi(bindir, "mixed-1080-4090-570")
    machine = detect(root, bindir)
    assert [g.arch for g in machine.gpus] == ["sm_61", "sm_89"]
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (rec.profile, rec.covering, rec.limiting_role) == ("cu126", ("cu124", "cu126"), "weakest")
    assert rec.limiting == check(GTX_1080, "6.1", "Pascal")
    assert [g.runs for g in fit_of(rec, "cu126").gpus] == ["6.0", "8.6"]


@needs_sh
def test_driver_470_is_too_old_for_every_build(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    fake_v100_470(bindir)
    machine = detect(root, bindir)
    assert machine.gpus == (Gpu("nvidia", V100, None, None),)
    assert (machine.nvidia_driver, machine.max_cuda) == ("470.256.02", "11.4")
    assert any("cannot report compute capability" in n for n in machine.notes)
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (rec.profile, rec.code, rec.gpus, rec.covering) == (None, v.DRIVER_TOO_OLD, (), CUDA)
    assert (rec.required_driver, rec.upgrade_cuda) == ("525.60.13", "12.8")
    cu128 = fit_of(rec, "cu128")
    assert (cu128.code, cu128.required_driver, cu128.full_driver) == (v.DRIVER_TOO_OLD, "525.60.13", "570.26")


@needs_sh
def test_driver_470_with_known_volta_names_the_build_to_upgrade_for(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    fake_v100_470(bindir)
    rec = gpu.recommend(detect(root, bindir, ENVBUILD_GPU_COMPUTE_CAP="7.0"), PROFILES, rules)
    assert (rec.profile, rec.code, rec.covering) == (None, v.DRIVER_TOO_OLD, ("cu124", "cu126"))
    assert (rec.required_driver, rec.upgrade_for, rec.required_full_driver) == ("525.60.13", "cu126", "560.28.03")


@needs_sh
def test_no_nvidia_smi_and_no_kernel_module_means_cpu(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    machine = detect(root, bindir)
    assert machine.gpus == () and machine.nvidia_driver is None and machine.max_cuda is None
    assert "nvidia-smi not found on PATH: no NVIDIA GPU details" in machine.notes
    assert any("no NVIDIA kernel module found" in n for n in machine.notes)
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (rec.profile, rec.code, recommendation_action(rec)) == ("cpu", v.NO_GPU, None)


@needs_sh
def test_garbage_from_nvidia_smi_falls_back_to_proc(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    fake_tool(bindir, "nvidia-smi", {QUERY: ("garbage.txt", 0), "": ("garbage.txt", 0)})
    put(root, "/proc/driver/nvidia/version", (DATA / "proc-version-550.txt").read_text())
    machine = detect(root, bindir)
    assert (machine.nvidia_driver, machine.driver_source) == ("550.54.14", "/proc/driver/nvidia/version")
    assert machine.max_cuda == "12.4"  # from the driver table: no header to ask
    assert any(n.startswith('nvidia-smi printed something envbuild cannot read: "ERROR: ld.so') for n in machine.notes)
    assert gpu.recommend(machine, PROFILES, rules).profile == "cu124"


@needs_sh
def test_sys_module_version_comes_before_proc(bindir: Path, root: Path) -> None:
    put(root, "/sys/module/nvidia/version", (DATA / "sys-module-version-570.txt").read_text())
    put(root, "/proc/driver/nvidia/version", (DATA / "proc-version-550.txt").read_text())
    machine = detect(root, bindir)
    assert (machine.nvidia_driver, machine.driver_source, machine.max_cuda) == (
        "570.86.15", "/sys/module/nvidia/version", "12.8")


@needs_sh
def test_nvidia_smi_without_a_driver_is_a_note(bindir: Path, root: Path) -> None:
    fake_tool(bindir, "nvidia-smi", {QUERY: ("no-driver.smi.txt", 9)})
    machine = detect(root, bindir)
    assert machine.nvidia_driver is None
    assert (
        "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it couldn't communicate "
        "with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
    ) in machine.notes


@needs_sh
def test_nvidia_smi_that_hangs_is_a_note(bindir: Path, root: Path) -> None:
    tool = bindir / "nvidia-smi"
    tool.write_text("#!/bin/sh\nexec sleep 5\n", encoding="utf-8")
    tool.chmod(0o755)
    env = {"PATH": str(bindir)}
    machine = gpu.detect_machine(env=env, system="Linux", machine="x86_64", root=root, timeout=0.3)
    assert machine.nvidia_driver is None
    assert "nvidia-smi: timed out after 0.3 s" in machine.notes


def test_driver_override_without_any_gpu_info(root: Path, rules: gpu.Rules) -> None:
    machine = detect(root, ENVBUILD_CUDA_DRIVER_VERSION="550.54.14")
    assert (machine.nvidia_driver, machine.driver_source, machine.max_cuda) == (
        "550.54.14", "ENVBUILD_CUDA_DRIVER_VERSION", "12.4")
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (rec.profile, rec.gpus, rec.compat_newer, rec.blocked) == ("cu124", (), ("cu126", "cu128"), "cu130")
    cu128 = fit_of(rec, "cu128")
    assert (cu128.code, cu128.support, cu128.full_driver, cu128.kernels_checked) == (v.FITS, COMPAT, "570.26", False)


@needs_sh
def test_driver_override_replaces_the_detected_driver_and_its_cuda(bindir: Path, root: Path) -> None:
    fake_nvidia_smi(bindir, "rtx4070s-570")
    machine = detect(root, bindir, ENVBUILD_CUDA_DRIVER_VERSION="535.183.01")
    assert (machine.nvidia_driver, machine.max_cuda) == ("535.183.01", "12.2")
    assert machine.gpus[0].name == RTX_4070S


def test_compute_capability_override_simulates_gpus(root: Path, rules: gpu.Rules) -> None:
    machine = detect(root, ENVBUILD_CUDA_DRIVER_VERSION="570.133.07", ENVBUILD_GPU_COMPUTE_CAP="6.1, 8.9")
    assert [(g.name, g.arch) for g in machine.gpus] == [
        ("NVIDIA GPU 0 (from ENVBUILD_GPU_COMPUTE_CAP)", "sm_61"),
        ("NVIDIA GPU 1 (from ENVBUILD_GPU_COMPUTE_CAP)", "sm_89"),
    ]
    assert gpu.recommend(machine, PROFILES, rules).profile == "cu126"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENVBUILD_CUDA_DRIVER_VERSION", "latest"),
        ("ENVBUILD_GPU_COMPUTE_CAP", "sm_89"),
        ("ENVBUILD_AMD_GPU_ARCHITECTURE", "navi31"),
    ],
)
def test_a_malformed_override_is_a_detection_error(root: Path, variable: str, value: str) -> None:
    with pytest.raises(DetectionError, match=variable):
        detect(root, **{variable: value})


@needs_sh
def test_amd_gfx1100_with_rocm_6_3(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    fake_tool(bindir, "rocm_agent_enumerator", {"": ("rocm-agents-gfx1100.txt", 0)})
    put(root, "/opt/rocm/.info/version", (DATA / "rocm-info-version.txt").read_text())
    machine = detect(root, bindir)
    assert machine.gpus == (Gpu("amd", "AMD GPU gfx1100", None, "gfx1100"),)
    assert machine.rocm_version == "6.3.1"
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (rec.profile, rec.code, rec.vendor, rec.installed_rocm) == ("rocm6.3", v.FITS, "amd", "6.3.1")
    rocm = fit_of(rec, "rocm6.3")
    assert (rocm.code, rocm.kernels_checked, [g.arch for g in rocm.gpus]) == (v.FITS, True, ["gfx1100"])
    assert Target("gfx1100", None) in rocm.targets


def test_apple_silicon_gets_mps(rules: gpu.Rules) -> None:
    machine = gpu.detect_machine(env={}, system="Darwin", machine="arm64")
    assert machine.gpus == (Gpu("apple", "Apple silicon GPU", None, None),)
    assert machine.notes == ()
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (rec.profile, rec.code, rec.vendor) == ("mps", v.FITS, "apple")
    assert fit_of(rec, "cu128").code == v.WRONG_PLATFORM


def test_intel_mac_gets_cpu(rules: gpu.Rules) -> None:
    rec = gpu.recommend(gpu.detect_machine(env={}, system="Darwin", machine="x86_64"), PROFILES, rules)
    assert (rec.profile, rec.code) == ("cpu", v.NO_GPU)
    assert {name: code for name, code in codes(rec).items() if code != v.NO_GPU} == {
        "cpu": v.FITS, **dict.fromkeys(("cu124", "cu126", "cu128", "cu130", "nightly-cu132"), v.WRONG_PLATFORM),
        "rocm6.3": v.WRONG_PLATFORM, "xpu": v.WRONG_PLATFORM, "mps": v.WRONG_PLATFORM,
    }


def _pci_device(root: Path, slot: str, cls: str, vendor: str, device: str) -> None:
    for leaf, value in (("class", cls), ("vendor", vendor), ("device", device)):
        put(root, f"/sys/bus/pci/devices/{slot}/{leaf}", value + "\n")


@needs_sh
def test_intel_gpu_is_reported_but_xpu_is_not_picked(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    _pci_device(root, "0000:00:02.0", "0x030000", "0x8086", "0x56a0")
    _pci_device(root, "0000:00:1f.3", "0x040300", "0x8086", "0x7a50")  # audio: not a GPU
    machine = detect(root, bindir)
    assert machine.gpus == (Gpu("intel", "Intel GPU (PCI 8086:56a0)", None, None),)
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (rec.profile, rec.code, rec.vendor) == ("cpu", v.GPU_UNCONFIRMED, "intel")
    assert recommendation_action(rec) is not None and recommendation_action(rec).endswith("use profile xpu")
    xpu = fit_of(rec, "xpu")
    assert (xpu.ok, xpu.kernels_checked, xpu.gpus[0].name) == (True, False, "Intel GPU (PCI 8086:56a0)")


@needs_sh
def test_nvidia_gpu_on_pci_without_driver(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    _pci_device(root, "0000:01:00.0", "0x030000", "0x10de", "0x2684")
    machine = detect(root, bindir)
    pci_gpu = Gpu("nvidia", "NVIDIA GPU (PCI 10de:2684)", None, None)
    assert machine.gpus == (pci_gpu,)
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (rec.profile, rec.code, rec.required_driver, rec.upgrade_for) == (None, v.UNKNOWN_DRIVER, "580.65.06", "cu130")
    assert rec.gpus == (GpuCheck(pci_gpu.name, None, None, None),)
    cu126 = fit_of(rec, "cu126")
    assert (cu126.code, [g.name for g in cu126.gpus]) == (v.UNKNOWN_DRIVER, [pci_gpu.name])


def test_windows_reads_no_linux_files(root: Path) -> None:
    put(root, "/proc/driver/nvidia/version", (DATA / "proc-version-550.txt").read_text())
    machine = detect(root, system="Windows", machine="AMD64")
    assert machine.nvidia_driver is None
    assert machine.notes == ("nvidia-smi not found on PATH: no NVIDIA GPU details",)


@needs_sh
def test_windows_trusts_the_nvidia_smi_header(bindir: Path, root: Path, rules: gpu.Rules) -> None:
    fake_nvidia_smi(bindir, "rtx5090-580")
    machine = detect(root, bindir, system="Windows", machine="AMD64")
    assert (machine.max_cuda, machine.notes) == ("13.0", ())
    assert gpu.recommend(machine, PROFILES, rules).profile == "cu130"


def test_machine_to_json_has_stable_keys() -> None:
    machine = linux([nvidia(RTX_5090, "12.0")], "575.57.08", "12.9")
    assert machine.to_json() == {
        "system": "Linux",
        "machine": "x86_64",
        "gpus": [{"vendor": "nvidia", "name": RTX_5090, "compute_capability": "12.0", "arch": "sm_120"}],
        "nvidia_driver": "575.57.08",
        "driver_source": "nvidia-smi",
        "max_cuda": "12.9",
        "rocm_version": None,
        "notes": [],
    }


# --------------------------------------------------------------------------- the sentences
def test_sentences_come_from_the_verdict_alone() -> None:
    """A hand-made verdict (no machine, no rules) is worded from its fields: a hole between targets."""
    fit = Fit(
        "cu999", v.NO_KERNELS, "cuda", "Linux", "x86_64", version="12.9",
        blocking=check("NVIDIA Made-up", "7.2", "Volta"), gap="between",
        targets=(Target("7.0", "Volta"), Target("8.0", "Ampere")),
    )
    assert fit_reason(fit) == "cu999 carries no kernels for NVIDIA Made-up (Volta, sm_72): it carries sm_70, sm_80"
    rec = Recommendation(None, v.NO_KERNELS, (fit,), "Linux", "x86_64", vendor="nvidia",
                         gpus=(fit.blocking,) if fit.blocking else (), candidates=("cu999",), gap="newer")
    assert recommendation_reason(rec) == "No CUDA build offered (cu999) carries kernels for NVIDIA Made-up (Volta, sm_72)."
    assert recommendation_action(rec) == "use profile cpu: NVIDIA Made-up is newer than every CUDA build offered supports"
    cpu = Recommendation("cpu", v.NO_GPU, (), "Darwin", "x86_64")
    assert (recommendation_reason(cpu), recommendation_action(cpu)) == ("No supported GPU found → cpu.", None)
    gfx = GpuCheck("AMD GPU gfx1100", None, "gfx1100", None)
    rocm = Fit("rocm6.3", v.FITS, "rocm", "Linux", "x86_64", version="6.3", gpus=(gfx,), kernels_checked=True,
               installed_rocm="6.3.1")
    assert fit_reason(rocm) == "rocm6.3 carries kernels for gfx1100, and ROCm 6.3.1 is installed"
    amd = Recommendation("rocm6.3", v.FITS, (rocm,), "Linux", "x86_64", vendor="amd", gpus=(gfx,),
                         installed_rocm="6.3.1")
    assert recommendation_reason(amd) == (
        "AMD GPU gfx1100: ROCm 6.3.1 is installed, and rocm6.3 is the newest ROCm build that fits → rocm6.3."
    )


GOLDEN = {
    "4070S on 570: the newest build the driver runs in full": (
        linux([nvidia(RTX_4070S, "8.9")], "570.133.07", "12.8"),
        "Every CUDA build offered has kernels for NVIDIA GeForce RTX 4070 SUPER (Ada Lovelace, sm_89); "
        "driver 570.133.07 supports CUDA 12.8; cu130 would need driver ≥ 580.65.06 → cu128.",
        None,
        {"cu128": "driver 570.133.07 supports CUDA 12.8, and cu128 carries kernels for "
                  "NVIDIA GeForce RTX 4070 SUPER (Ada Lovelace, sm_89, runs the sm_86 kernels)"},
    ),
    "5090 on 575: old builds lack kernels, cu130 needs a newer driver": (
        linux([nvidia(RTX_5090, "12.0")], "575.57.08", "12.9"),
        "NVIDIA GeForce RTX 5090 (Blackwell, sm_120) needs cu128 or newer; "
        "driver 575.57.08 supports CUDA 12.9; cu130 would need driver ≥ 580.65.06 → cu128.",
        None,
        {"cu126": "cu126 carries no kernels for NVIDIA GeForce RTX 5090 (Blackwell, sm_120): "
                  "its newest target is sm_90 (Hopper)",
         "cu130": "cu130 needs NVIDIA driver ≥ 580.65.06; driver 575.57.08 supports CUDA up to 12.9"},
    ),
    "1080 on 535: minor-version compatibility": (
        linux([nvidia(GTX_1080, "6.1")], "535.183.01", "12.2"),
        "NVIDIA GeForce GTX 1080 (Pascal, sm_61) needs cu126 or older; driver 535.183.01 supports CUDA 12.2, "
        "and cu126 runs through minor-version compatibility (full support from 560.28.03) → cu126.",
        None,
        {"cu128": "cu128 carries no kernels for NVIDIA GeForce GTX 1080 (Pascal, sm_61): "
                  "its oldest target is sm_75 (Turing)"},
    ),
    "1080 and 4090: chosen for the weakest": (
        linux([nvidia(GTX_1080, "6.1"), nvidia("NVIDIA GeForce RTX 4090", "8.9")], "570.133.07", "12.8"),
        "Chosen for the weakest GPU, NVIDIA GeForce GTX 1080 (Pascal, sm_61), "
        "which needs cu126 or older; driver 570.133.07 supports CUDA 12.8 → cu126.",
        None,
        {},
    ),
    "1080 and 5090: no single build": (
        linux([nvidia(GTX_1080, "6.1"), nvidia(RTX_5090, "12.0")], "580.82.07", "13.0"),
        "No single CUDA build offered carries kernels for every GPU: NVIDIA GeForce GTX 1080 (Pascal, sm_61) "
        "needs cu126 or older; NVIDIA GeForce RTX 5090 (Blackwell, sm_120) needs cu128 or newer.",
        "hide the GPUs one build cannot serve with CUDA_VISIBLE_DEVICES and use the build the others need, "
        "or use profile cpu",
        {},
    ),
    "470 without a GPU model: too old for everything": (
        linux([nvidia(V100, None)], "470.256.02", "11.4"),
        "Driver 470.256.02 supports CUDA up to 11.4, too old for every CUDA build offered "
        "(cu124, cu126, cu128, cu130).",
        "upgrade the NVIDIA driver to ≥ 525.60.13 (the minimum for CUDA 12 builds) and "
        "run envbuild detect again so it can check the GPU architecture, or use profile cpu",
        {"cu128": "cu128 needs NVIDIA driver ≥ 525.60.13 (≥ 570.26 for full CUDA 12.8 support); "
                  "driver 470.256.02 supports CUDA up to 11.4"},
    ),
    "driver only (550): newer builds by compatibility": (
        Machine("Linux", "x86_64", (), "550.54.14", "ENVBUILD_CUDA_DRIVER_VERSION", "12.4", None, ()),
        "No NVIDIA GPU model was detected, so kernels were not checked; driver 550.54.14 supports CUDA 12.4; "
        "cu126 and cu128 would run only through minor-version compatibility; "
        "cu130 would need driver ≥ 580.65.06 → cu124.",
        None,
        {"cu128": "driver 550.54.14 supports CUDA 12.4 in full and CUDA 12.8 through minor-version compatibility "
                  "(full support from 570.26), and no NVIDIA GPU model is known, so its kernels were not checked"},
    ),
    "AMD gfx1100 with an older ROCm: what to upgrade": (
        amd_machine("6.1.3"),
        "No ROCm profile fits AMD GPU gfx1100: rocm6.3 is newer than the installed ROCm 6.1.3.",
        "upgrade ROCm to ≥ 6.3 to use rocm6.3, or use profile cpu",
        {},
    ),
}


@pytest.mark.parametrize("case", list(GOLDEN))
def test_golden_sentences(case: str, rules: gpu.Rules) -> None:
    """The wording of the main cases, as `envbuild detect` prints it."""
    machine, reason, action, fit_reasons = GOLDEN[case]
    rec = gpu.recommend(machine, PROFILES, rules)
    assert (recommendation_reason(rec), recommendation_action(rec)) == (reason, action)
    assert {name: fit_reason(fit_of(rec, name)) for name in fit_reasons} == fit_reasons


@pytest.mark.parametrize("version", ["2.7.1+cu126", "2.9.0.dev20250801+cu128", "2.10.0", "1!2.0", "2.09.1",
                                     "v2.8.0rc1", "2.6.0.post1+rocm6.3", "2.5.1+CU124", "2.4.0+cpu.cxx11.abi",
                                     "2.8.0+cu128-local_build"])
def test_release_and_local_label_read_by_hand_agree_with_packaging(version: str) -> None:
    """The no-op sync reads these without importing packaging; they must say what packaging says."""
    from packaging.version import Version

    from envbuild.torch.fitting import _public
    from envbuild.torch.installed import TorchBuild

    assert _public(version) == Version(version).base_version
    build = TorchBuild(version, None, None, None, "", "3.11")
    assert build.local_label == Version(version).local
