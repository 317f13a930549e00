"""The verdicts, as data: a `code` that says what was decided, and the facts it rests on.

`assess` and `recommend` fill these without writing a word; `explain` turns them into the
sentences `envbuild detect`, sync and doctor print. A script (or a test) reads the codes and
facts, never the prose. `reason` and `action` are built on first use, from the fields alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# --------------------------------------------------------------------------- codes
FITS = "fits"  # the build runs here (Fit), or a build was chosen for the GPU (Recommendation)
WRONG_PLATFORM = "wrong-platform"  # no such build for this OS / CPU (CUDA on macOS, mps on Linux)
UNKNOWN_ACCELERATOR = "unknown-accelerator"  # a profile's accelerator envbuild does not know
NO_VERSION = "no-accelerator-version"  # a cuda/rocm profile that names no version
UNKNOWN_DRIVER = "unknown-driver"  # no NVIDIA driver answered
DRIVER_TOO_OLD = "driver-too-old"  # the driver runs no CUDA release the build(s) need
NO_DRIVER_RULE = "no-driver-rule"  # cuda_rules.toml lists no driver minimum for that CUDA
NO_ARCH_RULE = "no-arch-rule"  # cuda_rules.toml has no kernel list for the build
NO_KERNELS = "no-kernels-for-arch"  # the build has no kernels for a GPU here
NO_GPU = "no-gpu"  # no GPU the build (or any build offered) can use
ROCM_TOO_OLD = "rocm-too-old"  # the ROCm build is newer than the installed ROCm
# Recommendation only
NO_PROFILE_FOR_GPU = "no-profile-for-gpu"  # a GPU is here, but no profile of its kind is offered
GPU_UNCONFIRMED = "gpu-unconfirmed"  # a GPU is here, but nothing confirms a build runs on it
NO_SINGLE_BUILD = "no-single-build"  # each GPU has a build, but no build serves them all
NO_BUILD_FITS = "no-build-fits"  # no build of the GPU's kind fits (see the fits)

# The recommendation codes that fall back to the cpu profile (profile None: none offered).
CPU_FALLBACKS = (NO_GPU, NO_PROFILE_FOR_GPU, GPU_UNCONFIRMED)


class GpuCheck(NamedTuple):
    """A GPU as a verdict names it: the name a user knows and what decides (cc, family)."""

    name: str
    compute_capability: str | None  # NVIDIA "8.9"
    arch: str | None  # "sm_89", "gfx1100"
    family: str | None  # "Ada Lovelace"
    runs: str | None = None  # the cubin target it runs when not its own: "8.6" for an 8.9 GPU


class Target(NamedTuple):
    """One kernel target a build carries: compute capability ("7.5") or gfx name."""

    name: str
    family: str | None


class GpuBuilds(NamedTuple):
    """The builds offered that carry kernels for one GPU, oldest first."""

    gpu: GpuCheck
    builds: tuple[str, ...]


@dataclass(frozen=True)
class Fit:
    """One profile's verdict on this machine."""

    profile: str
    code: str
    accelerator: str
    system: str
    machine: str
    version: str | None = None  # the build's CUDA or ROCm version
    driver: str | None = None  # the NVIDIA driver here
    max_cuda: str | None = None  # the newest CUDA that driver runs in full
    support: str | None = None  # how the driver runs the build: rules.FULL / COMPAT / NONE
    required_driver: str | None = None  # the lowest driver that runs the build
    full_driver: str | None = None  # the driver NVIDIA lists for full support of the build
    gpus: tuple[GpuCheck, ...] = ()  # the GPUs checked (no-driver: the NVIDIA GPUs seen on PCI)
    kernels_checked: bool = False  # False: no GPU model (or kernel list) to check against
    blocking: GpuCheck | None = None  # the GPU the build has no kernels for
    gap: str | None = None  # where it falls: "older" / "newer" than every target, or "between"
    targets: tuple[Target, ...] = ()  # the build's kernel targets
    torch_version: str | None = None  # the torch release whose kernel list was read
    installed_rocm: str | None = None
    last_torch: str | None = None  # the profile's line ended with this torch minor

    @property
    def ok(self) -> bool:
        return self.code == FITS


@dataclass(frozen=True)
class Recommendation:
    """The profile to use (None: no build fits), every profile's Fit, and the facts behind it."""

    profile: str | None
    code: str
    fits: tuple[Fit, ...]
    system: str
    machine: str
    vendor: str | None = None  # the GPU vendor that decided
    gpus: tuple[GpuCheck, ...] = ()  # the GPUs the verdict is about
    candidates: tuple[str, ...] = ()  # the builds of that vendor offered, oldest first
    covering: tuple[str, ...] = ()  # those with kernels for every GPU here
    per_gpu: tuple[GpuBuilds, ...] = ()  # no-single-build: the builds each GPU can use
    limiting: GpuCheck | None = None  # of several GPUs, the one that narrowed the choice
    limiting_role: str | None = None  # "weakest" or "newest"
    driver: str | None = None
    max_cuda: str | None = None
    support: str | None = None  # how the driver runs the chosen build
    full_driver: str | None = None  # chosen through compat: the driver for full support
    compat_newer: tuple[str, ...] = ()  # newer covering builds that would run only through compat
    blocked: str | None = None  # the newest covering build the driver cannot run
    blocked_driver: str | None = None  # the driver that build would need
    required_driver: str | None = None  # the driver the action asks for
    required_full_driver: str | None = None  # and the one for full support, when it differs
    upgrade_for: str | None = None  # the build that driver or ROCm upgrade would make usable
    upgrade_cuda: str | None = None  # that build's CUDA version
    required_rocm: str | None = None  # the ROCm the action asks for
    installed_rocm: str | None = None
    gap: str | None = None  # no-kernels: the GPU is "older" or "newer" than every build offered
    last_torch: str | None = None  # the chosen build's line ended with this torch minor ("2.14")
    last_for_gpu: bool = False  # and no newer line has kernels for the GPU: its torch stops there
