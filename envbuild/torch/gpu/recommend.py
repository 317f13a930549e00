"""Which profile this machine should use: a `Recommendation` with a code and its facts, no prose.

Each vendor gets a say in turn (NVIDIA, AMD, Apple, Intel); the first with a GPU here decides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

from envbuild.torch.gpu.assess import ProfileLike, arch_verdict, assess, gpu_check, has, known_nvidia
from envbuild.torch.gpu.model import Gpu, Machine, vt
from envbuild.torch.gpu.rules import COMPAT, FULL, NONE, Rules, arch_row, driver_need, support
from envbuild.torch.gpu.verdicts import (
    DRIVER_TOO_OLD,
    FITS,
    GPU_UNCONFIRMED,
    NO_ARCH_RULE,
    NO_BUILD_FITS,
    NO_GPU,
    NO_KERNELS,
    NO_PROFILE_FOR_GPU,
    NO_SINGLE_BUILD,
    UNKNOWN_DRIVER,
    GpuBuilds,
    Recommendation,
)


class _Ctx(NamedTuple):
    machine: Machine
    usable: tuple[ProfileLike, ...]  # the profiles recommend may pick (stable, or all)
    profiles: tuple[ProfileLike, ...]
    rules: Rules
    torch_version: str | None
    base: Recommendation  # every profile's fit; code and profile still to decide


def recommend(
    machine: Machine,
    profiles: Sequence[ProfileLike],
    rules: Rules,
    *,
    include_nightly: bool = False,
    torch_version: str | None = None,
) -> Recommendation:
    """The newest build that runs on every GPU here; if none, the facts that say what to do instead.

    Nightly profiles are only picked with `include_nightly`; cpu is only recommended when no
    GPU is usable, never in place of a GPU build that merely needs a driver upgrade.
    """
    fits = tuple(assess(machine, p, rules, torch_version=torch_version) for p in profiles)
    usable = tuple(p for p in profiles if include_nightly or p.channel == "stable")
    base = Recommendation(None, NO_GPU, fits, machine.system, machine.machine)
    ctx = _Ctx(machine, usable, tuple(profiles), rules, torch_version, base)
    for decide in (_for_nvidia, _for_amd, _for_apple, _for_intel):
        choice = decide(ctx)
        if choice is not None:
            return choice
    return _cpu(ctx, NO_GPU)


def _pick(ctx: _Ctx, profile: str | None, code: str, **facts: Any) -> Recommendation:
    return dataclasses.replace(ctx.base, profile=profile, code=code, **facts)


def _cpu(ctx: _Ctx, code: str, **facts: Any) -> Recommendation:
    """Fall back to the cpu profile (None when none is offered)."""
    cpu = next((p.name for p in ctx.profiles if p.accelerator == "cpu"), None)
    return _pick(ctx, cpu, code, **facts)


def _version(profile: ProfileLike) -> tuple[int, ...]:
    return vt(profile.accelerator_version or "0")


# --------------------------------------------------------------------------- NVIDIA
def _cuda_profiles(ctx: _Ctx) -> list[ProfileLike]:
    found = [p for p in ctx.usable if p.accelerator == "cuda" and p.accelerator_version]
    return sorted(found, key=lambda p: (_version(p), p.channel == "stable"))


def _covers(ctx: _Ctx, profile: ProfileLike, gpus: Sequence[Gpu] | None = None) -> bool:
    """False only when a known GPU lacks kernels; an unknown GPU cannot rule a build out."""
    machine = ctx.machine
    if gpus is not None:
        machine = Machine(machine.system, machine.machine, tuple(gpus), None, None, None, None, ())
    verdict = arch_verdict(machine, profile.accelerator_version or "", ctx.rules, ctx.torch_version)
    return verdict.ok is not False


def _runs(ctx: _Ctx, profile: ProfileLike) -> str:
    return support(ctx.machine, profile.accelerator_version or "", ctx.rules)


def _for_nvidia(ctx: _Ctx) -> Recommendation | None:
    machine = ctx.machine
    if not has(machine, "nvidia") and machine.nvidia_driver is None:
        return None
    cands = _cuda_profiles(ctx)
    if not cands:
        return _cpu(ctx, NO_PROFILE_FOR_GPU, vendor="nvidia")
    names = tuple(p.name for p in cands)
    if machine.nvidia_driver is None:
        return _nvidia_without_driver(ctx, cands)
    covering = [p for p in cands if _covers(ctx, p)]
    if not covering:
        return _nvidia_no_kernels(ctx, cands)
    runnable = [p for p in covering if _runs(ctx, p) != NONE]
    if not runnable:
        return _nvidia_driver_too_old(ctx, covering)
    chosen = max(runnable, key=lambda p: (_runs(ctx, p) == FULL, _version(p), p.channel == "stable"))
    return _pick(
        ctx,
        chosen.name,
        FITS,
        vendor="nvidia",
        gpus=tuple(gpu_check(g, ctx.rules) for g in known_nvidia(machine)),
        candidates=names,
        covering=tuple(p.name for p in covering),
        **_limiting(ctx, cands, covering),
        **_driver_facts(ctx, chosen, covering),
        **_ended(chosen, covering),
    )


def _ended(chosen: ProfileLike, covering: Sequence[ProfileLike]) -> dict[str, Any]:
    """The chosen build's line ended (its profile's `last-torch`): whether a newer line still has kernels for
    the GPU (then only the driver holds it back) or this is the last build it will get."""
    if chosen.last_torch is None:
        return {}
    newer = [p for p in covering if _version(p) > _version(chosen) and p.last_torch is None]
    return {"last_torch": chosen.last_torch, "last_for_gpu": not newer}


def _driver_facts(ctx: _Ctx, chosen: ProfileLike, covering: Sequence[ProfileLike]) -> dict[str, Any]:
    """How the driver runs the chosen build, and what it means for the newer builds."""
    machine, cuda = ctx.machine, chosen.accelerator_version or ""
    newer = [p for p in covering if _version(p) > vt(cuda)]
    blocked = [p for p in newer if _runs(ctx, p) == NONE]
    compat = _runs(ctx, chosen) == COMPAT
    return {
        "driver": machine.nvidia_driver,
        "max_cuda": machine.max_cuda,
        "support": _runs(ctx, chosen),
        "full_driver": driver_need(cuda, machine.system, ctx.rules).full if compat else None,
        "compat_newer": tuple(p.name for p in newer if _runs(ctx, p) == COMPAT),
        "blocked": blocked[-1].name if blocked else None,
        "blocked_driver": (
            driver_need(blocked[-1].accelerator_version or "", machine.system, ctx.rules).lowest if blocked else None
        ),
    }


def _limiting(ctx: _Ctx, cands: Sequence[ProfileLike], covering: Sequence[ProfileLike]) -> dict[str, Any]:
    """Of several GPUs that narrow the builds, the one that narrows most, and whether it is the weakest."""
    known = known_nvidia(ctx.machine)
    if len(known) < 2 or len(covering) == len(cands):
        return {}
    limiting = min(known, key=lambda g: (sum(_covers(ctx, p, [g]) for p in cands), vt(g.compute_capability or "0")))
    weakest = min(known, key=lambda g: vt(g.compute_capability or "0"))
    role = "weakest" if limiting is weakest else "newest"
    return {"limiting": gpu_check(limiting, ctx.rules), "limiting_role": role}


def _nvidia_without_driver(ctx: _Ctx, cands: Sequence[ProfileLike]) -> Recommendation:
    gpu = next(g for g in ctx.machine.gpus if g.vendor == "nvidia")
    newest = cands[-1]
    need = driver_need(newest.accelerator_version or "", ctx.machine.system, ctx.rules)
    return _pick(
        ctx,
        None,
        UNKNOWN_DRIVER,
        vendor="nvidia",
        gpus=(gpu_check(gpu, ctx.rules),),
        candidates=tuple(p.name for p in cands),
        required_driver=need.full or need.lowest,
        upgrade_for=newest.name,
        upgrade_cuda=newest.accelerator_version,
    )


def _nvidia_no_kernels(ctx: _Ctx, cands: Sequence[ProfileLike]) -> Recommendation:
    known = known_nvidia(ctx.machine)
    names = tuple(p.name for p in cands)
    own = {g: [p for p in cands if _covers(ctx, p, [g])] for g in known}
    if len(known) > 1 and all(own.values()):
        per_gpu = tuple(GpuBuilds(gpu_check(g, ctx.rules), tuple(p.name for p in ps)) for g, ps in own.items())
        return _pick(ctx, None, NO_SINGLE_BUILD, vendor="nvidia", candidates=names, per_gpu=per_gpu)
    rows = [r for p in cands if (r := arch_row(p.accelerator_version or "", ctx.machine, ctx.rules, ctx.torch_version))]
    if not rows:
        return _pick(ctx, None, NO_ARCH_RULE, vendor="nvidia", candidates=names)
    gpu = next(g for g, ps in own.items() if not ps)
    oldest = min((t for r in rows for t in r.targets), key=vt)
    gap = "older" if vt(gpu.compute_capability or "0") < vt(oldest) else "newer"
    return _pick(ctx, None, NO_KERNELS, vendor="nvidia", gpus=(gpu_check(gpu, ctx.rules),), candidates=names, gap=gap)


def _nvidia_driver_too_old(ctx: _Ctx, covering: Sequence[ProfileLike]) -> Recommendation:
    machine = ctx.machine
    needs = [(p, driver_need(p.accelerator_version or "", machine.system, ctx.rules)) for p in covering]
    needs = [(p, n) for p, n in needs if n.lowest]
    facts: dict[str, Any] = {}
    if needs:
        lowest = min((n.lowest or "" for _p, n in needs), key=vt)
        target, need = [(p, n) for p, n in needs if n.lowest == lowest][-1]
        facts = {
            "required_driver": lowest,
            "required_full_driver": need.full if need.full not in (None, lowest) else None,
            "upgrade_for": target.name,
            "upgrade_cuda": target.accelerator_version,
        }
    return _pick(
        ctx,
        None,
        DRIVER_TOO_OLD,
        vendor="nvidia",
        gpus=tuple(gpu_check(g, ctx.rules) for g in known_nvidia(machine)),
        covering=tuple(p.name for p in covering),
        driver=machine.nvidia_driver,
        max_cuda=machine.max_cuda,
        **facts,
    )


# --------------------------------------------------------------------------- AMD, Apple, Intel
def _for_amd(ctx: _Ctx) -> Recommendation | None:
    amd = [g for g in ctx.machine.gpus if g.vendor == "amd"]
    if not amd:
        return None
    if not any(g.arch for g in amd):
        return _cpu(ctx, GPU_UNCONFIRMED, vendor="amd", gpus=(gpu_check(amd[0], ctx.rules),))
    by_arch = {g.arch: g for g in amd if g.arch}
    gpus = tuple(gpu_check(by_arch[arch], ctx.rules) for arch in sorted(by_arch))
    cands = [p for p in ctx.usable if p.accelerator == "rocm" and p.accelerator_version]
    good = [p for p in cands if assess(ctx.machine, p, ctx.rules, torch_version=ctx.torch_version).ok]
    facts: dict[str, Any] = {"vendor": "amd", "gpus": gpus, "installed_rocm": ctx.machine.rocm_version}
    if good:  # a build whose gfx list confirms the GPU before one nothing could check (rocm7.14 has no list)
        fits = {p.name: assess(ctx.machine, p, ctx.rules, torch_version=ctx.torch_version) for p in good}
        chosen = max(good, key=lambda p: (fits[p.name].kernels_checked, _version(p)))
        return _pick(ctx, chosen.name, FITS, **facts, **_ended(chosen, good))
    if not cands:
        return _cpu(ctx, NO_PROFILE_FOR_GPU, **facts)
    facts["candidates"] = tuple(p.name for p in cands)
    upgrade = _rocm_upgrade(ctx, cands)
    if upgrade is not None:
        facts.update(upgrade_for=upgrade.name, required_rocm=upgrade.accelerator_version)
    return _pick(ctx, None, NO_BUILD_FITS, **facts)


def _rocm_upgrade(ctx: _Ctx, cands: Sequence[ProfileLike]) -> ProfileLike | None:
    """The oldest build a newer ROCm would make fit: only then is a ROCm upgrade worth naming."""
    unversioned = ctx.machine._replace(rocm_version=None)
    would = [p for p in cands if assess(unversioned, p, ctx.rules, torch_version=ctx.torch_version).ok]
    return min(would, key=_version) if would else None


def _for_apple(ctx: _Ctx) -> Recommendation | None:
    if not has(ctx.machine, "apple"):
        return None
    mps = next((p for p in ctx.usable if p.accelerator == "mps"), None)
    if mps is None:
        return _cpu(ctx, NO_PROFILE_FOR_GPU, vendor="apple")
    return _pick(ctx, mps.name, FITS, vendor="apple")


def _for_intel(ctx: _Ctx) -> Recommendation | None:
    intel = [g for g in ctx.machine.gpus if g.vendor == "intel"]
    if not intel:
        return None
    return _cpu(ctx, GPU_UNCONFIRMED, vendor="intel", gpus=(gpu_check(intel[0], ctx.rules),))
