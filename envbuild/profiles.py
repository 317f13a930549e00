"""Torch profiles: which PyTorch build a GPU needs, kept as data in `profiles/*.toml`.

Index choices move every few months (cu124 stopped at torch 2.6.0, the nightly moved on), so
nothing here is hard-coded: a profile file states its index, the torch-family packages pinned to
it, their versions and the platforms a lock must cover. A deployment's own `profiles/` folder
can add profiles or replace built-in ones by name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from envbuild.errors import ConfigError, ProfileError
from envbuild.tomlfile import check_keys, expect, expect_str_list, load_toml

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
SCHEMA = 1
ACCELERATORS = ("cpu", "cuda", "rocm", "xpu", "mps")
CHANNELS = ("stable", "nightly")
_CREDENTIALS = "carries a user name or password"
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
_TOP_KEYS = {"schema", "name", "description", "accelerator", "accelerator-version", "channel",
             "local-version", "index", "packages", "platforms", "pypi", "companions"}


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
        for package in (*self.packages, *self.pypi_packages, *self.companions):
            _ = package.specifier, package.marker
        _ = self.environments, self.required_environments
        return self

    def digest_parts(self) -> list[str]:
        """What of a profile shapes its lock, as written (comments and descriptions do not count)."""
        return [self.index_url or "", *(p.as_written() for p in self.packages), *self.environments_as_written,
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

        PyPI's CUDA builds exist for Linux x86_64 only, so the variant locks for that platform alone.
        """
        if not self.pypi_packages or self.index_url is None:
            return None
        return self._replace(
            name=f"{self.name}{PYPI_SUFFIX}", description=f"{self.description}; torch from PyPI",
            index_name=None, index_url=None, packages=self.pypi_packages, pypi_packages=(), local_version=None,
            environments_as_written=(PYPI_CUDA_ENVIRONMENT,), required_environments_as_written=(PYPI_CUDA_ENVIRONMENT,),
            base=self.name, companions=(), companion_indexes=(),  # PyPI's torch: no index to take companions from
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
        return (f"{masked} {_CREDENTIALS} (shown as ***), and envbuild writes index URLs "
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


def builtin_profiles_dir() -> Path:
    """Profiles shipped with envbuild: the wheel's copy, or the repository's `profiles/`."""
    here = Path(__file__).resolve().parent
    packaged = here / "_profiles"
    if packaged.is_dir():
        return packaged
    return here.parent / "profiles"


class ProfileCatalogue(NamedTuple):
    profiles: Mapping[str, TorchProfile]

    def names(self) -> list[str]:
        return sorted(self.profiles, key=_sort_key)

    def with_source(self, profile: TorchProfile, torch_source: str | None) -> TorchProfile:
        """`--torch-source pypi` turns cu130 into cu130-pypi (and says so when a profile has none)."""
        if torch_source in (None, profile.torch_source):
            return profile
        if torch_source == TORCH_SOURCE_PYPI:
            variant = self.profiles.get(f"{profile.name}{PYPI_SUFFIX}")
            if variant is None:
                raise ProfileError(
                    f"profile {profile.name} has no PyPI torch source (no [pypi] table in {profile.path.name})",
                    hint="PyPI's CUDA torch exists for some CUDA versions only; see `envbuild profiles`",
                )
            return variant
        if profile.base is not None:
            return self.get(profile.base)
        raise ProfileError(f"profile {profile.name} takes torch from PyPI; it has no PyTorch index")

    def get(self, name: str, *, listed_in: str | None = None) -> TorchProfile:
        """A profile by name, in any case (`CU126` is cu126). `listed_in`: where the name was written (a
        typo in envbuild.toml must say it is there); a near miss is offered."""
        if name in self.profiles:
            return self.profiles[name]
        folded = {known.lower(): known for known in self.names()}
        if name.lower() in folded:
            return self.profiles[folded[name.lower()]]
        import difflib

        close = difflib.get_close_matches(name.lower(), list(folded), n=1, cutoff=0.6)
        hint = (f"did you mean `{folded[close[0]]}`? " if close else "") + \
            f"known profiles: {', '.join(self.names())} (see `envbuild profiles`)"
        raise ProfileError(f"unknown profile `{name}`" + (f" (listed in {listed_in})" if listed_in else ""),
                           hint=hint)

    def for_cuda(self, version: str) -> TorchProfile:
        """`--cuda 12.6` → the stable profile for that CUDA version (from its PyTorch index); a major
        alone means its newest profile (`--cuda 12` → cu128), `13` and `13.0` alike."""
        wanted = version.strip().lower().removeprefix("cuda").removeprefix("cu").strip()
        stable = [p for p in self.profiles.values()
                  if p.base is None and p.accelerator == "cuda" and p.channel == "stable" and p.accelerator_version]
        exact = [p for p in stable if _same_version(p.accelerator_version, wanted)]
        if not exact and re.fullmatch(r"\d+", wanted):
            exact = sorted((p for p in stable if _version_key(str(p.accelerator_version))[0] == int(wanted)),
                           key=lambda p: _version_key(str(p.accelerator_version)))[-1:]
        if exact:
            return exact[0]
        if wanted == "cpu" and "cpu" in self.profiles:
            return self.profiles["cpu"]
        known = sorted({str(p.accelerator_version) for p in stable}, key=_version_key)
        raise ProfileError(
            f"no profile for CUDA `{version}`",
            hint=f"valid --cuda values: {', '.join(known)} (or --profile NAME; see `envbuild profiles`)",
        )


def _same_version(have: str | None, wanted: str) -> bool:
    """12.6 is 12.6 and 126; 13 is 13.0 (trailing zeros do not count)."""
    if not have:
        return False
    if have.replace(".", "") == wanted.replace(".", ""):
        return True
    if not re.fullmatch(r"\d+(?:\.\d+)*", wanted):
        return False

    def significant(text: str) -> tuple[int, ...]:
        parts = list(_version_key(text))
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return tuple(parts)

    return significant(have) == significant(wanted)


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("."))


def _sort_key(name: str) -> tuple[int, str]:
    order = {"cpu": 0, "cu": 1, "nightly": 2, "rocm": 3, "xpu": 4, "mps": 5}
    for prefix, rank in order.items():
        if name.startswith(prefix):
            return rank, name
    return 9, name


def load_catalogue(extra_dirs: Iterable[Path] = ()) -> ProfileCatalogue:
    """Built-in profiles, then each extra folder's, a later file replacing an earlier one by name.

    Files are listed now and read when a profile is asked for: a command that uses one profile reads
    one file (and a broken file breaks only the commands that use it); listing reads them all.
    """
    files: dict[str, Path] = {}
    for folder in (builtin_profiles_dir(), *extra_dirs):
        if folder.is_dir():
            files.update((path.stem, path) for path in sorted(folder.glob("*.toml")))
    return ProfileCatalogue(_ProfileFiles(files))


class _ProfileFiles(Mapping[str, TorchProfile]):
    """name -> profile, each file parsed on first use; `<name>-pypi` comes from `<name>`'s [pypi] table."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._files = dict(files)
        self._loaded: dict[str, TorchProfile] = {}

    def _load(self, name: str) -> TorchProfile:
        if name not in self._loaded:
            self._loaded[name] = load_profile(self._files[name])
        return self._loaded[name]

    def __getitem__(self, name: str) -> TorchProfile:
        if name in self._files:
            return self._load(name)
        base = name.removesuffix(PYPI_SUFFIX)
        if base != name and base in self._files:
            variant = self._load(base).pypi_variant()
            if variant is not None:
                return variant
        raise KeyError(name)

    def _names(self) -> list[str]:
        names = list(self._files)
        names += [f"{n}{PYPI_SUFFIX}" for n in self._files
                  if f"{n}{PYPI_SUFFIX}" not in self._files and self._load(n).pypi_variant() is not None]
        return names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


def load_profile(path: Path) -> TorchProfile:
    data = load_toml(path)
    check_keys(data, _TOP_KEYS, "", path)
    schema = expect(data.get("schema", SCHEMA), int, "schema", path)
    if schema != SCHEMA:
        raise ConfigError(path, f"profile schema {schema} is not supported (this envbuild reads {SCHEMA})",
                          hint="upgrade envbuild")
    name = _required_str(data, "name", path)
    if name != path.stem:
        raise ConfigError(path, f"`name = \"{name}\"` does not match the file name `{path.stem}.toml`")
    accelerator = _required_str(data, "accelerator", path)
    one_of(accelerator, ACCELERATORS, "accelerator", path)
    channel = expect(data.get("channel", "stable"), str, "channel", path)
    one_of(channel, CHANNELS, "channel", path)
    version = data.get("accelerator-version")
    if accelerator in ("cuda", "rocm") and version is None:
        raise ConfigError(path, f"`accelerator-version` is required for accelerator `{accelerator}`")
    index = expect(data.get("index", {}), dict, "index", path)
    check_keys(index, {"name", "url"}, "index.", path)
    if accelerator in ("cuda", "rocm", "xpu") and not index:
        raise ConfigError(path, f"an `{accelerator}` profile needs an `[index]` (name and url)",
                          hint="only profiles whose torch comes from PyPI (cpu on PyPI, mps) go without one")
    platforms = expect(data.get("platforms", {}), dict, "platforms", path)
    check_keys(platforms, {"environments", "required-environments"}, "platforms.", path)
    url = _required_str(index, "url", path, prefix="index.").rstrip("/") if index else None
    problem = index_url_problem(url) if url else None
    if problem:
        raise ConfigError(path, f"`index.url`: {problem}", hint=credentials_hint(index.get("name"))
                          if _CREDENTIALS in problem else None)
    packages = pinned_packages(expect(data.get("packages", {}), dict, "packages", path), "packages", path)
    companions, companion_indexes = _companions(data.get("companions"), bool(index), path)
    if "torch" not in {p.name for p in packages}:
        raise ConfigError(path, "`[packages]` must include torch")
    return TorchProfile(
        name=name,
        description=expect(data.get("description", ""), str, "description", path),
        accelerator=accelerator,
        accelerator_version=expect(version, str, "accelerator-version", path) if version is not None else None,
        channel=channel,
        local_version=_optional_str(data, "local-version", path),
        index_name=_required_str(index, "name", path, prefix="index.") if index else None,
        index_url=url,
        packages=packages,
        environments_as_written=tuple(
            expect_str_list(platforms.get("environments", []), "platforms.environments", path)),
        required_environments_as_written=tuple(
            expect_str_list(platforms.get("required-environments", []), "platforms.required-environments", path)),
        path=path,
        pypi_packages=pinned_packages(expect(data.get("pypi", {}), dict, "pypi", path), "pypi", path),
        companions=companions,
        companion_indexes=companion_indexes,
    )


def _companions(value: Any, has_index: bool,
                path: Path) -> tuple[tuple[PinnedPackage, ...], tuple[CompanionIndex, ...]]:
    """Most profiles have none: a no-op lock (which loads the profile) then never imports companions."""
    if value is None:
        return (), ()
    from envbuild.companions import companions_table

    return companions_table(value, has_index, path)


def pinned_packages(table: Mapping[str, Any], key: str, path: Path,
              allowed: frozenset[str] = TORCH_FAMILY_NAMES) -> tuple[PinnedPackage, ...]:
    result = []
    for raw_name, value in sorted(table.items()):
        name = canonical_name(raw_name)
        where = f"{key}.{raw_name}"
        if name not in allowed:
            raise ConfigError(path, f"`{where}`: {raw_name!r} is not a torch-family package, and only those may "
                              "be pinned to a profile's index", hint="a profile's [packages] and [pypi] tables "
                              f"name only {', '.join(sorted(TORCH_FAMILY_NAMES))}; other packages come from "
                              "the default index through the deployment's requirements")
        marker_text = None
        if isinstance(value, dict):
            check_keys(value, {"version", "marker"}, f"{where}.", path)
            spec_text = expect(value.get("version", ""), str, f"{where}.version", path)
            marker_text = value.get("marker")
            if marker_text is not None:
                expect(marker_text, str, f"{where}.marker", path)
        else:
            spec_text = expect(value, str, where, path)
        result.append(PinnedPackage(name, spec_text, marker_text or None, path, where))
    return tuple(result)


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


def _required_str(table: Mapping[str, Any], key: str, path: Path, prefix: str = "") -> str:
    if key not in table:
        raise ConfigError(path, f"missing required key `{prefix}{key}`")
    value = expect(table[key], str, prefix + key, path)
    if not value.strip():
        raise ConfigError(path, f"`{prefix}{key}` must not be empty")
    return str(value)


def _optional_str(table: Mapping[str, Any], key: str, path: Path) -> str | None:
    value = table.get(key)
    return None if value is None else str(expect(value, str, key, path))


def one_of(value: str, allowed: tuple[str, ...], key: str, path: Path) -> None:
    if value not in allowed:
        raise ConfigError(path, f"`{key} = \"{value}\"` is not one of: {', '.join(allowed)}")
