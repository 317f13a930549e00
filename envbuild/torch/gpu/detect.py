"""Looking at the machine: nvidia-smi, /sys, /proc, ROCm, the PCI bus and the ENVBUILD_* overrides.

Detection reads the machine only through `envbuild.core.runner.run`, plain file reads under `root`
and the `env` mapping it is given (not the process environment), and a source that fails (missing tool,
timeout, garbage) becomes a note instead of an error: a machine without a GPU is a normal machine.

Order, after uv's (astral-sh/uv crates/uv-torch/src/accelerator.rs), except that nvidia-smi
goes first because only it names the GPUs and their compute capability:
NVIDIA: nvidia-smi, then /sys/module/nvidia/version, then /proc/driver/nvidia/version;
AMD: rocm_agent_enumerator (+ /opt/rocm/.info/version); Intel: PCI scan of /sys/bus/pci.
ENVBUILD_CUDA_DRIVER_VERSION, ENVBUILD_GPU_COMPUTE_CAP and ENVBUILD_AMD_GPU_ARCHITECTURE
replace what was detected (containers without a GPU, tests).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from envbuild.core.errors import CommandFailed, DetectionError
from envbuild.core.runner import run
from envbuild.torch.gpu.model import (
    CC_RE,
    DRIVER_RE,
    ENV_AMD,
    ENV_CC,
    ENV_DRIVER,
    GFX_RE,
    PCI_DEVICES,
    PROC_DRIVER,
    ROCM_ENUMERATOR,
    ROCM_VERSION,
    SYS_DRIVER,
    Gpu,
    Machine,
    first_line,
    norm_machine,
    nvidia_gpu,
    parse_nvidia_smi_header,
    parse_proc_driver_version,
    parse_query_rows,
    parse_rocm_agents,
    parse_rocm_version,
)
from envbuild.torch.gpu.rules import load_rules, max_cuda_for_driver

_PCI_VENDORS = {0x10DE: "nvidia", 0x1002: "amd", 0x8086: "intel"}


@dataclass
class _Probe:
    """One detection run: where it looks (env's PATH, files under root) and what it noted."""

    env: Mapping[str, str]
    root: Path
    timeout: float
    notes: list[str] = field(default_factory=list)

    def path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def read(self, path: str) -> str | None:
        return _read_file(self.path(path))

    def which(self, tool: str) -> str | None:
        """Look only on the PATH of `env`, so a test's PATH is the whole world."""
        return shutil.which(tool, path=self.env.get("PATH", ""))

    def run_tool(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str] | None:
        """Run a probe; a timeout or a tool that cannot start is a note, not an error."""
        label = Path(argv[0]).name
        try:
            return run(argv, capture=True, timeout=self.timeout, check=False)
        except CommandFailed as exc:
            self.notes.append(f"{label}: {exc.output_tail}")
        except OSError as exc:
            self.notes.append(f"{label} could not be started: {exc.strerror or exc}")
        return None


def detect_machine(
    *,
    env: Mapping[str, str],
    system: str | None = None,
    machine: str | None = None,
    root: Path = Path("/"),
    timeout: float = 10.0,
) -> Machine:
    """Look at this machine (or the one `system`/`machine` name); never fails for lack of a GPU.

    `env` is the environment the CLI was started with (its PATH and ENVBUILD_* overrides);
    `root` and `timeout` let tests stand in a fake filesystem and a hanging tool.
    Raises DetectionError only for an ENVBUILD_* override that is not a valid value.
    """
    system = system or platform.system()
    machine = machine or platform.machine()
    if system == "Darwin":
        return _darwin_machine(machine)
    probe = _Probe(env, root, timeout)
    gpus, driver, source, cuda = _detect_nvidia(probe, system)
    amd, rocm_version = _detect_amd(probe, system)
    pci = _pci_gpus(probe) if system == "Linux" else []
    gpus += amd
    gpus += [g for g in pci if g.vendor == "intel"]
    if not any(g.vendor == "nvidia" for g in gpus):
        gpus = [g for g in pci if g.vendor == "nvidia"] + gpus
    if not amd:
        gpus += [g for g in pci if g.vendor == "amd"]
    if driver and cuda is None:
        cuda, _kind = max_cuda_for_driver(driver, system, load_rules())
    return Machine(system, machine, tuple(gpus), driver, source, cuda, rocm_version, tuple(probe.notes))


def _darwin_machine(machine: str) -> Machine:
    """macOS: no NVIDIA/ROCm stack to ask; Apple silicon has the MPS GPU."""
    gpus = (Gpu("apple", "Apple silicon GPU", None, None),) if norm_machine(machine) == "aarch64" else ()
    return Machine("Darwin", machine, gpus, None, None, None, None, ())


# --------------------------------------------------------------------------- NVIDIA
def _detect_nvidia(probe: _Probe, system: str) -> tuple[list[Gpu], str | None, str | None, str | None]:
    """(gpus, driver, driver source, CUDA from nvidia-smi's header) after the overrides."""
    gpus, driver, cuda = _query_nvidia_smi(probe)
    source = "nvidia-smi" if driver else None
    if driver is None and system == "Linux":
        driver, source = _driver_from_files(probe)
    override = probe.env.get(ENV_DRIVER, "").strip()
    if override:
        if not DRIVER_RE.fullmatch(override):
            raise DetectionError(
                f"{ENV_DRIVER}={override!r} is not an NVIDIA driver version", hint="use the form 550.54.14"
            )
        driver, source, cuda = override, ENV_DRIVER, None
    return _apply_cc_override(gpus, probe), driver, source, cuda


def _query_nvidia_smi(probe: _Probe) -> tuple[list[Gpu], str | None, str | None]:
    exe = probe.which("nvidia-smi")
    if exe is None:
        probe.notes.append("nvidia-smi not found on PATH: no NVIDIA GPU details")
        return [], None, None
    fields = "name,driver_version,compute_cap"
    proc = probe.run_tool([exe, f"--query-gpu={fields}", "--format=csv,noheader"])
    if proc is not None and proc.returncode != 0 and "compute_cap" in proc.stdout + proc.stderr:
        probe.notes.append(
            "this nvidia-smi cannot report compute capability (no compute_cap field; newer "
            f"drivers have it): GPU kernels not checked; set {ENV_CC} to check them"
        )
        fields = "name,driver_version"
        proc = probe.run_tool([exe, f"--query-gpu={fields}", "--format=csv,noheader"])
    if proc is None:
        return [], None, None
    if proc.returncode != 0:
        said = first_line(proc.stdout + "\n" + proc.stderr)
        probe.notes.append(f"nvidia-smi failed (exit {proc.returncode}): {said}")
        return [], None, None
    rows = parse_query_rows(proc.stdout)
    if not rows:
        probe.notes.append(f"nvidia-smi printed something envbuild cannot read: {first_line(proc.stdout)!r}")
        return [], None, None
    return [nvidia_gpu(n, cc) for n, _d, cc in rows], rows[0][1], _nvidia_smi_cuda(exe, probe)


def _nvidia_smi_cuda(exe: str, probe: _Probe) -> str | None:
    """The "CUDA Version" in plain nvidia-smi's header: the driver's own word on its CUDA."""
    proc = probe.run_tool([exe])
    if proc is None:
        return None
    _driver, cuda = parse_nvidia_smi_header(proc.stdout)
    if proc.returncode != 0 or cuda is None:
        probe.notes.append("nvidia-smi showed no CUDA Version; the newest CUDA comes from the driver table")
        return None
    return cuda


def _read_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _driver_from_files(probe: _Probe) -> tuple[str | None, str | None]:
    """The loaded kernel module's version: uv's fallbacks when nvidia-smi says nothing."""
    text = probe.read(SYS_DRIVER)
    if text is not None:
        if DRIVER_RE.fullmatch(text.strip()):
            return text.strip(), SYS_DRIVER
        probe.notes.append(f"{SYS_DRIVER} holds {first_line(text)!r}, not a driver version")
    text = probe.read(PROC_DRIVER)
    if text is not None:
        driver = parse_proc_driver_version(text)
        if driver:
            return driver, PROC_DRIVER
        probe.notes.append(f"{PROC_DRIVER} has no driver version envbuild can read")
    else:
        probe.notes.append(f"no NVIDIA kernel module found ({SYS_DRIVER}, {PROC_DRIVER})")
    return None, None


def _apply_cc_override(gpus: list[Gpu], probe: _Probe) -> list[Gpu]:
    """ENVBUILD_GPU_COMPUTE_CAP ("6.1" or "6.1,8.9") sets the compute capability per GPU."""
    raw = probe.env.get(ENV_CC, "").strip()
    if not raw:
        return gpus
    values = [v.strip() for v in raw.split(",")]
    if not all(CC_RE.fullmatch(v) for v in values):
        raise DetectionError(f"{ENV_CC}={raw!r} is not a list of compute capabilities", hint="e.g. 8.9 or 6.1,8.9")
    if gpus and len(values) == 1:
        values = values * len(gpus)
    if gpus and len(values) == len(gpus):
        return [nvidia_gpu(g.name, v) for g, v in zip(gpus, values, strict=True)]
    if gpus:
        probe.notes.append(f"{ENV_CC} lists {len(values)} GPUs, nvidia-smi {len(gpus)}: the override wins")
    return [nvidia_gpu(f"NVIDIA GPU {i} (from {ENV_CC})", v) for i, v in enumerate(values)]


# --------------------------------------------------------------------------- AMD and the PCI bus
def _detect_amd(probe: _Probe, system: str) -> tuple[list[Gpu], str | None]:
    """AMD GPUs by gfx name (what ROCm builds are keyed by) and the installed ROCm version."""
    raw = probe.env.get(ENV_AMD, "").strip()
    if raw:
        archs = [a.strip() for a in raw.split(",")]
        if not all(GFX_RE.fullmatch(a) for a in archs):
            raise DetectionError(f"{ENV_AMD}={raw!r} is not a gfx name", hint="e.g. gfx1100")
    elif system == "Linux":
        archs = _rocm_agents(probe)
    else:
        archs = []
    version_text = probe.read(ROCM_VERSION) if system == "Linux" else None
    rocm = parse_rocm_version(version_text) if version_text else None
    return [Gpu("amd", f"AMD GPU {a}", None, a) for a in archs], rocm


def _rocm_agents(probe: _Probe) -> list[str]:
    exe = probe.which("rocm_agent_enumerator")
    if exe is None and probe.path(ROCM_ENUMERATOR).is_file():
        exe = str(probe.path(ROCM_ENUMERATOR))
    if exe is None:
        probe.notes.append("rocm_agent_enumerator not found: no AMD GPU details")
        return []
    proc = probe.run_tool([exe])
    if proc is None:
        return []
    if proc.returncode != 0:
        probe.notes.append(f"rocm_agent_enumerator failed (exit {proc.returncode}): {first_line(proc.stderr)}")
        return []
    return parse_rocm_agents(proc.stdout)


def _pci_gpus(probe: _Probe) -> list[Gpu]:
    """Display-class PCI devices (0x03xxxx) of NVIDIA, AMD and Intel; uv scans so for Intel."""
    try:
        devices = sorted(probe.path(PCI_DEVICES).iterdir())
    except OSError:
        return []
    found: list[Gpu] = []
    for device in devices:
        ids = [_read_file(device / leaf) for leaf in ("class", "vendor", "device")]
        try:
            cls, vendor, dev = (int(text.strip(), 16) for text in ids if text is not None)
        except ValueError:
            continue
        if (cls >> 16) == 0x03 and vendor in _PCI_VENDORS:
            label = _PCI_VENDORS[vendor]
            name = f"{label.upper() if label != 'intel' else 'Intel'} GPU (PCI {vendor:04x}:{dev:04x})"
            found.append(Gpu(label, name, None, None))
    return found
