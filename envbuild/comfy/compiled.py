"""ComfyUI's own compiled packages (comfy-kitchen, comfy-aimdo) judged against a profile's CUDA or ROCm.

Both ship a pure py3-none-any wheel and ComfyUI imports both unguarded, so envbuild never refuses or strips
them (public scripts that strip comfy-kitchen leave a ComfyUI that cannot import); what a profile decides
is whether ComfyUI gets their compiled part. `lock` says it in one line per profile, with the fix. The
rules, with sources: envbuild/data/comfy_compiled.toml.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import NamedTuple

from envbuild.torch.profile import TorchProfile, canonical_name

_DATA = "envbuild/data/comfy_compiled.toml"


class Rule(NamedTuple):
    """One package on one accelerator: from which CUDA/ROCm version ComfyUI gets the compiled part."""

    minimum: str | None  # None: never ("other": cpu, mps, xpu)
    with_it: str
    without: str
    fix: str | None


class Compiled(NamedTuple):
    name: str
    rules: dict[str, Rule]  # "cuda" | "rocm" | "other"
    source: str


@functools.lru_cache(maxsize=1)
def compiled_table() -> tuple[Compiled, ...]:
    import importlib.resources

    from envbuild.core.tomlfile import parse_toml

    text = (importlib.resources.files("envbuild") / "data" / "comfy_compiled.toml").read_text(encoding="utf-8")
    data = parse_toml(text, _DATA)
    return tuple(
        Compiled(canonical_name(name), {kind: Rule(r.get("from"), str(r.get("with", "")), str(r["without"]),
                                                   r.get("fix"))
                                        for kind, r in table.items() if isinstance(r, dict)},
                 " ".join(str(table["source"]).split()))
        for name, table in sorted(data["packages"].items()))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def judge(package: Compiled, profile: TorchProfile) -> str:
    """What ComfyUI does with this package on this profile, with the fix when it goes without."""
    kind = profile.accelerator if profile.accelerator in ("cuda", "rocm") else "other"
    rule = package.rules[kind]
    version = profile.accelerator_version
    if rule.minimum is not None and version is not None and _version(version) >= _version(rule.minimum):
        return f"{package.name}: {rule.with_it}"
    below = f" ({'CUDA' if kind == 'cuda' else 'ROCm'} {version})" if kind != "other" and version else ""
    return f"{package.name}: {rule.without}{below}" + (f"; for it: {rule.fix}" if rule.fix else "")


def compiled_note(profile: TorchProfile, names: Iterable[str]) -> str | None:
    """One line for `lock`: each of ComfyUI's compiled packages the lock holds, judged (None: it holds none)."""
    held = {canonical_name(n) for n in names}
    parts = [judge(p, profile) for p in compiled_table() if p.name in held]
    if not parts:
        return None
    return f"ComfyUI's compiled packages on {profile.name}: " + "; ".join(parts)
