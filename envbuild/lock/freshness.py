"""Is a committed lock still what `envbuild lock` would make now? The one definition of staleness.

A lock is current when the pyproject envbuild renders from today's inputs and profile is the
committed one byte for byte, and every setting that shapes a lock without showing in the pyproject
(ComfyUI's commit, say) is as recorded. `SETTINGS` lists those settings once: the full check
(`compare`) and the raw-bytes fast path (`content_key`, used by `trust`) both read it, so a setting
added there is seen by both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from envbuild.lock.plan import LockPlan
from envbuild.pkgs.lockdir import FINGERPRINT_NAME, LOCKED_AT, Fingerprint, LockFolder, file_digest, sha256_text

_KEY_SCHEMA = 1


class Setting(NamedTuple):
    """One recorded setting that shapes a lock, and how a change of it is said."""

    read: Callable[[Fingerprint], Any]
    describe: Callable[[Fingerprint, Fingerprint], str]


def _commits(fingerprint: Fingerprint) -> dict[str, str]:
    return {k: v for k, v in fingerprint.extra.items() if k != LOCKED_AT}


def _describe_commits(old: Fingerprint, new: Fingerprint) -> str:
    before, after = _commits(old), _commits(new)
    names = {"comfyui-commit": "ComfyUI", "comfyui-manager-commit": "ComfyUI-Manager"}
    said = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            if key.startswith("node:") and key.endswith("-commit"):
                said.append(_describe_node(key.removeprefix("node:").removesuffix("-commit"), before.get(key),
                                           after.get(key)))
            elif key.endswith("-commit"):
                said.append(f"{names.get(key, key)} moved from {(before.get(key) or 'no commit')[:12]} to "
                            f"{(after.get(key) or 'no commit')[:12]}")
            else:
                said.append(f"{key} changed ({before.get(key)} → {after.get(key)})")
    return "; ".join(said)


def _describe_node(name: str, before: str | None, after: str | None) -> str:
    from envbuild.settings.pins import MISSING

    if after == MISSING:
        return f"pinned node {name} is missing (run `envbuild fetch`)"
    if before is None:
        return f"node {name} was pinned (at {(after or '?')[:12]})"
    if after is None:
        return f"node {name} is no longer pinned (was at {before[:12]})"
    return f"node {name} moved from {before[:12]} to {after[:12]}"


SETTINGS: tuple[Setting, ...] = (
    Setting(lambda f: f.profile_sha256, lambda o, n: f"profile {n.profile} changed"),
    Setting(lambda f: f.index_url, lambda o, n: f"the torch index changed ({o.index_url} → {n.index_url})"),
    Setting(lambda f: f.default_index, lambda o, n: f"the default index changed ({o.default_index or 'uv default'} "
                                                    f"→ {n.default_index or 'uv default'})"),
    Setting(lambda f: f.torch_source, lambda o, n: f"the torch source changed ({o.torch_source} → {n.torch_source})"),
    Setting(lambda f: f.requires_python, lambda o, n: f"lock.requires-python changed ({o.requires_python or 'unset'} "
                                                      f"→ {n.requires_python})"),
    Setting(lambda f: f.exclude_newer, lambda o, n: f"lock.exclude-newer changed ({o.exclude_newer or 'off'} → "
                                                    f"{n.exclude_newer or 'off'})"),
    Setting(lambda f: f.render_version, lambda o, n: "envbuild's pyproject format changed"),
    Setting(lambda f: f.uv_required_version, lambda o, n: "the required uv version changed"),
    Setting(_commits, _describe_commits),
)


def setting_changes(old: Fingerprint, new: Fingerprint) -> list[str]:
    """Every setting of `SETTINGS` that differs, said."""
    return [setting.describe(old, new) for setting in SETTINGS if setting.read(old) != setting.read(new)]


def settings_of(fingerprint: Fingerprint) -> list[Any]:
    return [setting.read(fingerprint) for setting in SETTINGS]


def input_changes(old: Fingerprint, new: Fingerprint) -> list[str]:
    """Which input files ask for something else (comments do not count), appeared or went away."""
    reasons = []
    for path, digest in sorted(new.inputs.items()):
        if path not in old.inputs:
            reasons.append(f"{path} is a new input")
        elif old.inputs[path] != digest:
            reasons.append(f"{path} changed")
    reasons.extend(f"{path} is no longer an input" for path in sorted(set(old.inputs) - set(new.inputs)))
    if len(reasons) > MAX_NAMED_INPUTS:  # a moved checkout changes every path: a few lines, not kilobytes
        rest = len(reasons) - MAX_NAMED_INPUTS + 1
        reasons[MAX_NAMED_INPUTS - 1:] = [f"and {rest} more input file{'s' if rest != 1 else ''}"]
    return reasons


MAX_NAMED_INPUTS = 5


def _made_by_envbuild(recorded: Fingerprint) -> bool:
    """Is the recorded cooldown cutoff one envbuild writes for the recorded setting? (no clock)"""
    if not recorded.exclude_newer:
        return not recorded.cutoff
    from envbuild.core.errors import ConfigError
    from envbuild.settings.cooldown import parse_cooldown

    try:
        cooldown = parse_cooldown(recorded.exclude_newer, None)
    except ConfigError:
        return False
    return cooldown is not None and cooldown.could_be(recorded.cutoff)


class Freshness(NamedTuple):
    """The verdict of the full check: what changed in the inputs (stale), and what in the folder is not
    what envbuild writes (edited). Both empty: current."""

    changes: tuple[str, ...]
    edits: tuple[str, ...]

    @property
    def current(self) -> bool:
        return not self.changes and not self.edits


def compare(folder: LockFolder, plan: LockPlan) -> Freshness:
    """The committed folder against the plan of a lock made now (no uv, no network)."""
    if not folder.exists():
        return Freshness((f"no lock yet at {folder.path}",), ())
    recorded = folder.read_fingerprint()
    changes: list[str] = []
    edits: list[str] = []
    if recorded is not None:
        changes.extend(setting_changes(recorded, plan.fingerprint))
        if (recorded.exclude_newer == plan.fingerprint.exclude_newer and recorded.cutoff != plan.fingerprint.cutoff
                and _made_by_envbuild(recorded)):  # `lock --upgrade`/`update`; a forged one is an edit (plan)
            changes.append(f"the cooldown's cutoff moved ({recorded.cutoff or 'none'} → {plan.fingerprint.cutoff})")
    if folder.pyproject.read_bytes() != plan.pyproject.encode("utf-8"):
        inputs = input_changes(recorded, plan.fingerprint) if recorded is not None else []
        if inputs or changes:
            changes.extend(inputs)
        else:
            edits.append("pyproject.toml is not what envbuild renders from these inputs and this profile "
                         "(edited by hand?)")
    edits.extend(plan.untrusted)  # a recorded settlement or bound envbuild could not have made
    if recorded is None:
        edits.append(f"{FINGERPRINT_NAME} is missing or unreadable")
    elif recorded.uv_lock_sha256 != sha256_text(folder.uv_lock.read_bytes()):
        edits.append("uv.lock was changed outside envbuild")
    return Freshness(tuple(dict.fromkeys(changes)), tuple(dict.fromkeys(edits)))


def content_key(expected: Fingerprint, roots: Sequence[str], digests: Mapping[str, str], folder: LockFolder) -> str:
    """The name of one verdict: every byte and setting the full check depends on, hashed. Equal keys
    mean the full check would say the same again, so its verdict can be reused (`trust`)."""
    material = {
        "schema": _KEY_SCHEMA, "settings": settings_of(expected), "roots": list(roots),
        "inputs": dict(sorted(digests.items())), "folder": folder.profile,
        "pyproject": file_digest(folder.pyproject), "uv.lock": file_digest(folder.uv_lock),
        "constraints": file_digest(folder.constraints), "fingerprint": file_digest(folder.fingerprint_path),
    }
    for name, recorded in (("settled", expected.settled), ("bounds", expected.bounds)):
        if recorded:  # what the pyproject was rendered with: an edited record is checked in full
            material[name] = dict(sorted(recorded.items()))
    if expected.companions:
        material["companions"] = sorted(expected.companions)
    if expected.cutoff:  # the recorded cooldown moment the pyproject was rendered with
        material["cutoff"] = expected.cutoff
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def current_digests(recorded: Fingerprint, project_dir: Path) -> dict[str, str]:
    """The input files the fingerprint says the lock was made from, each hashed as it is now: the
    fingerprint is only trusted to name files, what they hold is read here."""
    return {path: file_digest(_resolve(project_dir, path)) or "" for path in recorded.raw_inputs}


def _resolve(project_dir: Path, display: str) -> Path:
    path = Path(display)
    return path if path.is_absolute() else project_dir / path
