"""New build lines on PyTorch's index that the catalogue has no profile for (`envbuild profiles update`).

download.pytorch.org/whl/ is itself an index: its `torch/` page lists every stable torch wheel of every
line, each labelled with its build (`torch-2.15.0+cu132-...whl`, `+rocm7.14`). A label of the form `cuXYZ`
or `rocmX.Y` that no profile takes is a line the catalogue lacks (cu132 once, rocm7.14, cu134 next), so a
profile for it is proposed: written beside the others as `<name>.toml.proposed`, never loaded until a person
has reviewed it (kernel lists, companions and platforms need sources) and renamed it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from envbuild.core.http.indexclient import Page
from envbuild.core.runner import redact
from envbuild.torch.profile import TorchProfile

_LINE = re.compile(r"(cu)(\d+)(\d)|(rocm)(\d+(?:\.\d+)+)")
_PLATFORMS = (  # wheel platform tag -> the environment a profile writes for it
    (re.compile(r"(manylinux\w*|linux)_x86_64"), "sys_platform == 'linux' and platform_machine == 'x86_64'"),
    (re.compile(r"(manylinux\w*|linux)_aarch64"), "sys_platform == 'linux' and platform_machine == 'aarch64'"),
    (re.compile(r"win_amd64"), "sys_platform == 'win32' and platform_machine == 'AMD64'"),
)


@dataclass(frozen=True)
class NewLine:
    """A build label the index serves and no profile takes, with what its torch wheels say."""

    label: str  # cu134, rocm7.14
    accelerator: str  # cuda | rocm
    version: str  # 13.4, 7.14
    torch: tuple[Version, ...]  # every public torch version seen with the label, oldest first
    vision: tuple[Version, ...]
    environments: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.label


def line_of(label: str) -> tuple[str, str] | None:
    """`cu134` -> ("cuda", "13.4"), `rocm7.14` -> ("rocm", "7.14"), anything else (cpu, xpu, cu126.cxx11) None."""
    found = _LINE.fullmatch(label)
    if found is None:
        return None
    if found.group(1):
        return "cuda", f"{int(found.group(2))}.{found.group(3)}"
    return "rocm", found.group(5)


def _labelled(page: Page) -> dict[str, list[tuple[Version, str]]]:
    """label -> (public version, wheel platform tag) of every wheel on the page."""
    found: dict[str, list[tuple[Version, str]]] = {}
    for dist in page.files:
        if dist.yanked or not dist.filename.endswith(".whl"):
            continue
        try:
            _, version, _, tags = parse_wheel_filename(dist.filename)
        except (InvalidWheelFilename, InvalidVersion):
            continue
        if version.local is None or version.is_prerelease:
            continue
        for tag in tags:
            found.setdefault(str(version.local), []).append((Version(version.public), tag.platform))
    return found


def new_lines(torch_page: Page, vision_page: Page | None, profiles: Iterable[TorchProfile]) -> list[NewLine]:
    """The CUDA and ROCm lines on the index's torch page that no profile of the catalogue takes."""
    known = {p.local_version for p in profiles if p.index_url and p.channel == "stable"}
    known |= {p.index_url.rstrip("/").rsplit("/", 1)[-1] for p in profiles if p.index_url and p.channel == "stable"}
    torch = _labelled(torch_page)
    vision = _labelled(vision_page) if vision_page is not None and vision_page.found else {}
    result = []
    for label in sorted(torch):
        line = line_of(label)
        if line is None or label in known:
            continue
        seen = torch[label]
        envs = tuple(env for pattern, env in _PLATFORMS
                     if any(tag == "any" or pattern.fullmatch(tag) for _, tag in seen))
        result.append(NewLine(label, line[0], line[1], tuple(sorted({v for v, _ in seen})),
                              tuple(sorted({v for v, _ in vision.get(label, [])})), envs))
    return result


def proposed_profile(line: NewLine, index_url: str, today: str, source: str) -> str:
    """The text of a profile for a new line, for a person to review: what the index shows, and what it cannot."""
    torch_floor, newest = line.torch[0], line.torch[-1]
    vision = f'torchvision = ">={line.vision[0]}"\n' if line.vision else ""
    required = [e for e in line.environments if "aarch64" not in e] or list(line.environments)
    what = "NVIDIA, CUDA" if line.accelerator == "cuda" else "AMD, ROCm"
    rules = (f'[[arch]] row for cuda = "{line.version}"' if line.accelerator == "cuda"
             else f'[[rocm_arch]] row for rocm = "{line.version}"')
    triton = ('# ROCm torch needs pytorch-triton-rocm from the same index as a direct dependency: set its floor from\n'
              '# the torch wheels\' metadata (`Requires-Dist: pytorch-triton-rocm==...`).\n'
              'pytorch-triton-rocm = ">=0"\n' if line.accelerator == "rocm" else "")
    return (
        f"# PROPOSED by `envbuild profiles update` on {today}: {redact(source)} lists torch {torch_floor} to {newest}\n"
        f"# built `+{line.label}`, and no profile of the catalogue takes that line. Review before use, then rename\n"
        f"# this file to {line.name}.toml:\n"
        f"# - cite where PyTorch announces the line (its RELEASE.md, the release RFC, test-infra's build matrix);\n"
        f"# - envbuild/data/cuda_rules.toml needs a {rules} (kernel targets, with the source),\n"
        f"#   or `envbuild detect` cannot check a GPU against it;\n"
        f"# - companions: list xformers only if its release workflow (wheels.yml) publishes builds for it;\n"
        f"# - torchaudio: add it only where every torch of the line has one of its minor (its last line is 2.11);\n"
        f"# - the platforms below are those the index has torch wheels for.\n"
        f"schema = 1\n"
        f'name = "{line.name}"\n'
        f'description = "{what} {line.version} (proposed; review)"\n'
        f'accelerator = "{line.accelerator}"\n'
        f'accelerator-version = "{line.version}"\n'
        f'channel = "stable"\n'
        f'local-version = "{line.label}"\n\n'
        f"[index]\n"
        f'name = "pytorch-{line.label.replace(".", "-")}"\n'
        f'url = "{index_url}"\n\n'
        f"[packages]\n"
        f'torch = ">={torch_floor}"\n'
        f"{vision}{triton}\n"
        "[platforms]\n"
        "environments = [\n" + "".join(f'    "{e}",\n' for e in line.environments) + "]\n"
        + "required-environments = [\n" + "".join(f'    "{e}",\n' for e in required) + "]\n"
    )


def describe(line: NewLine) -> str:
    versions = f"torch {line.torch[0]}" + (f" to {line.torch[-1]}" if len(line.torch) > 1 else "")
    return (f"new line {line.label} ({line.accelerator} {line.version}): the index serves {versions}, and no profile "
            "takes it")


__all__: Sequence[str] = ("NewLine", "describe", "line_of", "new_lines", "proposed_profile")
