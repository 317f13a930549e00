"""The values detection produces (Gpu, Machine) and pure parsers of the tools' output.

Nothing here touches the machine: the parsers take text a tool printed or a file held, so
tests feed them captured outputs. Version helpers live here because every layer compares
NVIDIA's dotted versions the same way.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

# The overrides a user (or a test) sets to replace what detection found.
ENV_DRIVER = "ENVBUILD_CUDA_DRIVER_VERSION"
ENV_CC = "ENVBUILD_GPU_COMPUTE_CAP"
ENV_AMD = "ENVBUILD_AMD_GPU_ARCHITECTURE"

# Where detection looks; messages name them, so they are values, not detection internals.
SYS_DRIVER = "/sys/module/nvidia/version"
PROC_DRIVER = "/proc/driver/nvidia/version"
ROCM_VERSION = "/opt/rocm/.info/version"
ROCM_ENUMERATOR = "/opt/rocm/bin/rocm_agent_enumerator"
PCI_DEVICES = "/sys/bus/pci/devices"

DRIVER_RE = re.compile(r"\d{3,}\.\d+(?:\.\d+)?")
CC_RE = re.compile(r"\d{1,2}\.\d")
GFX_RE = re.compile(r"gfx[0-9a-f]+")
_QUERY_ROW = re.compile(
    r"(?P<name>.+?),\s*(?P<driver>\d{3,}\.\d+(?:\.\d+)?)(?:,\s*(?P<cc>\d{1,2}\.\d|\[N/A\]|N/A))?"
)


class Gpu(NamedTuple):
    """One GPU as envbuild sees it; fields it could not learn are None."""

    vendor: str  # "nvidia" | "amd" | "intel" | "apple"
    name: str
    compute_capability: str | None  # NVIDIA "8.9"
    arch: str | None  # "sm_89", "gfx1100", ...


class Machine(NamedTuple):
    """What detection found, plus notes on every source that could not be read."""

    system: str  # "Linux" | "Windows" | "Darwin"
    machine: str  # "x86_64" | "AMD64" | "arm64" | "aarch64"
    gpus: tuple[Gpu, ...]
    nvidia_driver: str | None
    driver_source: str | None
    max_cuda: str | None  # nvidia-smi's "CUDA Version" when shown, else from the driver table
    rocm_version: str | None
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Stable keys for scripts (`envbuild detect --json`)."""
        return {
            "system": self.system,
            "machine": self.machine,
            "gpus": [
                {
                    "vendor": g.vendor,
                    "name": g.name,
                    "compute_capability": g.compute_capability,
                    "arch": g.arch,
                }
                for g in self.gpus
            ],
            "nvidia_driver": self.nvidia_driver,
            "driver_source": self.driver_source,
            "max_cuda": self.max_cuda,
            "rocm_version": self.rocm_version,
            "notes": list(self.notes),
        }


def nvidia_gpu(name: str, cc: str | None) -> Gpu:
    """An NVIDIA GPU; its arch ("sm_89") follows from the compute capability."""
    arch = "sm_" + cc.replace(".", "") if cc else None
    return Gpu("nvidia", name, cc, arch)


# --------------------------------------------------------------------------- parsers
def parse_query_rows(text: str) -> list[tuple[str, str, str | None]]:
    """(name, driver, compute capability) per line; [] if any line is not such a row.

    All-or-nothing, because a half-understood answer would mislead more than none.
    """
    rows: list[tuple[str, str, str | None]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _QUERY_ROW.fullmatch(line.strip())
        if match is None:
            return []
        cc = match["cc"] if match["cc"] and CC_RE.fullmatch(match["cc"]) else None
        rows.append((match["name"].strip(), match["driver"], cc))
    return rows


def parse_nvidia_smi_query(text: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=name,driver_version[,compute_cap] --format=csv`."""
    return [nvidia_gpu(name, cc) for name, _driver, cc in parse_query_rows(text)]


def parse_nvidia_smi_header(text: str) -> tuple[str | None, str | None]:
    """(driver, CUDA) from plain `nvidia-smi`; CUDA is the newest the driver fully supports."""
    driver = re.search(r"Driver Version:\s*(\d+\.\d+(?:\.\d+)?)", text)
    cuda = re.search(r"CUDA Version:\s*(\d+\.\d+)", text)
    return (driver[1] if driver else None, cuda[1] if cuda else None)


def parse_proc_driver_version(text: str) -> str | None:
    """Driver from /proc/driver/nvidia/version (classic or open kernel module wording)."""
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            match = re.search(r"\s(\d{3,}\.\d+(?:\.\d+)?)\s", line + " ")
            return match[1] if match else None
    return None


def parse_rocm_agents(text: str) -> list[str]:
    """gfx names from `rocm_agent_enumerator`, one per GPU; gfx000 is the CPU agent."""
    names = [line.strip() for line in text.splitlines()]
    return [n for n in names if GFX_RE.fullmatch(n) and n != "gfx000"]


def parse_rocm_version(text: str) -> str | None:
    """"6.3.1-48" from /opt/rocm/.info/version -> "6.3.1"."""
    match = re.match(r"\s*(\d+\.\d+(?:\.\d+)?)", text)
    return match[1] if match else None


def first_line(text: str) -> str:
    """The first non-blank line (cut to 200 characters): what a note quotes of a tool's output."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else "(no output)"


# --------------------------------------------------------------------------- versions
def vt(text: str) -> tuple[int, ...]:
    """'570.133.07' -> (570, 133, 7); '2.11.0+cu128' -> (2, 11, 0). NVIDIA's parts are integers."""
    match = re.match(r"\d+(?:\.\d+)*", text.strip())
    if match is None:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in match.group().split("."))


def at_least(version: str, minimum: str) -> bool:
    return vt(version) >= vt(minimum)


def norm_machine(machine: str) -> str:
    """One name per CPU architecture: the rule table says x86_64/aarch64, Windows says AMD64."""
    lowered = machine.lower()
    if lowered in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if lowered in ("aarch64", "arm64"):
        return "aarch64"
    return lowered
