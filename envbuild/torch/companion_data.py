"""The companion rule table (data/companions.toml) as values: which torch-bound packages envbuild knows,
where their wheels are published, and the rule a wheel must meet. Below profile files and companions alike."""

from __future__ import annotations

import functools
from typing import NamedTuple

from envbuild.core.tomlfile import parse_toml
from envbuild.torch.profile import canonical_name

# Where a package's builds for one torch live (data/companions.toml `wheels`; a third value, "elsewhere",
# names packages only their own projects publish builds of).
PYTORCH_INDEX = "pytorch-index"
PYPI = "pypi"


class Companion(NamedTuple):
    name: str
    wheels: str  # PYTORCH_INDEX, PYPI or ELSEWHERE
    rule: str
    source: str
    prebuilt: str | None


@functools.lru_cache(maxsize=1)
def companion_table() -> dict[str, Companion]:
    import importlib.resources

    text = (importlib.resources.files("envbuild") / "data" / "companions.toml").read_text(encoding="utf-8")
    data = parse_toml(text, "envbuild/data/companions.toml")
    return {canonical_name(name): Companion(canonical_name(name), str(t["wheels"]), " ".join(str(t["rule"]).split()),
                                            str(t["source"]), t.get("prebuilt"))
            for name, t in data["packages"].items()}


def index_companions() -> frozenset[str]:
    """The names a profile may route to its PyTorch index besides the torch family."""
    return frozenset(name for name, c in companion_table().items() if c.wheels == PYTORCH_INDEX)
