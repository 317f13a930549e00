"""What GPU this machine has, and which PyTorch build (profile) fits it.

Layers, each its own module, each using only those above it:
  model     Gpu, Machine and pure parsers of nvidia-smi, /proc, ROCm output
  rules     data/cuda_rules.toml as values, and the lookups that read it
  detect    the I/O: tools, /sys, /proc, PCI, the ENVBUILD_* overrides (from a passed-in env)
  verdicts  Fit and Recommendation: a code and the facts it rests on
  assess    one profile's Fit on a Machine
  recommend the profile to use, as a Recommendation
  explain   the sentences, built from the verdicts alone
"""

from envbuild.torch.gpu.assess import ProfileLike, assess
from envbuild.torch.gpu.detect import detect_machine
from envbuild.torch.gpu.model import (
    Gpu,
    Machine,
    parse_nvidia_smi_header,
    parse_nvidia_smi_query,
    parse_proc_driver_version,
    parse_rocm_agents,
)
from envbuild.torch.gpu.recommend import recommend
from envbuild.torch.gpu.rules import ArchRule, DriverRule, RocmArchRule, Rules, load_rules, max_cuda_for_driver
from envbuild.torch.gpu.verdicts import Fit, GpuBuilds, GpuCheck, Recommendation, Target

__all__ = [
    "ArchRule",
    "DriverRule",
    "Fit",
    "Gpu",
    "GpuBuilds",
    "GpuCheck",
    "Machine",
    "ProfileLike",
    "Recommendation",
    "RocmArchRule",
    "Rules",
    "Target",
    "assess",
    "detect_machine",
    "load_rules",
    "max_cuda_for_driver",
    "parse_nvidia_smi_header",
    "parse_nvidia_smi_query",
    "parse_proc_driver_version",
    "parse_rocm_agents",
    "recommend",
]
