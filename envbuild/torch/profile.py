"""Torch profiles: which PyTorch build a GPU needs, kept as data in `profiles/*.toml`.

Index choices move every few months (cu124 stopped at torch 2.6.0, the nightly moved on), so
nothing here is hard-coded: a profile file states its index, the torch-family packages pinned to
it, their versions and the platforms a lock must cover. This module is the profile as a value and
the rules every reader of one shares (which names a profile may pin, what an index URL may be);
reading a file is `profile_file`, finding a profile by name or CUDA version is `profile_catalogue`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from envbuild.core.errors import ConfigError

if TYPE_CHECKING:
    from packaging.markers import Marker
    from packaging.specifiers import SpecifierSet

CANONICAL_PYTORCH_BASE = "https://download.pytorch.org/whl"
PYPI_SIMPLE = "https://pypi.org/simple"  # uv's default index
TORCH_SOURCE_INDEX = "pytorch-index"
TORCH_SOURCE_PYPI = "pypi"
PYPI_SUFFIX = "-pypi"
PYPI_CUDA_ENVIRONMENT = 'sys_platform == "linux" and platform_machine == "x86_64"'  # as str(Marker(...)) writes it
PYTORCH_INDEX_ENV = "ENVBUILD_PYTORCH_INDEX"
CREDENTIALS_PROBLEM = "carries a user name or password"
_SEPARATORS = re.compile(r"[-_.]+")
# The only names a profile may pin to its index: torch's own packages and the triton builds torch
# pins. Any other name would route an ordinary package (numpy, ...) to the PyTorch index, the
# dependency confusion the explicit index exists to prevent, so a profile naming one is refused.
TORCH_CORE_NAMES = frozenset({"torch", "torchvision", "torchaudio"})
TRITON_NAMES = frozenset({"triton", "pytorch-triton", "pytorch-triton-rocm", "pytorch-triton-xpu",
                          "triton-rocm", "triton-xpu"})
TORCH_FAMILY_NAMES = TORCH_CORE_NAMES | TRITON_NAMES
# Names only PyTorch's index should serve (PyPI holds placeholders at best): a lock may take one only
# from a profile that pins it. `torchtriton` is the name the December 2022 attack published on PyPI.
# `triton` is not here: the Triton project publishes it on PyPI, where torch's CUDA wheels take it.
PYTORCH_INDEX_ONLY_NAMES = (TRITON_NAMES - {"triton"}) | {"torchtriton"}


class PinnedPackage(NamedTuple):
    """A torch-family package: a direct dependency, taken only from the profile's index.

    Kept as written; `packaging` parses it on first use. A no-op `lock`/`sync` compares the profile's
    digest with the lock's and never needs more, so it skips the ~40 ms that importing `packaging` costs.
    `TorchProfile.validate()` (every lock, `envbuild profiles`) parses eagerly.
    """

    name: str
    specifier_text: str
    marker_text: str | None = None
    path: Path = Path()  # the profile file, for error messages
    key: str = ""  # e.g. "packages.torch"

    @property
    def specifier(self) -> SpecifierSet:
        return parse_specifier(self.specifier_text, self.key, self.path)

    @property
    def marker(self) -> Marker | None:
        return parse_marker(self.marker_text, f"{self.key}.marker", self.path) if self.marker_text else None

    def requirement_text(self) -> str:
        spec = ",".join(sorted(str(s) for s in self.specifier))
        return f"{self.name}{spec}" + (f"; {self.marker}" if self.marker else "")

    def as_written(self) -> str:
        return f"{self.name} {self.specifier_text}" + (f"; {self.marker_text}" if self.marker_text else "")


class CompanionIndex(NamedTuple):
    """A prebuilt-wheel index a profile takes one companion from (flash-attn's, PyG's): explicit, for it alone."""

    name: str  # the companion
    url: str
    format: str = "simple"  # "flat": one page of wheel links (a find-links page such as data.pyg.org's)

    @property
    def index_name(self) -> str:
        return f"companion-{self.name}"


class TorchProfile(NamedTuple):
    name: str
    description: str
    accelerator: str
    accelerator_version: str | None
    channel: str
    local_version: str | None
    index_name: str | None  # None: the torch family comes from the default index (PyPI)
    index_url: str | None  # canonical URL as written in the profile file
    packages: tuple[PinnedPackage, ...]
    environments_as_written: tuple[str, ...]
    required_environments_as_written: tuple[str, ...]
    path: Path
    pypi_packages: tuple[PinnedPackage, ...] = ()
    base: str | None = None  # for a "-pypi" variant: the profile it derives from
    # Compiled against torch (xformers, ...): taken from the profile's index when an input asks (companions.py).
    companions: tuple[PinnedPackage, ...] = ()
    companion_indexes: tuple[CompanionIndex, ...] = ()  # companions not from the profile's own index
    # The -pypi variant's companions, from PyPI: its releases built for the CUDA of PyPI's torch ([pypi.companions]).
    pypi_companions: tuple[PinnedPackage, ...] = ()
    # The newest torch minor its line was built for ("2.14"): None while the line is current (`last-torch`).
    last_torch: str | None = None
    pypi_last_torch: str | None = None  # the -pypi variant's own (PyPI moves torch to another CUDA)
    # The -pypi variant's platforms ([pypi.platforms]); empty: Linux x86_64 alone (PYPI_CUDA_ENVIRONMENT).
    pypi_environments: tuple[str, ...] = ()
    pypi_required_environments: tuple[str, ...] = ()
    # The Pythons its torch has wheels for (`requires-python`; torch 2.15 has no cp310): None, any.
    requires_python: str | None = None
    pypi_requires_python: str | None = None

    @property
    def ended(self) -> bool:
        return self.last_torch is not None

    @property
    def environments(self) -> tuple[str, ...]:
        """Normalized as uv writes them back into a lock (str(Marker))."""
        return tuple(str(parse_marker(t, "platforms.environments", self.path)) for t in self.environments_as_written)

    @property
    def required_environments(self) -> tuple[str, ...]:
        return tuple(str(parse_marker(t, "platforms.required-environments", self.path))
                     for t in self.required_environments_as_written)

    def validate(self) -> TorchProfile:
        """Parse every specifier and marker now, so a bad one fails before anything is written."""
        for package in (*self.packages, *self.pypi_packages, *self.companions, *self.pypi_companions):
            _ = package.specifier, package.marker
        _ = self.environments, self.required_environments
        return self

    def digest_parts(self) -> list[str]:
        """What of a profile shapes its lock, as written (comments and descriptions do not count)."""
        return [self.index_url or "", *(p.as_written() for p in self.packages), *self.environments_as_written,
                *([f"requires-python {self.requires_python}"] if self.requires_python else []),
                "|", *self.required_environments_as_written, self.channel,
                *(["companions:", *(p.as_written() for p in self.companions),
                   *(f"{c.name} from {c.url} ({c.format})" for c in self.companion_indexes)]
                  if self.companions else [])]

    def companion_index(self, name: str) -> CompanionIndex | None:
        return next((c for c in self.companion_indexes if c.name == name), None)

    @property
    def prerelease(self) -> bool:
        return self.channel == "nightly"

    @property
    def torch_source(self) -> str:
        return TORCH_SOURCE_INDEX if self.index_url else TORCH_SOURCE_PYPI

    def pypi_variant(self) -> TorchProfile | None:
        """The same CUDA from PyPI's own torch wheels, where the PyTorch index cannot be reached.

        PyPI's CUDA builds are Linux only: x86_64 always, aarch64 from torch 2.11 (`[pypi.platforms]`
        says so); the variant locks for those platforms alone.
        """
        if not self.pypi_packages or self.index_url is None:
            return None
        environments = self.pypi_environments or (PYPI_CUDA_ENVIRONMENT,)
        return self._replace(
            name=f"{self.name}{PYPI_SUFFIX}", description=f"{self.description}; torch from PyPI",
            index_name=None, index_url=None, packages=self.pypi_packages, pypi_packages=(), local_version=None,
            environments_as_written=environments,
            required_environments_as_written=self.pypi_required_environments or environments,
            base=self.name, companions=self.pypi_companions, companion_indexes=(), pypi_companions=(),
            last_torch=self.pypi_last_torch, pypi_last_torch=None, pypi_environments=(), pypi_required_environments=(),
            requires_python=self.pypi_requires_python or self.requires_python, pypi_requires_python=None,
        )

    def package_names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.packages)


def index_url_problem(url: str) -> str | None:
    """Why a URL cannot be an index envbuild writes into a lock (None: it can). Credentials are refused
    because locks are committed; the URL is shown with them masked."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "file") or not (parts.netloc or scheme == "file"):
        return f"{url!r} is not an http(s) or file URL"
    if "@" in parts.netloc:
        masked = urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))
        return (f"{masked} {CREDENTIALS_PROBLEM} (shown as ***), and envbuild writes index URLs "
                "into locks/, which are committed")
    return None


def credentials_hint(index_name: str | None) -> str:
    """uv's own per-index credential variables, which never reach a file."""
    var = re.sub(r"[^A-Z0-9]", "_", (index_name or "NAME").upper())
    return (f"give the URL without them, and the credentials to uv as UV_INDEX_{var}_USERNAME and "
            f"UV_INDEX_{var}_PASSWORD (one pair per profile index)")


def rebase_pytorch_url(url: str, base: str | None) -> str:
    if not base:
        return url
    if url.startswith(CANONICAL_PYTORCH_BASE + "/"):
        return base.rstrip("/") + url[len(CANONICAL_PYTORCH_BASE):]
    return url


def canonical_name(name: str) -> str:
    """PEP 503 normalization (what `packaging.utils.canonicalize_name` does), without importing packaging."""
    return _SEPARATORS.sub("-", name).lower()


@functools.lru_cache(maxsize=256)
def parse_specifier(text: str, key: str, path: Path) -> SpecifierSet:
    """Parsed once per process (profiles are values, read many times on a lock's slow path)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise ConfigError(path, f"`{key}` is not a version specifier: {text!r}") from None


@functools.lru_cache(maxsize=256)
def parse_marker(text: str, key: str, path: Path) -> Marker:
    from packaging.markers import InvalidMarker, Marker

    try:
        return Marker(text)
    except InvalidMarker as exc:
        raise ConfigError(path, f"`{key}` has an invalid marker {text!r}: {exc}") from None
