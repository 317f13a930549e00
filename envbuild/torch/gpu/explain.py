"""The sentences: each verdict's code and facts, said in words a non-expert follows.

Built from a `Fit` or `Recommendation` alone (no machine, no rules), so what is printed can
never say more than what was decided. `envbuild detect`, sync's fit warning and doctor print these.
"""

from __future__ import annotations

from collections.abc import Sequence

from envbuild.torch.gpu.model import PROC_DRIVER, ROCM_VERSION, SYS_DRIVER, norm_machine, vt
from envbuild.torch.gpu.rules import COMPAT
from envbuild.torch.gpu.verdicts import (
    CPU_FALLBACKS,
    DRIVER_TOO_OLD,
    FITS,
    GPU_UNCONFIRMED,
    NO_ARCH_RULE,
    NO_BUILD_FITS,
    NO_DRIVER_RULE,
    NO_GPU,
    NO_KERNELS,
    NO_PROFILE_FOR_GPU,
    NO_SINGLE_BUILD,
    NO_VERSION,
    ROCM_TOO_OLD,
    UNKNOWN_ACCELERATOR,
    UNKNOWN_DRIVER,
    WRONG_PLATFORM,
    Fit,
    GpuCheck,
    Recommendation,
    Target,
)


def label(gpu: GpuCheck) -> str:
    """'NVIDIA GeForce GTX 1080 (Pascal, sm_61)': the name a user knows plus what decides."""
    if not gpu.compute_capability:
        return gpu.name
    family = f"{gpu.family}, " if gpu.family else ""
    runs = f", runs the {_sm(gpu.runs)} kernels" if gpu.runs else ""
    return f"{gpu.name} ({family}{gpu.arch}{runs})"


def _sm(target: str) -> str:
    return "sm_" + target.replace(".", "")


def _platform(system: str, machine: str) -> str:
    return f"{system} {norm_machine(machine)}"


# --------------------------------------------------------------------------- one profile
def fit_reason(fit: Fit) -> str:
    """One sentence (without the final period) on why this profile does or does not run here."""
    if fit.code == UNKNOWN_ACCELERATOR:
        return f"envbuild knows no accelerator {fit.accelerator!r}"
    if fit.code == NO_VERSION:
        return f"profile {fit.profile} names no {'CUDA' if fit.accelerator == 'cuda' else 'ROCm'} version"
    explain = {"cpu": _cpu_fit, "cuda": _cuda_fit, "rocm": _rocm_fit, "xpu": _xpu_fit, "mps": _mps_fit}
    return explain[fit.accelerator](fit)


def fit_reason_with_line(fit: Fit) -> str:
    """fit_reason, and for a build that fits but whose line ended, that no newer torch will come for it."""
    reason = fit_reason(fit)
    if fit.ok and fit.last_torch is not None:
        reason += f"; its line ended with torch {fit.last_torch} (no newer torch is built for {fit.profile})"
    return reason


def _cpu_fit(fit: Fit) -> str:
    return "the CPU build runs on any machine (no GPU is used)"


def _mps_fit(fit: Fit) -> str:
    if fit.ok:
        return "Apple silicon Mac: PyTorch from PyPI uses its GPU through MPS"
    return f"mps needs macOS on Apple silicon (arm64); this is {fit.system} {fit.machine}"


def _xpu_fit(fit: Fit) -> str:
    if fit.code == WRONG_PLATFORM:
        return f"PyTorch publishes no xpu builds for {fit.system}"
    if fit.code == NO_GPU:
        where = " (envbuild looks for one on Linux only)" if fit.system == "Windows" else ""
        return f"no Intel GPU found{where}"
    return (
        f"{fit.gpus[0].name} found, but envbuild cannot tell whether PyTorch's xpu build supports it "
        "(it supports Intel Arc, Core Ultra with Arc graphics and Data Center GPU Max, "
        "with Intel's GPU driver installed)"
    )


def _rocm_fit(fit: Fit) -> str:
    if fit.code == WRONG_PLATFORM:
        return "PyTorch's ROCm builds are for Linux only"
    if fit.code == NO_GPU:
        return "ROCm reports no AMD GPU (rocm_agent_enumerator)"
    if fit.code == ROCM_TOO_OLD:
        return f"{fit.profile} is newer than the installed ROCm {fit.installed_rocm}"
    if fit.code == NO_KERNELS and fit.blocking is not None:
        has = ", ".join(t.name for t in fit.targets)
        return f"{fit.profile} carries no kernels for {fit.blocking.arch}: it has {has}"
    names = " and ".join(g.arch or g.name for g in fit.gpus)
    kernels = f"carries kernels for {names}" if fit.kernels_checked else f"was not checked for {names} (no gfx list)"
    rocm = f"ROCm {fit.installed_rocm} is installed" if fit.installed_rocm else ""
    rocm = rocm or f"the ROCm version is unknown ({ROCM_VERSION})"
    return f"{fit.profile} {kernels}, and {rocm}"


def _cuda_fit(fit: Fit) -> str:
    if fit.code == WRONG_PLATFORM:
        return f"PyTorch publishes no CUDA builds for {fit.system}"
    if fit.code == UNKNOWN_DRIVER:
        seen = " although an NVIDIA GPU is on the PCI bus" if fit.gpus else ""
        return f"no NVIDIA driver found{seen}"
    if fit.code == NO_DRIVER_RULE:
        return f"cuda_rules.toml has no driver minimum for CUDA {fit.version} on {fit.system}"
    if fit.code == DRIVER_TOO_OLD:
        full = _full_in_brackets(fit.full_driver, fit.required_driver, fit.version)
        has = f"driver {fit.driver} {_has(fit.max_cuda)}"
        return f"{fit.profile} needs NVIDIA driver ≥ {fit.required_driver}{full}; {has}"
    if fit.code == NO_ARCH_RULE:
        torch = f" for torch {fit.torch_version}" if fit.torch_version else ""
        return (
            f"cuda_rules.toml has no architecture list for {fit.profile}{torch} "
            f"on {_platform(fit.system, fit.machine)}"
        )
    if fit.code == NO_KERNELS and fit.blocking is not None:
        return f"{fit.profile} carries no kernels for {label(fit.blocking)}: {_where(fit.gap, fit.targets)}"
    driver = f"driver {fit.driver} supports CUDA {fit.max_cuda}"
    if fit.support == COMPAT:
        full = f" (full support from {fit.full_driver})" if fit.full_driver else ""
        driver += f" in full and CUDA {fit.version} through minor-version compatibility{full}"
    if not fit.kernels_checked:
        return f"{driver}, and no NVIDIA GPU model is known, so its kernels were not checked"
    return f"{driver}, and {fit.profile} carries kernels for {' and '.join(label(g) for g in fit.gpus)}"


def _where(gap: str | None, targets: Sequence[Target]) -> str:
    """Why a GPU finds no kernel among a build's targets."""
    if gap == "older":
        oldest = min(targets, key=lambda t: vt(t.name))
        return f"its oldest target is {_sm(oldest.name)} ({oldest.family})"
    if gap == "newer":
        newest = max(targets, key=lambda t: vt(t.name))
        return f"its newest target is {_sm(newest.name)} ({newest.family})"
    return "it carries " + ", ".join(_sm(t.name) for t in targets)


def _has(max_cuda: str | None) -> str:
    return f"supports CUDA up to {max_cuda}" if max_cuda else "is older than every CUDA release envbuild knows"


def _full_in_brackets(full: str | None, lowest: str | None, cuda: str | None) -> str:
    return f" (≥ {full} for full CUDA {cuda} support)" if full not in (None, lowest) else ""


# --------------------------------------------------------------------------- the recommendation
def recommendation_reason(rec: Recommendation) -> str:
    """One sentence, capitalised and ending with a period: the choice and what decided it."""
    text = _REASONS[rec.code](rec)
    if rec.code in CPU_FALLBACKS:
        text += f" → {rec.profile}." if rec.profile else ", and no cpu profile is offered"
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def recommendation_action(rec: Recommendation) -> str | None:
    """What to do when no GPU build was picked (None when there is nothing to do)."""
    action = _ACTIONS.get(rec.code, lambda _rec: None)(rec)
    if rec.code in CPU_FALLBACKS and rec.profile is None:
        return action or "add a cpu profile"
    return action


def _archs(rec: Recommendation) -> str:
    return " and ".join(g.arch or g.name for g in rec.gpus)


def _fits_reason(rec: Recommendation) -> str:
    if rec.vendor == "apple":
        return f"Apple silicon Mac: PyTorch from PyPI uses its GPU through MPS → {rec.profile}."
    if rec.vendor == "amd":
        rocm = rec.installed_rocm
        installed = f"ROCm {rocm} is installed" if rocm else "the installed ROCm version is unknown"
        return (
            f"AMD GPU {_archs(rec)}: {installed}, and {rec.profile} is the newest ROCm build that fits"
            f" → {rec.profile}{ended_clause(rec)}."
        )
    return f"{_gpu_clause(rec)}; {_driver_clause(rec)} → {rec.profile}{ended_clause(rec)}."


def ended_clause(rec: Recommendation) -> str:
    """', the last build for your GPU: torch ≤ 2.14' when the chosen line ended and no newer one has its kernels."""
    if rec.last_torch is None:
        return ""
    if rec.last_for_gpu:
        return f", the last build for your GPU: torch ≤ {rec.last_torch}"
    return f" (its line ended with torch {rec.last_torch}; a newer driver opens a current one)"


def _gpu_clause(rec: Recommendation) -> str:
    """Which GPU decides and which builds it allows."""
    if not rec.gpus:
        return "no NVIDIA GPU model was detected, so kernels were not checked"
    labels = " and ".join(label(g) for g in rec.gpus)
    if len(rec.covering) == len(rec.candidates):
        return f"every CUDA build offered has kernels for {labels}"
    allowed = _range(rec.covering, rec.candidates)
    if rec.limiting is None:
        return f"{labels} needs {allowed}"
    return f"chosen for the {rec.limiting_role} GPU, {label(rec.limiting)}, which needs {allowed}"


def _driver_clause(rec: Recommendation) -> str:
    text = f"driver {rec.driver} supports CUDA {rec.max_cuda}"
    if rec.support == COMPAT:
        full = f" (full support from {rec.full_driver})" if rec.full_driver else ""
        text += f", and {rec.profile} runs through minor-version compatibility{full}"
    if rec.compat_newer:
        text += f"; {' and '.join(rec.compat_newer)} would run only through minor-version compatibility"
    if rec.blocked:
        text += f"; {rec.blocked} would need driver ≥ {rec.blocked_driver}"
    return text


def _range(chosen: Sequence[str], ordered: Sequence[str]) -> str:
    """'cu128 or newer' / 'cu126 or older' / 'cu124 or cu128', for the builds a GPU can use."""
    picked = [ordered.index(name) for name in chosen]
    contiguous = picked == list(range(min(picked), max(picked) + 1))
    if contiguous and max(picked) == len(ordered) - 1 and len(picked) < len(ordered):
        return f"{ordered[min(picked)]} or newer"
    if contiguous and min(picked) == 0 and len(picked) < len(ordered):
        return f"{ordered[max(picked)]} or older"
    return " or ".join(ordered[i] for i in picked)


def _no_profile_reason(rec: Recommendation) -> str:
    if rec.vendor == "apple":
        return "Apple silicon Mac, but no mps profile is offered"
    if rec.vendor == "amd":
        return f"AMD GPU {_archs(rec)} is here, but no ROCm profile is offered"
    return "an NVIDIA GPU is here, but no CUDA profile is offered"


def _unconfirmed_reason(rec: Recommendation) -> str:
    gpu = rec.gpus[0].name
    if rec.vendor == "amd":
        return f"{gpu} is here, but ROCm did not report it (rocm_agent_enumerator), so no ROCm build is picked"
    return (
        f"{gpu} found, but envbuild cannot tell whether PyTorch's xpu build supports it, "
        "so it does not pick xpu by itself"
    )


def _no_single_build_reason(rec: Recommendation) -> str:
    needs = "; ".join(f"{label(own.gpu)} needs {_range(own.builds, rec.candidates)}" for own in rec.per_gpu)
    return f"no single CUDA build offered carries kernels for every GPU: {needs}"


def _too_old_reason(rec: Recommendation) -> str:
    who = "this machine's GPUs can use" if rec.gpus else "offered"
    names = ", ".join(rec.covering)
    return f"driver {rec.driver} {_has(rec.max_cuda)}, too old for every CUDA build {who} ({names})"


def _no_build_fits_reason(rec: Recommendation) -> str:
    by_name = {fit.profile: fit for fit in reversed(rec.fits)}
    reasons = "; ".join(fit_reason(by_name[name]) for name in rec.candidates)
    return f"no ROCm profile fits AMD GPU {_archs(rec)}: {reasons}"


_REASONS = {
    FITS: _fits_reason,
    NO_GPU: lambda rec: "no supported GPU found",
    NO_PROFILE_FOR_GPU: _no_profile_reason,
    GPU_UNCONFIRMED: _unconfirmed_reason,
    UNKNOWN_DRIVER: lambda rec: (
        f"{rec.gpus[0].name} is here, but no NVIDIA driver answered (nvidia-smi, {SYS_DRIVER}, {PROC_DRIVER})"
    ),
    NO_SINGLE_BUILD: _no_single_build_reason,
    NO_ARCH_RULE: lambda rec: (
        f"cuda_rules.toml has no architecture list for {', '.join(rec.candidates)} "
        f"on {_platform(rec.system, rec.machine)}"
    ),
    NO_KERNELS: lambda rec: (
        f"no CUDA build offered ({', '.join(rec.candidates)}) carries kernels for {label(rec.gpus[0])}"
    ),
    DRIVER_TOO_OLD: _too_old_reason,
    NO_BUILD_FITS: _no_build_fits_reason,
}


def _too_old_action(rec: Recommendation) -> str:
    if rec.required_driver is None:
        return "use profile cpu"
    if not rec.gpus:
        major = (rec.upgrade_cuda or "0").split(".")[0]
        return (
            f"upgrade the NVIDIA driver to ≥ {rec.required_driver} (the minimum for CUDA {major} builds) and "
            "run envbuild detect again so it can check the GPU architecture, or use profile cpu"
        )
    full = _full_in_brackets(rec.required_full_driver, rec.required_driver, rec.upgrade_cuda)
    return f"upgrade the NVIDIA driver to ≥ {rec.required_driver} to use {rec.upgrade_for}{full}, or use profile cpu"


def _unconfirmed_action(rec: Recommendation) -> str:
    if rec.vendor == "amd":
        return "if it is a GPU ROCm supports, install ROCm and run envbuild detect again"
    return (
        "if it is an Intel Arc, Core Ultra with Arc graphics or Data Center GPU Max GPU with "
        "Intel's GPU driver installed, use profile xpu"
    )


_ACTIONS = {
    GPU_UNCONFIRMED: _unconfirmed_action,
    UNKNOWN_DRIVER: lambda rec: (
        f"install the NVIDIA driver (≥ {rec.required_driver} for {rec.upgrade_for}) and run "
        "envbuild detect again, or use profile cpu"
    ),
    NO_SINGLE_BUILD: lambda rec: (
        "hide the GPUs one build cannot serve with CUDA_VISIBLE_DEVICES and use the build the "
        "others need, or use profile cpu"
    ),
    NO_ARCH_RULE: lambda rec: "use profile cpu, or add the missing rows to cuda_rules.toml",
    NO_KERNELS: lambda rec: (
        f"use profile cpu: {rec.gpus[0].name} is {rec.gap} than every CUDA build offered supports"
    ),
    DRIVER_TOO_OLD: _too_old_action,
    NO_BUILD_FITS: lambda rec: (
        f"upgrade ROCm to ≥ {rec.required_rocm} to use {rec.upgrade_for}, or use profile cpu"
        if rec.upgrade_for
        else "use profile cpu"
    ),
}
