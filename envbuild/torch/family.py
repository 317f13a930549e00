"""The rules every merge obeys, whoever asked: the torch family belongs to the profile, torchaudio only
with a torch of its own minor, and of packages that overwrite each other's import module only one is kept.

Kept apart from input discovery (envbuild.comfy.inputs) so each stays short; both run on every lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from envbuild.core.errors import ConflictError, RequirementFileError
from envbuild.torch.profile import PYTORCH_INDEX_ONLY_NAMES, PinnedPackage, TorchProfile

if TYPE_CHECKING:
    from envbuild.pkgs.merging import MergeResult
    from envbuild.pkgs.requirements import Diagnostic, SourcedRequirement
    from envbuild.pkgs.uvlock import LockFile
    from envbuild.torch.variants import VariantGroup


def guard_torch_family(family: list[SourcedRequirement], inputs: list[SourcedRequirement],
                        profile: TorchProfile) -> None:
    """No input may move the torch family off the profile's index or versions, whatever its marker."""
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name

    from envbuild.pkgs.merging import specifiers_satisfiable

    pinned = {canonicalize_name(req.requirement.name): req for req in family}
    for item in inputs:
        name = canonicalize_name(item.requirement.name)
        anchor = pinned.get(name)
        if anchor is None:
            if name in PYTORCH_INDEX_ONLY_NAMES:
                _refuse_unpinned_triton(item, name, profile)
            continue
        if item.requirement.url:
            raise ConflictError(name, [
                f"{item.text} from {item.origin}",
                f"{anchor.text} from {anchor.origin}",
            ], hint=f"the profile pins {name} to its own index; remove the URL line or exclude the node")
        combined = SpecifierSet(f"{item.requirement.specifier},{anchor.requirement.specifier}".strip(","))
        if not specifiers_satisfiable(combined):
            node = item.origin.source.removeprefix("node ") if item.origin.source.startswith("node ") else "NAME"
            raise ConflictError(name, [
                f"{item.text} from {item.origin}",
                f"{anchor.text} from {anchor.origin}",
            ], hint=f"{item.origin.source} needs a {name} this profile does not provide: "
                    f"choose another profile (--profile), or leave the node out with --exclude-node {node}")


def _refuse_unpinned_triton(item: SourcedRequirement, name: str, profile: TorchProfile) -> None:
    """A name only PyTorch's index serves, which this profile does not pin to that index: uv would take
    whatever the default index (PyPI) serves under it, as in the 2022 `torchtriton` attack."""
    source = item.origin.source
    way_out = (f"leave the node out with --exclude-node {source.removeprefix('node ')}, or "
               if source.startswith("node ") else "remove the line, or ")
    raise RequirementFileError(
        item.origin.path, item.origin.line or None,
        f"`{item.text}` ({source}): {name} is served only by PyTorch's index, and profile {profile.name} does "
        "not pin it there, so the lock would take whatever the default index (PyPI) serves under that name "
        "(the dependency confusion of the 2022 torchtriton attack)",
        hint=f"{way_out}choose a profile whose [packages] pin {name} (see `envbuild profiles`)",
    )


def settle_clobbering(
    requirements: list[SourcedRequirement], constraints: list[SourcedRequirement], profile: TorchProfile,
    groups: Sequence[VariantGroup],
) -> tuple[list[SourcedRequirement], list[SourcedRequirement], list[Diagnostic]]:
    """When inputs ask for several members of a variant group (opencv's, onnxruntime's: envbuild.torch.variants),
    keep one and rename the rest.

    Each variant installs the same module, and whichever pip or uv installs last overwrites the
    others' files: which `cv2` a node imports would depend on install order. The replaced lines
    keep their specifiers, extras and markers, so they still constrain the version of the one kept.
    """
    from packaging.utils import canonicalize_name

    from envbuild.pkgs.requirements import Diagnostic

    notes: list[Diagnostic] = []
    for group in groups:
        items = [i for i in (*requirements, *constraints) if canonicalize_name(i.requirement.name) in group.members]
        asked: set[str] = {canonicalize_name(i.requirement.name) for i in items if not i.requirement.url}
        if len(asked) < 2:
            continue
        chosen, why = group.choose(asked, profile)
        replaced = [i for i in items if canonicalize_name(i.requirement.name) != chosen and not i.requirement.url]
        if replaced:  # one note per group, naming every line replaced (not one per line, each naming all)
            lines = "; ".join(sorted({f"{i.requirement.name} from {i.origin}" for i in replaced}))
            dropped = sorted({f"{i.requirement.name}[{','.join(sorted(i.requirement.extras))}]" for i in replaced
                              if i.requirement.extras})
            extras = (f"; extras dropped ({', '.join(dropped)}): they are the replaced build's, not {chosen}'s"
                      if dropped else "")
            kept = sorted({str(i.origin) for i in items if canonicalize_name(i.requirement.name) == chosen})
            asked_by = f" (asked by {'; '.join(kept)})" if kept else ""
            notes.append(Diagnostic(replaced[0].origin, f"the `{group.module}` module: {chosen} kept{asked_by}, "
                                    f"replacing {lines} (every variant installs `{group.module}` and overwrites the "
                                    f"others; {why}){extras}"))
        requirements = [_renamed(i, group, chosen) for i in requirements]
        constraints = [_renamed(i, group, chosen) for i in constraints]
    return requirements, constraints, notes


def _renamed(item: SourcedRequirement, group: VariantGroup, chosen: str) -> SourcedRequirement:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from envbuild.pkgs.requirements import SourcedRequirement

    req = item.requirement
    name = canonicalize_name(req.name)
    if name not in group.members or name == chosen or req.url:
        return item
    # The replaced build's extras are its own (opencv-python[ffmpeg] names nothing opencv-contrib-python-headless
    # defines): the version bounds and markers carry over, the extras do not.
    marker = f"; {req.marker}" if req.marker else ""
    return SourcedRequirement(Requirement(f"{chosen}{req.specifier}{marker}"), item.origin,
                              f"{item.text} (as {chosen})")


# --------------------------------------------------------------------------- torchaudio: paired with torch's minor
AUDIO = "torchaudio"
EXCLUDABLE = frozenset({AUDIO})  # family members ComfyUI runs without: `[lock] exclude` may name them
# What ComfyUI does without torchaudio (its code): said wherever envbuild leaves it out or refuses it.
WITHOUT_AUDIO = ("ComfyUI from about v0.36 does not need it (PR #16457 replaced it with comfy/audio.py); older "
                 "ComfyUI imports it at start (comfy/ldm/lightricks/vae/audio_vae.py through comfy/sd.py) and does "
                 "not start without it, and custom nodes that import it fail to load")


def audio_minors() -> frozenset[str]:
    """The torch minors a torchaudio release exists for (envbuild/data/torch_bound.toml, with its source)."""
    from envbuild.torch.torch_bound import bound_rules

    return frozenset(next((r.minors for r in bound_rules() if r.package == AUDIO), {}))


def torch_minors(profile: TorchProfile) -> list[str]:
    """The torch minors the profile's torch requirement admits (2.0 to 2.60, pre-releases included)."""
    torch = next((p for p in profile.packages if p.name == "torch"), None)
    if torch is None:
        return []
    spec = torch.specifier
    return [f"2.{m}" for m in range(61) if any(spec.contains(f"2.{m}.{tail}", prereleases=True)
                                               for tail in ("0.dev0", "0", "1", "2", "3", "9"))]


def audio_pairs(profile: TorchProfile) -> bool:
    """Does every torch this profile takes have a torchaudio of its minor on the profile's source? Only then
    is torchaudio in the family: uv takes the newest torch, and a torchaudio of another minor is built for
    another torch (2.11 declares no torch requirement, so nothing but this rule keeps them apart)."""
    audio = next((p for p in profile.packages if p.name == AUDIO), None)
    if audio is None:
        return False
    exists, spec = audio_minors(), audio.specifier
    minors = torch_minors(profile)
    return bool(minors) and all(
        minor in exists and any(spec.contains(f"{minor}.{patch}", prereleases=True) for patch in range(10))
        for minor in minors)


def family_packages(profile: TorchProfile, exclude: Sequence[str] = ()) -> tuple[PinnedPackage, ...]:
    """The profile's packages a lock asks for: torchaudio only where it pairs with every torch the profile
    takes and the deployment does not leave it out."""
    keep_audio = AUDIO not in exclude and audio_pairs(profile)
    return tuple(p for p in profile.packages if p.name != AUDIO or keep_audio)


def guard_torchaudio(requirements: list[SourcedRequirement], profile: TorchProfile, exclude: Sequence[str],
                     exclude_where: str) -> tuple[list[SourcedRequirement], list[Diagnostic]]:
    """Before uv: an input asking for torchaudio where the profile's torch has none is refused with the fixes;
    with `[lock] exclude = ["torchaudio"]` the asks are left out, each said."""
    from packaging.utils import canonicalize_name

    from envbuild.pkgs.requirements import Diagnostic

    asks = [r for r in requirements if canonicalize_name(r.requirement.name) == AUDIO and not r.requirement.url]
    if not asks:
        return requirements, []
    if AUDIO in exclude:
        notes = [Diagnostic(r.origin, f"{r.text} left out: {exclude_where} excludes torchaudio ({WITHOUT_AUDIO})")
                 for r in asks]
        return [r for r in requirements if r not in asks], notes
    if audio_pairs(profile):
        return requirements, []
    item = asks[0]
    source = item.origin.source
    node = f"; or leave the node out with --exclude-node {source.removeprefix('node ')}" \
        if source.startswith("node ") else ""
    raise RequirementFileError(
        item.origin.path, item.origin.line or None,
        f"`{item.text}` ({source}): profile {profile.name}'s torch ({_torch_text(profile)}) has no torchaudio of "
        f"its minor: torchaudio's last line is {max(audio_minors(), key=_minor_key)}, each release is built for "
        "one torch minor, and envbuild never pairs torch with another minor's torchaudio",
        hint=f"leave it out with `[lock] exclude = [\"torchaudio\"]` in envbuild.toml ({WITHOUT_AUDIO}); or choose a "
             "profile whose torch stops at a minor torchaudio has (`envbuild profiles`; cu128 ends with 2.11), or "
             f"copy profile {profile.name} into your profiles/ folder with torch capped `<2.12`{node}")


def refuse_unpaired(lock: LockFile, profile: TorchProfile, merged: MergeResult) -> None:
    """After uv: a torchaudio in the lock with no torch of its minor beside it (a dependency brought it, or the
    table has no row for the locked torch) is never committed."""
    from envbuild.torch.torch_bound import minor_of
    from envbuild.torch.variants import chain_to, reach

    torch = sorted({minor_of(p.version) for p in lock.packages if p.name == "torch"})
    for package in lock.packages:
        if package.name == AUDIO and minor_of(package.version) not in torch:
            how = reach(chain_to(lock, AUDIO), merged)
            raise ConflictError(AUDIO, [
                f"{how} brings torchaudio {package.version} ({package.source_label()}), built for torch "
                f"{minor_of(package.version)}, beside torch {', '.join(torch)} of profile {profile.name}"],
                hint=f"leave it out with `[lock] exclude = [\"torchaudio\"]` in envbuild.toml ({WITHOUT_AUDIO}); or "
                     "choose a profile whose torch stops at a minor torchaudio has (cu128 ends with 2.11)")


def _torch_text(profile: TorchProfile) -> str:
    return next((f"torch{p.specifier_text}" for p in profile.packages if p.name == "torch"), "torch")


def _minor_key(minor: str) -> tuple[int, ...]:
    return tuple(int(part) for part in minor.split("."))
