"""Would one profile's PyTorch run on this machine? A `Fit` with a code and its facts, no prose.

Pure: a `Machine` and the `Rules` in, a verdict out, so tests can describe any machine
without owning it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from envbuild.torch.gpu.model import Gpu, Machine, norm_machine, vt
from envbuild.torch.gpu.rules import NONE, Rules, arch_row, cubin_for, driver_need, family, rocm_row, support
from envbuild.torch.gpu.verdicts import (
    DRIVER_TOO_OLD,
    FITS,
    NO_ARCH_RULE,
    NO_DRIVER_RULE,
    NO_GPU,
    NO_KERNELS,
    NO_VERSION,
    ROCM_TOO_OLD,
    UNKNOWN_ACCELERATOR,
    UNKNOWN_DRIVER,
    WRONG_PLATFORM,
    Fit,
    GpuCheck,
    Target,
)


class ProfileLike(Protocol):
    """The part of a profile that detection needs (envbuild's Profile has more)."""

    @property
    def name(self) -> str: ...

    @property
    def accelerator(self) -> str: ...  # "cpu" | "cuda" | "rocm" | "xpu" | "mps"

    @property
    def accelerator_version(self) -> str | None: ...  # "12.6", "6.3", None

    @property
    def channel(self) -> str: ...  # "stable" | "nightly"

    @property
    def last_torch(self) -> str | None: ...  # the torch minor its line ended with ("2.14"); None: current


def assess(machine: Machine, profile: ProfileLike, rules: Rules, *, torch_version: str | None = None) -> Fit:
    """Would this profile's PyTorch run on this machine's GPU? The verdict and what it rests on.

    `torch_version` picks the arch row of that torch release; without it, the newest.
    """
    base = Fit(
        profile.name,
        FITS,
        profile.accelerator,
        machine.system,
        machine.machine,
        version=profile.accelerator_version,
        torch_version=torch_version,
        last_torch=profile.last_torch,
    )
    check = _CHECKS.get(profile.accelerator)
    if check is None:
        return dataclasses.replace(base, code=UNKNOWN_ACCELERATOR)
    return check(machine, base, rules)


# --------------------------------------------------------------------------- GPUs as verdicts name them
def has(machine: Machine, vendor: str) -> bool:
    return any(g.vendor == vendor for g in machine.gpus)


def unique(gpus: Iterable[Gpu]) -> list[Gpu]:
    """Eight identical GPUs are one question."""
    seen: dict[tuple[str, str | None], Gpu] = {}
    for gpu in gpus:
        seen.setdefault((gpu.name, gpu.compute_capability), gpu)
    return list(seen.values())


def known_nvidia(machine: Machine) -> list[Gpu]:
    """The NVIDIA GPUs whose compute capability is known: the only ones kernels can be checked for."""
    return unique(g for g in machine.gpus if g.vendor == "nvidia" and g.compute_capability)


def gpu_check(gpu: Gpu, rules: Rules, runs: str | None = None) -> GpuCheck:
    cc = gpu.compute_capability
    return GpuCheck(gpu.name, cc, gpu.arch, family(cc, rules) if cc else None, runs)


class ArchVerdict(NamedTuple):
    """Whether a CUDA build has kernels for every known GPU (ok None: no GPU model to check)."""

    ok: bool | None
    code: str
    gpus: tuple[GpuCheck, ...] = ()
    blocking: GpuCheck | None = None
    gap: str | None = None
    targets: tuple[Target, ...] = ()


def arch_verdict(machine: Machine, cuda: str, rules: Rules, torch_version: str | None) -> ArchVerdict:
    known = known_nvidia(machine)
    if not known:
        return ArchVerdict(None, FITS)
    row = arch_row(cuda, machine, rules, torch_version)
    if row is None:
        return ArchVerdict(False, NO_ARCH_RULE)
    targets = tuple(Target(t, family(t, rules)) for t in row.targets)
    for gpu in known:
        if cubin_for(gpu.compute_capability or "", row.targets) is None:
            return ArchVerdict(
                False, NO_KERNELS, blocking=gpu_check(gpu, rules), gap=_gap(gpu, row.targets), targets=targets
            )
    checks = []
    for gpu in known:
        cubin = cubin_for(gpu.compute_capability or "", row.targets)
        checks.append(gpu_check(gpu, rules, cubin if cubin != gpu.compute_capability else None))
    return ArchVerdict(True, FITS, gpus=tuple(checks), targets=targets)


def _gap(gpu: Gpu, targets: tuple[str, ...]) -> str:
    """Below the oldest target, a major above the newest, or in a hole between them."""
    cc = vt(gpu.compute_capability or "0.0")
    if cc < vt(min(targets, key=vt)):
        return "older"
    if cc[0] > vt(max(targets, key=vt))[0]:
        return "newer"
    return "between"


# --------------------------------------------------------------------------- per accelerator
def _check_cuda(machine: Machine, fit: Fit, rules: Rules) -> Fit:
    cuda = fit.version
    if machine.system not in ("Linux", "Windows"):
        return dataclasses.replace(fit, code=WRONG_PLATFORM)
    if not cuda:
        return dataclasses.replace(fit, code=NO_VERSION)
    if machine.nvidia_driver is None:
        seen = tuple(gpu_check(g, rules) for g in machine.gpus if g.vendor == "nvidia")
        return dataclasses.replace(fit, code=UNKNOWN_DRIVER, gpus=seen)
    need, runs = driver_need(cuda, machine.system, rules), support(machine, cuda, rules)
    fit = dataclasses.replace(
        fit,
        driver=machine.nvidia_driver,
        max_cuda=machine.max_cuda,
        support=runs,
        required_driver=need.lowest,
        full_driver=need.full,
    )
    if runs == NONE:
        return dataclasses.replace(fit, code=DRIVER_TOO_OLD if need.lowest else NO_DRIVER_RULE)
    arch = arch_verdict(machine, cuda, rules, fit.torch_version)
    return dataclasses.replace(
        fit,
        code=arch.code,
        gpus=arch.gpus,
        kernels_checked=arch.ok is True,
        blocking=arch.blocking,
        gap=arch.gap,
        targets=arch.targets,
    )


def _check_rocm(machine: Machine, fit: Fit, rules: Rules) -> Fit:
    version, installed = fit.version, machine.rocm_version
    amd = unique(g for g in machine.gpus if g.vendor == "amd" and g.arch)
    fit = dataclasses.replace(fit, installed_rocm=installed)
    if machine.system != "Linux":
        return dataclasses.replace(fit, code=WRONG_PLATFORM)
    if not version:
        return dataclasses.replace(fit, code=NO_VERSION)
    if not amd:
        return dataclasses.replace(fit, code=NO_GPU)
    if installed and vt(version)[:2] > vt(installed)[:2]:
        return dataclasses.replace(fit, code=ROCM_TOO_OLD)
    row = rocm_row(version, rules)
    targets = tuple(Target(gfx, None) for gfx in row.gfx) if row else ()
    for gpu in amd:
        if row and gpu.arch not in row.gfx:
            return dataclasses.replace(fit, code=NO_KERNELS, blocking=gpu_check(gpu, rules), targets=targets)
    checks = tuple(gpu_check(g, rules) for g in amd)
    return dataclasses.replace(fit, gpus=checks, kernels_checked=row is not None, targets=targets)


def _check_xpu(machine: Machine, fit: Fit, rules: Rules) -> Fit:
    intel = [g for g in machine.gpus if g.vendor == "intel"]
    if machine.system not in ("Linux", "Windows"):
        return dataclasses.replace(fit, code=WRONG_PLATFORM)
    if not intel:
        return dataclasses.replace(fit, code=NO_GPU)
    return dataclasses.replace(fit, gpus=(gpu_check(intel[0], rules),))  # fits, but nothing checks the model


def _check_mps(machine: Machine, fit: Fit, rules: Rules) -> Fit:
    if machine.system == "Darwin" and norm_machine(machine.machine) == "aarch64":
        return fit
    return dataclasses.replace(fit, code=WRONG_PLATFORM)


def _check_cpu(machine: Machine, fit: Fit, rules: Rules) -> Fit:
    return fit


_CHECKS: dict[str, Callable[[Machine, Fit, Rules], Fit]] = {
    "cpu": _check_cpu,
    "cuda": _check_cuda,
    "rocm": _check_rocm,
    "xpu": _check_xpu,
    "mps": _check_mps,
}
