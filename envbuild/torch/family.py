"""The rules every merge obeys, whoever asked: the torch family belongs to the profile, and of
packages that overwrite each other's import module only one is kept.

Kept apart from input discovery (envbuild.comfy.inputs) so each stays short; both run on every lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from envbuild.core.errors import ConflictError, RequirementFileError
from envbuild.torch.profile import PYTORCH_INDEX_ONLY_NAMES, TorchProfile

if TYPE_CHECKING:
    from envbuild.pkgs.requirements import Diagnostic, SourcedRequirement
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
