"""The standard fake PyPI + fake download.pytorch.org every test session shares.

Planted packages prove routing: a `torch 99.0.0` and `pytorch-triton 99.0.0` on
the default index must never be chosen for torch, and `numpy`/`filelock 99.0.0`
on every torch index must never be chosen for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .index import Index, IndexFile, IndexServer
from .wheels import build_family_wheel, build_torch_wheel, build_wheel

__all__ = [
    "PYPI_PREFIX",
    "PYTORCH_PREFIX",
    "TORCH_INDEXES",
    "Catalogue",
    "TorchBuild",
    "build_standard_catalogue",
]

PYPI_PREFIX = "simple"
PYTORCH_PREFIX = "whl"

# (name, version, import name or None for the default, Requires-Dist)
_PYPI: list[tuple[str, str, str | None, tuple[str, ...]]] = [
    ("numpy", "1.26.4", None, ()),
    ("numpy", "2.1.0", None, ()),
    ("six", "1.17.0", None, ()),
    ("filelock", "3.16.1", None, ()),
    ("typing-extensions", "4.12.2", "typing_extensions", ()),
    ("pip", "24.3.1", "pip", ()),
    ("uv", "0.5.0", "uv_fake", ()),
    ("pillow", "11.0.0", "PIL", ()),
    ("pyyaml", "6.0.2", "yaml", ()),
    ("requests", "2.32.3", None, ()),
    ("torchsde", "0.2.6", None, ("torch>=1.6.0", "numpy>=1.19")),
    ("einops", "0.8.0", None, ()),
    ("pytorch-triton", "99.0.0", "pytorch_triton_evil", ()),  # planted attacker package
]


@dataclass(frozen=True)
class TorchBuild:
    """One torch release on a torch index plus the family members pinned to it."""

    torch: str
    vision: str
    audio: str
    cuda: str | None = None
    hip: str | None = None
    extra_requires: tuple[str, ...] = ()


_NIGHTLY_TRITON = "3.6.0+git11ec6354"

# index sub-path (under /whl) -> builds
TORCH_INDEXES: dict[str, list[TorchBuild]] = {
    "cpu": [TorchBuild("2.7.1+cpu", "0.22.1+cpu", "2.7.1+cpu")],
    "cu124": [TorchBuild("2.6.0+cu124", "0.21.0+cu124", "2.6.0+cu124", cuda="12.4")],
    "cu126": [
        TorchBuild("2.6.0+cu126", "0.21.0+cu126", "2.6.0+cu126", cuda="12.6"),
        TorchBuild("2.7.1+cu126", "0.22.1+cu126", "2.7.1+cu126", cuda="12.6"),
    ],
    "cu128": [
        TorchBuild("2.7.1+cu128", "0.22.1+cu128", "2.7.1+cu128", cuda="12.8"),
        TorchBuild("2.8.0+cu128", "0.23.0+cu128", "2.8.0+cu128", cuda="12.8"),
    ],
    "cu130": [TorchBuild("2.9.0+cu130", "0.24.0+cu130", "2.9.0+cu130", cuda="13.0")],
    "nightly/cu132": [
        TorchBuild(
            "2.16.0.dev20261201+cu132",
            "0.31.0.dev20261201+cu132",
            "2.11.0.dev20260301+cu132",
            cuda="13.2",
            # As the real nightly wheels do: triton only where it exists (Linux x86_64).
            extra_requires=(f"pytorch-triton=={_NIGHTLY_TRITON}; platform_system == 'Linux' and "
                            "platform_machine == 'x86_64'",),
        )
    ],
    "rocm6.3": [
        TorchBuild(
            "2.7.1+rocm6.3",
            "0.22.1+rocm6.3",
            "2.7.1+rocm6.3",
            hip="6.3.42131",
            extra_requires=("pytorch-triton-rocm==3.3.1; platform_system == 'Linux' and "
                            "platform_machine == 'x86_64'",),
        )
    ],
    "xpu": [TorchBuild("2.7.1+xpu", "0.22.1+xpu", "2.7.1+xpu")],
}

# Extra non-torch wheels some torch indexes carry, as the real ones do.
_TORCH_INDEX_EXTRAS: dict[str, list[tuple[str, str, str]]] = {
    "nightly/cu132": [("pytorch-triton", _NIGHTLY_TRITON, "pytorch_triton")],
    "rocm6.3": [("pytorch-triton-rocm", "3.3.1", "pytorch_triton_rocm")],
}


@dataclass
class Catalogue:
    """What the `index_server` fixture yields: URLs of the fake PyPI and torch indexes."""

    server: IndexServer
    wheel_dir: Path
    indexes: dict[str, Index]
    _extra: list[str] = field(default_factory=list)
    _baseline: dict[str, dict[str, IndexFile]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._baseline = {prefix: index.snapshot() for prefix, index in self.indexes.items()}

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pypi_url(self) -> str:
        """The fake PyPI simple root (`UV_DEFAULT_INDEX`)."""
        return f"{self.url}/{PYPI_PREFIX}"

    @property
    def pytorch_base(self) -> str:
        """What `ENVBUILD_PYTORCH_INDEX` points at: `<base>/cu126`, `<base>/nightly/cu132`, ..."""
        return f"{self.url}/{PYTORCH_PREFIX}"

    @property
    def pypi(self) -> Index:
        return self.indexes[PYPI_PREFIX]

    def torch_index(self, variant: str) -> Index:
        """The torch index for `variant` (`cu126`, `nightly/cu132`, ...)."""
        return self.indexes[f"{PYTORCH_PREFIX}/{variant}"]

    def extra_index(self, prefix: str, *, json: bool = True) -> Index:
        """Add an empty index for one test; `reset()` (run after every test) removes it."""
        index = self.server.add_index(prefix, json=json)
        self._extra.append(index.prefix)
        return index

    def reset(self) -> None:
        """Undo per-test changes (faults, extra indexes, files, JSON off, file caching); empty the log."""
        self.server.clear_faults()
        self.server.clear_log()
        while self._extra:
            self.server.remove_index(self._extra.pop())
        for prefix, index in self.indexes.items():
            index.json = True
            index.file_cache_control = None
            index.restore(self._baseline[prefix])


def build_standard_catalogue(server: IndexServer, wheel_dir: Path) -> Catalogue:
    """Build every standard wheel into `wheel_dir` and publish it on `server`."""
    indexes: dict[str, Index] = {}

    pypi = indexes[PYPI_PREFIX] = server.add_index(PYPI_PREFIX)
    pypi_dir = wheel_dir / "pypi"
    for name, version, module, requires in _PYPI:
        pypi.add(build_wheel(pypi_dir, name, version, import_name=module, requires_dist=requires))
    # Planted: a plain torch on the default index that must never win.
    pypi.add(build_torch_wheel(pypi_dir, "99.0.0"))

    for variant, builds in TORCH_INDEXES.items():
        prefix = f"{PYTORCH_PREFIX}/{variant}"
        index = indexes[prefix] = server.add_index(prefix)
        out = wheel_dir / prefix
        for build in builds:
            requires = ("filelock", "typing-extensions", *build.extra_requires)
            index.add(
                build_torch_wheel(
                    out, build.torch, cuda=build.cuda, hip=build.hip, requires_dist=requires
                )
            )
            index.add(build_family_wheel(out, "torchvision", build.vision, build.torch))
            index.add(build_family_wheel(out, "torchaudio", build.audio, build.torch))
        for name, version, module in _TORCH_INDEX_EXTRAS.get(variant, []):
            index.add(build_wheel(out, name, version, import_name=module))
        # Planted: non-torch packages that must never be taken from a torch index.
        index.add(build_wheel(out, "numpy", "99.0.0"))
        index.add(build_wheel(out, "filelock", "99.0.0"))

    return Catalogue(server=server, wheel_dir=wheel_dir, indexes=indexes)
