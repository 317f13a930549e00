"""The profile catalogue: every profile a deployment can use, found by name or CUDA version.

Built-in profiles ship with envbuild; a deployment's own `profiles/` folder adds profiles or
replaces built-in ones by name, and each `[pypi]` table adds a `<name>-pypi` variant. Files are
listed at start-up and read on first use, so a command that uses one profile reads one file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from envbuild.core.errors import ProfileError
from envbuild.torch.profile import PYPI_SUFFIX, TORCH_SOURCE_PYPI, TorchProfile
from envbuild.torch.profile_file import load_profile


def builtin_profiles_dir() -> Path:
    """Profiles shipped with envbuild: the wheel's copy, or the repository's `profiles/`."""
    package = Path(__file__).resolve().parent.parent  # envbuild/
    packaged = package / "_profiles"
    if packaged.is_dir():
        return packaged
    return package.parent / "profiles"


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
