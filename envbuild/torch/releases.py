"""Which releases on an index count for a profile, and the newest set of them that fits together.

A release counts for a platform when one of its wheels installs there for the lowest CPython the
deployment supports (a cpXY wheel for exactly that Python, an abi3 or py3 wheel for it or older).
Dependencies between the torch family come from wheel metadata (torchvision and torchaudio pin
torch exactly), and resolvelib finds the newest combination, as a resolver would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version
from resolvelib import AbstractProvider, BaseReporter, Resolver
from resolvelib.resolvers import ResolutionImpossible, ResolutionTooDeep

from envbuild.core.errors import UsageError
from envbuild.core.http.errors import IndexReadError
from envbuild.core.http.indexclient import DistFile, IndexClient, Page

FAMILY = ("torch", "torchvision", "torchaudio")
_LINUX = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}
_WIN = {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"}
_MAC = {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"}
# platform -> (marker environment, the wheel platform tags that install there)
PLATFORMS: dict[str, tuple[dict[str, str], str]] = {
    "linux-x86_64": ({**_LINUX, "platform_machine": "x86_64"}, r"(manylinux\w*|linux)_x86_64"),
    "linux-aarch64": ({**_LINUX, "platform_machine": "aarch64"}, r"(manylinux\w*|linux)_aarch64"),
    "win-amd64": ({**_WIN, "platform_machine": "AMD64"}, r"win_amd64"),
    "win-arm64": ({**_WIN, "platform_machine": "ARM64"}, r"win_arm64"),
    "macos-arm64": ({**_MAC, "platform_machine": "arm64"}, r"macosx_\d+_\d+_(arm64|universal2)"),
    "macos-x86_64": ({**_MAC, "platform_machine": "x86_64"}, r"macosx_\d+_\d+_(x86_64|intel|universal2?)"),
}
_CUDA_DIST = re.compile(r"nvidia-cuda-runtime(-cu\d+)?|cuda-toolkit")


def lowest_python(requires_python: str) -> tuple[int, int]:
    spec = SpecifierSet(requires_python)
    for minor in range(40):
        if spec.contains(f"3.{minor}.0") or spec.contains(f"3.{minor}.99"):
            return 3, minor
    raise UsageError(f"requires-python {requires_python!r} admits no CPython 3 release")


def environment(platform: str, python: tuple[int, int]) -> dict[str, str]:
    """The marker environment of a platform, for markers in profiles and in wheel metadata."""
    version = f"{python[0]}.{python[1]}"
    return {**PLATFORMS[platform][0], "python_version": version, "python_full_version": f"{version}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def marker_platforms(markers: Sequence[str], python: tuple[int, int]) -> tuple[str, ...]:
    """The known platforms a list of environment markers describes (any marker true)."""
    parsed = [Marker(m) for m in markers]
    return tuple(p for p in PLATFORMS if any(m.evaluate(environment(p, python)) for m in parsed))


def wheel_platforms(dist: DistFile, python: tuple[int, int]) -> tuple[set[str], set[str]]:
    """(platforms the wheel installs on for that CPython, platforms it installs on for any Python)."""
    try:
        tags = parse_wheel_filename(dist.filename)[3]
    except (InvalidWheelFilename, InvalidVersion):
        return set(), set()
    here: set[str] = set()
    anywhere: set[str] = set()
    python_ok = dist.requires_python is None or _admits(dist.requires_python, f"{python[0]}.{python[1]}.0")
    for tag in tags:
        keys = set(PLATFORMS) if tag.platform == "any" else {
            key for key, (_, pattern) in PLATFORMS.items() if re.fullmatch(pattern, tag.platform)}
        anywhere |= keys
        if python_ok and _python_fits(tag.interpreter, tag.abi, python):
            here |= keys
    return here, anywhere


def _admits(spec: str, version: str) -> bool:
    try:
        return SpecifierSet(spec).contains(version, prereleases=True)
    except InvalidSpecifier:
        return True  # an unreadable Requires-Python does not hide a wheel; installers ignore it too


def _python_fits(interpreter: str, abi: str, python: tuple[int, int]) -> bool:
    found = re.fullmatch(r"(cp|py)(\d)(\d*)", interpreter)
    if not found or int(found.group(2)) != python[0]:
        return False
    minor = int(found.group(3)) if found.group(3) else None
    if found.group(1) == "py":
        return minor is None or minor <= python[1]
    if abi == "abi3":
        return minor is not None and minor <= python[1]
    return minor == python[1] and abi in (f"cp{python[0]}{python[1]}", "none")


@dataclass
class Releases:
    """One package on one index, by public version: a wheel of each counting release (for its
    metadata), and why each other release does not count."""

    files: dict[Version, DistFile] = field(default_factory=dict)
    left_out: dict[Version, str] = field(default_factory=dict)

    def newest_seen(self) -> Version | None:
        return max([*self.files, *self.left_out], default=None)


def releases(page: Page, platforms: Sequence[str], python: tuple[int, int], *, local: str | None,
             strict_local: bool, prerelease: bool) -> Releases:
    """`strict_local`: only wheels labelled `+<local>` or unlabelled (the cpu index also lists
    `+cpu.cxx11.abi` builds; PyPI has no labels at all)."""
    wheels: dict[Version, list[DistFile]] = {}
    for dist in page.files:
        if dist.yanked or not dist.filename.endswith(".whl"):
            continue
        try:
            version = parse_wheel_filename(dist.filename)[1]
        except (InvalidWheelFilename, InvalidVersion):
            continue
        if (strict_local and version.local not in (None, local)) or (version.is_prerelease and not prerelease):
            continue
        wheels.setdefault(Version(version.public), []).append(dist)
    result = Releases()
    for version, dists in sorted(wheels.items()):
        here: dict[str, DistFile] = {}
        anywhere: set[str] = set()
        for dist in dists:
            fits, any_python = wheel_platforms(dist, python)
            anywhere |= any_python
            for key in sorted(fits):
                here.setdefault(key, dist)
        missing = [p for p in platforms if p not in here]
        if not missing:
            result.files[version] = here[platforms[0]]
        else:
            result.left_out[version] = "; ".join(
                f"no CPython {python[0]}.{python[1]} wheel for {p}" if p in anywhere else f"no wheel for {p}"
                for p in missing)
    return result


class Metadata:
    """Wheel metadata, read once per file (PEP 658 or range reads) and shared by every table."""

    def __init__(self, client: IndexClient) -> None:
        self.client = client
        self._memo: dict[str, Message | IndexReadError] = {}

    @property
    def errors(self) -> list[IndexReadError]:
        return [found for found in self._memo.values() if isinstance(found, IndexReadError)]

    def prefetch(self, dists: Sequence[DistFile]) -> None:
        todo = list({d.url: d for d in dists if d.url not in self._memo}.values())
        for dist, raw in zip(todo, self.client.map(self.client.metadata, todo), strict=True):
            self._memo[dist.url] = raw if isinstance(raw, IndexReadError) else _parse(raw)

    def requirements(self, dist: DistFile, env: Mapping[str, str]) -> list[Requirement] | None:
        """Requires-Dist that apply in `env`; None when the metadata could not be read."""
        self.prefetch([dist])
        found = self._memo[dist.url]
        if isinstance(found, IndexReadError):
            return None
        result = []
        for line in found.get_all("Requires-Dist") or []:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if requirement.marker is None or requirement.marker.evaluate(dict(env)):
                result.append(requirement)
        return result


def _parse(raw: bytes) -> Message:
    return BytesParser().parsebytes(raw, headersonly=True)


def scan(versions: Sequence[Version], check: Callable[[Version], bool], prefetch: Callable[[Sequence[Version]], None],
         batch: int = 16) -> Iterator[Version]:
    """The versions that pass `check`, in the given order, their metadata fetched `batch` at a time."""
    for start in range(0, len(versions), batch):
        chunk = versions[start:start + batch]
        prefetch(chunk)
        yield from (v for v in chunk if check(v))


def public_spec(spec: SpecifierSet) -> SpecifierSet:
    """`==2.7.1+cu126` becomes `==2.7.1`: candidates are public versions."""
    return SpecifierSet(",".join(f"{s.operator}{s.version.split('+')[0]}" for s in spec))


def cuda_of(requirements: Sequence[Requirement]) -> str | None:
    """The CUDA a PyPI torch wheel is built for, from its CUDA runtime requirement."""
    for requirement in requirements:
        if _CUDA_DIST.fullmatch(canonicalize_name(requirement.name)):
            for spec in requirement.specifier:
                if spec.operator == "==":
                    version = Version(spec.version.removesuffix(".*"))
                    return f"{version.major}.{version.minor}"
    return None


@dataclass(frozen=True)
class Need:
    name: str
    spec: SpecifierSet


@dataclass(frozen=True)
class Pick:
    name: str
    version: Version


class _Provider(AbstractProvider):  # type: ignore[type-arg]
    def __init__(self, versions: Mapping[str, Sequence[Version]], needs: Callable[[str, Version], list[Need] | None],
                 counts: Callable[[str, Version], bool]) -> None:
        self.versions = versions
        self.needs = needs
        self.counts = counts

    def identify(self, requirement_or_candidate: Need | Pick) -> str:
        return requirement_or_candidate.name

    def get_preference(self, identifier: str, *args: object, **kwargs: object) -> int:
        return 0 if identifier == "torch" else 1  # torch first: the others follow its version

    def find_matches(self, identifier: str, requirements: Mapping[str, Iterator[Need]],
                     incompatibilities: Mapping[str, Iterator[Pick]]) -> list[Pick]:
        wanted = list(requirements[identifier])
        bad = {pick.version for pick in incompatibilities[identifier]}
        return [Pick(identifier, v) for v in sorted(self.versions.get(identifier, ()), reverse=True)
                if v not in bad and all(n.spec.contains(v, prereleases=True) for n in wanted)
                and self.counts(identifier, v)]

    def is_satisfied_by(self, requirement: Need, candidate: Pick) -> bool:
        return requirement.spec.contains(candidate.version, prereleases=True)

    def get_dependencies(self, candidate: Pick) -> list[Need]:
        return self.needs(candidate.name, candidate.version) or []


def newest_set(versions: Mapping[str, Sequence[Version]], specs: Mapping[str, SpecifierSet],
               needs: Callable[[str, Version], list[Need] | None],
               counts: Callable[[str, Version], bool]) -> dict[str, Version] | None:
    """The newest counting versions that satisfy `specs` and each other's pins; None if there are
    none. `needs` gives a release's pins on the others (None: its metadata could not be read)."""
    resolver: Resolver[Need, Pick, str] = Resolver(_Provider(versions, needs, counts), BaseReporter())
    try:
        result = resolver.resolve([Need(name, spec) for name, spec in specs.items()], max_rounds=2000)
    except (ResolutionImpossible, ResolutionTooDeep):
        return None
    return {name: specs_pick.version for name, specs_pick in result.mapping.items()}
