"""What a profile's lock would be made from, computed without uv: the lock plan.

Everything that can be checked without the resolver (parsing, merging, conflicts, torch pins,
rendering) happens here, before anything is written; `lock` then hands the plan's pyproject to uv,
and the freshness check compares it with the committed one.
"""

from __future__ import annotations

from typing import NamedTuple

from envbuild.comfy.inputs import INSTALL_SCRIPT, MergedInputs, merge_inputs, normalized_digest
from envbuild.deploy.deployment import Deployment
from envbuild.lock.settlements import Context, Settled, apply_recorded, header_notes
from envbuild.pkgs.lockdir import Fingerprint, LockFolder, file_digest, sha256_text
from envbuild.torch.profile import TorchProfile
from envbuild.torch.profile_file import check_profile, profile_display_path
from envbuild.uv.render import RENDER_VERSION, UV_REQUIRED_VERSION, RenderInput, render_pyproject


class LockPlan(NamedTuple):
    """Everything a lock needs, computed without uv."""

    profile: TorchProfile
    merged: MergedInputs
    pyproject: str
    fingerprint: Fingerprint  # what the lock folder will record (uv.lock's digest added after uv ran)
    folder: LockFolder
    untrusted: tuple[str, ...] = ()  # recorded settlements or bounds envbuild could not have made: "edited"


def plan_lock(deployment: Deployment, profile: TorchProfile, *, settled: Settled | None = None,
              cutoff: str | None = None) -> LockPlan:
    """Parse and merge the inputs and render the pyproject; every input error surfaces here.

    `settled`: what envbuild settled after a lock (envbuild.lock.settle); None: what the profile's current
    lock recorded, so a lock renders as it was made. `cutoff`: the cooldown's moment (`moved_cutoff`);
    None: the one the current lock recorded, so a no-op and `lock --check` never read the clock."""
    config = deployment.config
    check_profile(profile)
    config.validate()
    from envbuild.torch.variants import groups_for, overrides

    groups = groups_for(config.variant_groups, config.source)
    merged, settled, untrusted = settled_inputs(deployment, profile, settled)
    folder = deployment.folder(profile)
    variant_overrides = overrides(merged.result, groups)
    direct = {r.name for r in merged.result.requirements if r.url is None}
    companions = tuple(c for c in profile.companions if c.name in direct)
    expected = expected_fingerprint(deployment, profile)
    cutoff, edited = _cutoff(deployment, profile, folder, expected, cutoff)
    inputs = {config.display(item.path): "" for item in merged.collected.files}
    inputs.update(_input_digests(merged, deployment))
    for item in merged.collected.files:  # read for its warning, never run: no input of the lock's pyproject
        if item.kind == INSTALL_SCRIPT:
            inputs.pop(config.display(item.path), None)
    indexes = deployment.indexes(profile)
    pyproject = render_pyproject(RenderInput(
        merged=merged.result, profile=profile, requires_python=config.requires_python,
        index_url=indexes.torch, input_paths=[*inputs, profile_display_path(profile, config.project_dir)],
        default_index=indexes.default, index_format=indexes.format, overrides=variant_overrides,
        companions=companions, notes=header_notes(settled), exclude_newer=cutoff or None,
        exact_pins=exact_pins(merged) if cutoff else (), allow_build=config.allow_build,
    ))
    fingerprint = expected._replace(
        pyproject_sha256=sha256_text(pyproject), inputs=inputs,
        raw_inputs={config.display(path): file_digest(path) or "" for path in merged.files_read},
        roots=tuple(config.display(item.path) for item in merged.collected.files),
        warnings=input_warnings(merged), settled=dict(settled.groups), bounds=dict(settled.bounds),
        companions=settled.companions, cutoff=cutoff,
    )
    return LockPlan(profile, merged, pyproject, fingerprint, folder, (*untrusted, *edited))


def expected_fingerprint(deployment: Deployment, profile: TorchProfile) -> Fingerprint:
    """What a current lock must have recorded, as far as it is known without parsing any input:
    the settings that shape a lock besides the input files."""
    from envbuild.comfy.git import resolved_commits

    indexes = deployment.indexes(profile)
    # Which ComfyUI (and Manager) a lock belongs to: a checkout that moved makes the lock stale.
    extra = {f"{name}-commit": sha for name, sha in resolved_commits(deployment.config).items()}
    if deployment.config.node_pins:  # and each pinned node's: "node X moved from a1b2… to c3d4…"
        from envbuild.settings.pins import node_commits

        dirs = deployment.config.custom_node_dirs()
        extra.update(node_commits(deployment.config.node_pins, dirs[0] if dirs else None))
    if indexes.format != "simple":
        extra["index-format"] = indexes.format
    if deployment.config.variant_groups:  # the deployment's own groups shape the pyproject like an input
        extra["variant-groups"] = sha256_text(repr(sorted(deployment.config.variant_groups.items())))[:12]
    if deployment.config.exclude_packages:  # [lock] exclude leaves family members out of the pyproject
        extra["exclude"] = ",".join(sorted(deployment.config.exclude_packages))
    return Fingerprint(
        profile=profile.name, render_version=RENDER_VERSION, uv_required_version=UV_REQUIRED_VERSION,
        torch_source=profile.torch_source, index_url=indexes.torch, profile_sha256=profile_digest(profile),
        pyproject_sha256="", inputs={}, default_index=indexes.default, extra=extra,
        requires_python=deployment.config.requires_python,
        exclude_newer=cooldown.text if (cooldown := deployment.cooldown(profile)) else "",
    )


def moved_cutoff(deployment: Deployment, profile: TorchProfile) -> str | None:
    """The cooldown's moment for a lock made now (`lock --upgrade`, `update`): the clock is read here and
    when a lock has no recorded moment for this setting, nowhere else. None: no cooldown."""
    from envbuild.settings.cooldown import utc_now

    cooldown = deployment.cooldown(profile)
    return cooldown.cutoff(utc_now()) if cooldown is not None else None


def _cutoff(deployment: Deployment, profile: TorchProfile, folder: LockFolder, expected: Fingerprint,
            given: str | None) -> tuple[str, tuple[str, ...]]:
    """The moment this plan renders ("": no cooldown), and a recorded one envbuild could not have written.
    The recorded moment is kept while the setting is the recorded one: re-locking changed inputs keeps the
    cutoff, so the same inputs lock the same way on any day."""
    cooldown = deployment.cooldown(profile)
    if cooldown is None:
        return "", ()
    if cooldown.fixed is not None:  # a fixed moment: the setting itself, never moved
        return cooldown.fixed, ()
    if given is not None:
        return given, ()
    recorded = folder.read_fingerprint()
    if recorded is None or recorded.exclude_newer != expected.exclude_newer or not recorded.cutoff:
        return moved_cutoff(deployment, profile) or "", ()
    if not cooldown.could_be(recorded.cutoff):  # checked without the clock: its form and its rounding
        return moved_cutoff(deployment, profile) or "", (
            f"{deployment.display(folder.fingerprint_path)} records a cooldown cutoff envbuild does not write for "
            f"{expected.exclude_newer!r}: {recorded.cutoff[:40]!r}",)
    return recorded.cutoff, ()


def exact_pins(merged: MergedInputs) -> tuple[str, ...]:
    """Names an input pins to one version (`==1.2.3`, `===1.2.3`; not `==1.2.*`): ComfyUI pins its frontend,
    templates and comfy-kitchen to releases days old, and a cooldown must not make that lock unsolvable."""
    names = set()
    for group in (merged.result.requirements, merged.result.constraints):
        for requirement in group:
            if any(s.operator == "===" or (s.operator == "==" and not s.version.endswith(".*"))
                   for s in requirement.specifier):
                names.add(requirement.name)
    return tuple(sorted(names))


def profile_digest(profile: TorchProfile) -> str:
    return sha256_text("\n".join(profile.digest_parts()))


def input_warnings(merged: MergedInputs) -> tuple[str, ...]:
    """What the inputs asked for that will not be in the lock, one line each."""
    lines = [f"{w.origin}: {w.message}" for w in merged.warnings]
    lines.extend(f"custom node skipped: {skipped}" for skipped in merged.collected.skipped_nodes)
    return tuple(lines)


def _input_digests(merged: MergedInputs, deployment: Deployment) -> dict[str, str]:
    """Per file, a digest of the requirement lines it contributed (comments do not count)."""
    display = deployment.config.display
    texts: dict[str, list[str]] = {display(path): [] for path in merged.files_read}
    for group in (merged.result.requirements, merged.result.constraints):
        for requirement in group:
            for item in requirement.origins:
                if item.origin.path in texts:
                    texts[item.origin.path].append(item.text)
    return {path: normalized_digest(sorted(lines)) for path, lines in texts.items()}


def settled_inputs(deployment: Deployment, profile: TorchProfile, settled: Settled | None = None,
                   ) -> tuple[MergedInputs, Settled, tuple[str, ...]]:
    """The merged inputs with what envbuild settled (None: as the profile's lock recorded it), the
    settlements used, and the recorded ones envbuild could not have made."""
    merged = merge_inputs(deployment.config, profile)
    folder = deployment.folder(profile)
    if settled is None:
        recorded = folder.read_fingerprint()
        settled = Settled(recorded.settled, recorded.bounds, recorded.companions) if recorded else Settled()
    if not settled:
        return merged, Settled(), ()
    from envbuild.torch.variants import groups_for

    context = Context(profile, groups_for(deployment.config.variant_groups, deployment.config.source),
                      merged.result, deployment.display(folder.fingerprint_path), deployment.config.project_dir)
    result, used, problems = apply_recorded(settled, context)
    return merged._replace(result=result), used, problems
