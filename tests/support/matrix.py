"""A loopback index of its own for module-scoped end-to-end tests (the command × setting matrix).

The session `index_server` is reset after every test (extra indexes removed), so a lock made once
for a whole module cannot lean on an index a single test added. This server lives as long as the
module that starts it and carries, next to the standard fake PyPI and PyTorch indexes:

- `/pypi-cuda/simple`: PyPI with plain CUDA torch builds (2.7.1 = CUDA 12.6, 2.8.0 = CUDA 12.8) in
  place of the planted torch 99, for the `-pypi` profiles;
- `matrix-extra` on PyPI (and its copies), a package only a test's extra requirements ask for;
- `/mirror/whl/<variant>` and `/mirror-pypi/simple`: byte-for-byte copies of the canonical indexes,
  for locking through a mirror and installing through one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .catalogue import Catalogue, build_standard_catalogue
from .index import Index, IndexServer
from .wheels import build_family_wheel, build_torch_wheel, build_wheel

MIRRORED_VARIANTS = ("cu126", "cu128")
EXTRA_PACKAGE = "matrix-extra"  # on every PyPI-like index here; only an extra requirements file asks for it
RTX_4070 = {"ENVBUILD_CUDA_DRIVER_VERSION": "570.133.07", "ENVBUILD_GPU_COMPUTE_CAP": "8.9"}


@dataclass(frozen=True)
class MatrixIndex:
    catalogue: Catalogue

    @property
    def server(self) -> IndexServer:
        return self.catalogue.server

    @property
    def pypi_url(self) -> str:
        return self.catalogue.pypi_url

    @property
    def pytorch_base(self) -> str:
        return self.catalogue.pytorch_base

    @property
    def pypi_cuda_url(self) -> str:
        return f"{self.catalogue.url}/pypi-cuda/simple"

    @property
    def mirror_base(self) -> str:
        return f"{self.catalogue.url}/mirror/whl"

    @property
    def mirror_pypi_url(self) -> str:
        return f"{self.catalogue.url}/mirror-pypi/simple"


def _copy_into(target: Index, source: Index, folder: Path, *, skip: tuple[str, ...] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for entry in source.files():
        if entry.project in skip:
            continue
        path = folder / entry.filename
        path.write_bytes(entry.data)
        target.add(path)


@contextmanager
def matrix_index(wheel_dir: Path) -> Iterator[MatrixIndex]:
    """Start the server with every index above; stop it when the block ends."""
    with IndexServer() as server:
        catalogue = build_standard_catalogue(server, wheel_dir / "standard")
        catalogue.pypi.add(build_wheel(wheel_dir / "extra", EXTRA_PACKAGE, "1.0"))  # what no input asks for
        pypi_cuda = server.add_index("pypi-cuda/simple")
        folder = wheel_dir / "pypi-cuda"
        _copy_into(pypi_cuda, catalogue.pypi, folder, skip=("torch",))  # the planted torch 99 stays out
        for version, cuda in (("2.7.1", "12.6"), ("2.8.0", "12.8")):
            pypi_cuda.add(build_torch_wheel(folder, version, cuda=cuda))
        for family, versions in (("torchvision", (("0.22.1", "2.7.1"), ("0.23.0", "2.8.0"))),
                                 ("torchaudio", (("2.7.1", "2.7.1"), ("2.8.0", "2.8.0")))):
            for version, torch in versions:
                pypi_cuda.add(build_family_wheel(folder, family, version, torch))
        for variant in MIRRORED_VARIANTS:
            _copy_into(server.add_index(f"mirror/whl/{variant}"), catalogue.torch_index(variant),
                       wheel_dir / "mirror" / variant)
        _copy_into(server.add_index("mirror-pypi/simple"), catalogue.pypi, wheel_dir / "mirror-pypi")
        yield MatrixIndex(catalogue)


def isolated_env(index: MatrixIndex, uv_bin: Path, *, uv_cache: Path, envbuild_cache: Path, home: Path,
                 extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What `uv_env` (tests/conftest.py) gives one test, for a whole module: the machine's uv/pip
    settings out, the loopback indexes in, envbuild's per-user cache and config in `home`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("UV_", "PIP_", "ENVBUILD_")) and k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env.update({
        "UV_CACHE_DIR": str(uv_cache),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_DEFAULT_INDEX": index.pypi_url,
        "ENVBUILD_PYTORCH_INDEX": index.pytorch_base,
        "ENVBUILD_CACHE_DIR": str(envbuild_cache),
        "ENVBUILD_USER_CONFIG": str(home / "no-user-config.toml"),
        "PIP_CONFIG_FILE": os.devnull,
        "UV_NO_PROGRESS": "1",
        "UV_PYTHON": sys.executable,
        "XDG_CONFIG_HOME": str(home / "xdg-config"),
        "PATH": os.pathsep.join([str(uv_bin.parent), os.environ.get("PATH", "")]),
    })
    env.update(extra or {})
    return env
