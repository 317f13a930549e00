"""Prove the venv holds the torch build the profile promises, without importing torch.

`import torch` of a real CUDA build takes seconds and most of a gigabyte; the venv's own
interpreter reads torch's installed metadata and parses `torch/version.py` (cuda, hip) instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from envbuild import runner
from envbuild.errors import CommandFailed, VerifyError
from envbuild.profiles import TorchProfile

# Runs inside the venv: stdlib only, never imports torch.
_PROBE = r"""
import ast, json, sys
import importlib.metadata as md
try:
    dist = md.distribution("torch")
except md.PackageNotFoundError:
    print(json.dumps(None)); sys.exit(0)
fields = {}
path = dist.locate_file("torch/version.py")
try:
    tree = ast.parse(open(path, encoding="utf-8").read())
except OSError:
    tree = ast.Module(body=[], type_ignores=[])
for node in tree.body:
    target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
    value = getattr(node, "value", None)
    if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
        fields[target.id] = value.value
print(json.dumps({"version": dist.version, "version_py": str(path), "python": sys.version.split()[0],
                  "cuda": fields.get("cuda"), "hip": fields.get("hip"), "xpu": fields.get("xpu"),
                  "file_version": fields.get("__version__")}))
"""


@dataclass(frozen=True)
class TorchBuild:
    version: str
    cuda: str | None
    hip: str | None
    xpu: str | None
    version_py: str
    python: str

    @property
    def local_label(self) -> str | None:
        try:
            return Version(self.version).local
        except InvalidVersion:
            return None

    def describe(self) -> str:
        if self.cuda:
            build = f"CUDA {self.cuda}"
        elif self.hip:
            build = f"ROCm/HIP {self.hip}"
        elif self.local_label == "xpu" or self.xpu:
            build = "Intel XPU"
        else:
            build = "CPU only"
        return f"torch {self.version} ({build}), Python {self.python}"


def inspect_torch(python: Path) -> TorchBuild | None:
    """What torch the interpreter at `python` would import; None if there is no torch."""
    try:
        proc = runner.run([str(python), "-I", "-c", _PROBE], timeout=60)
    except CommandFailed as exc:
        raise VerifyError(f"could not inspect torch with {python}: {exc.output_tail or exc}") from None
    except OSError as exc:
        raise VerifyError(f"could not run {python}: {exc.strerror}") from None
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    if data is None:
        return None
    return TorchBuild(
        version=data["version"], cuda=_str(data.get("cuda")), hip=_str(data.get("hip")),
        xpu=_str(data.get("xpu")), version_py=data["version_py"], python=data["python"],
    )


def _str(value: object) -> str | None:
    return None if value in (None, "") else str(value)


def mismatches(build: TorchBuild, profile: TorchProfile, *, torch_source: str = "pytorch-index") -> list[str]:
    """Everything about the installed build that contradicts the profile (empty: it matches)."""
    problems: list[str] = []
    want = profile.accelerator_version
    if profile.accelerator == "cuda":
        if not build.cuda:
            problems.append(f"profile {profile.name} wants a CUDA {want} build, but torch {build.version} "
                            "has no CUDA (torch.version.cuda is None)")
        elif build.cuda != want:
            problems.append(f"profile {profile.name} wants CUDA {want}, but torch {build.version} "
                            f"was built for CUDA {build.cuda}")
    elif profile.accelerator == "rocm":
        if not build.hip or not build.hip.startswith(f"{want}"):
            problems.append(f"profile {profile.name} wants a ROCm {want} build, but torch {build.version} "
                            f"has hip={build.hip!r}")
    elif profile.accelerator in ("cpu", "mps", "xpu"):
        if build.cuda or build.hip:
            got = f"CUDA {build.cuda}" if build.cuda else f"ROCm {build.hip}"
            problems.append(f"profile {profile.name} wants a {profile.accelerator} build, "
                            f"but torch {build.version} is a {got} build")
    # A missing label is fine (the cpu index serves plain macOS wheels); a different one is not.
    label = build.local_label
    if torch_source == "pytorch-index" and profile.local_version and label and label != profile.local_version:
        problems.append(f"torch {build.version} does not carry the +{profile.local_version} label of "
                        f"profile {profile.name}'s index")
    return problems
