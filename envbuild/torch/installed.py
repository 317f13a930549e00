"""Prove the venv holds the torch build the profile promises, without importing torch.

`import torch` of a real CUDA build takes seconds and most of a gigabyte, and even starting the
venv's interpreter costs more than uv's whole no-op sync. So torch's installed metadata
(`torch-*.dist-info/METADATA`) and `torch/version.py` (`cuda`, `hip`) are read as files and parsed
with `ast`: nothing in the venv runs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

from envbuild.core.errors import VerifyError
from envbuild.torch.profile import TorchProfile

_VERSION_FIELDS = ("__version__", "cuda", "hip", "xpu")


class TorchBuild(NamedTuple):
    version: str
    cuda: str | None
    hip: str | None
    xpu: str | None
    version_py: str
    python: str

    @property
    def local_label(self) -> str | None:
        """`2.7.1+cu126` → `cu126`, normalized as PEP 440 does (lowercase, `.` between parts); read by
        hand because `packaging` is not otherwise needed after a sync (its import costs ~3 ms)."""
        _, plus, local = self.version.strip().partition("+")
        return re.sub(r"[-_]", ".", local.lower()) if plus and local else None

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


def site_packages(venv: Path) -> list[Path]:
    """Where a venv keeps its packages: lib/pythonX.Y/site-packages (POSIX) or Lib/site-packages."""
    found = sorted(venv.glob("lib/python*/site-packages")) + sorted(venv.glob("lib64/python*/site-packages"))
    windows = venv / "Lib" / "site-packages"
    return found + ([windows] if windows.is_dir() else [])


def inspect_torch(venv: Path) -> TorchBuild | None:
    """What torch the venv at `venv` holds; None if it has none. Raises VerifyError if it is no venv."""
    config = venv / "pyvenv.cfg"
    if not config.is_file():
        raise VerifyError(f"{venv} is not a virtual environment (no pyvenv.cfg)")
    python = _venv_python_version(config.read_text(encoding="utf-8", errors="replace"))
    for folder in site_packages(venv):
        infos = sorted(folder.glob("torch-*.dist-info"))
        if not infos:
            continue
        if len(infos) > 1:
            raise VerifyError(f"{folder} holds several torch installs ({', '.join(i.name for i in infos)})",
                              hint="re-sync the venv, or delete it and sync again")
        version = _metadata_version(infos[0] / "METADATA")
        version_py = folder / "torch" / "version.py"
        fields = _version_fields(version_py)
        return TorchBuild(version=version, cuda=_str(fields.get("cuda")), hip=_str(fields.get("hip")),
                          xpu=_str(fields.get("xpu")), version_py=str(version_py), python=python)
    return None


def _metadata_version(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise VerifyError(f"cannot read {path}: {exc.strerror}") from None
    # The header block ends at the first blank line; Version is one of its plain "Key: value" lines.
    headers = text.split("\n\n", 1)[0]
    match = re.search(r"^Version:[ \t]*(\S+)", headers, re.M)
    version = match.group(1) if match else None
    if not version:
        raise VerifyError(f"{path} has no Version field: the torch install is broken, re-sync the venv")
    return str(version).strip()


def _version_fields(path: Path) -> dict[str, object]:
    """Top-level `name = constant` assignments of torch/version.py (annotated ones too)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    fields: dict[str, object] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id in _VERSION_FIELDS and isinstance(value, ast.Constant):
            fields[target.id] = value.value
    return fields


def _venv_python_version(cfg: str) -> str:
    match = re.search(r"^\s*(?:version_info|version)\s*=\s*(\S+)", cfg, re.M)
    return match.group(1) if match else "unknown"


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
