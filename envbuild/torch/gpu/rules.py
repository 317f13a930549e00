"""The rule table (envbuild/data/cuda_rules.toml) as values, and the lookups that read it.

Which driver runs which CUDA, which GPUs a build has kernels for: NVIDIA's and PyTorch's
facts, kept in the TOML file with their sources and repeated nowhere in Python.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from envbuild.core.errors import DetectionError
from envbuild.core.tomlfile import parse_toml
from envbuild.torch.gpu.model import CC_RE, Machine, at_least, norm_machine, vt

# How a driver runs a CUDA release: in full ("toolkit"), by minor-version compatibility, or not.
FULL, COMPAT, NONE = "toolkit", "minor-version-compat", "none"


class DriverRule(NamedTuple):
    """A driver minimum per CUDA release ("toolkit") or per major ("minor-version-compat")."""

    cuda: str
    kind: str
    linux: str | None
    windows: str | None
    release: str
    source: str


class ArchRule(NamedTuple):
    """The cubin targets of one PyTorch CUDA build, for a torch range and platform."""

    cuda: str
    targets: tuple[str, ...]
    ptx: str | None
    torch_min: str
    torch_below: str | None
    machines: tuple[str, ...]
    systems: tuple[str, ...]
    source: str


class RocmArchRule(NamedTuple):
    rocm: str
    gfx: tuple[str, ...]
    source: str


class Rules(NamedTuple):
    """cuda_rules.toml, checked: every row names a source that exists."""

    drivers: tuple[DriverRule, ...]
    arches: tuple[ArchRule, ...]
    rocm_arches: tuple[RocmArchRule, ...]
    families: tuple[tuple[str, str], ...]  # (compute capability or major, name)
    sources: tuple[tuple[str, str], ...]  # (key, url)
    read_on: str


class DriverNeed(NamedTuple):
    """What a CUDA build asks of the driver."""

    lowest: str | None  # the lowest driver that runs the build at all
    full: str | None  # the driver NVIDIA lists for that CUDA release


# --------------------------------------------------------------------------- loading
def load_rules(path: Path | None = None) -> Rules:
    """Read the packaged rules (or `path`); a broken file is a packaging bug, said plainly."""
    if path is None:
        return _packaged_rules()
    return _build_rules(parse_toml(path.read_text(encoding="utf-8"), path), str(path))


@functools.lru_cache(maxsize=1)
def _packaged_rules() -> Rules:
    package = Path(__file__).resolve().parents[2]  # envbuild/: package data: always a file
    resource = package / "data" / "cuda_rules.toml"
    return _build_rules(parse_toml(resource.read_text(encoding="utf-8"), resource), "cuda_rules.toml")


def _build_rules(data: dict[str, Any], where: str) -> Rules:
    try:
        sources = {key: str(value["url"]) for key, value in data["sources"].items()}
        rules = Rules(
            drivers=tuple(_driver_rule(row) for row in data["driver"]),
            arches=tuple(_arch_rule(row) for row in data["arch"]),
            rocm_arches=tuple(
                RocmArchRule(r["rocm"], tuple(r["gfx"]), r["source"]) for r in data["rocm_arch"]
            ),
            families=tuple((str(r["cc"]), str(r["name"])) for r in data["family"]),
            sources=tuple(sources.items()),
            read_on=str(data["read_on"]),
        )
        cited = [r.source for r in rules.drivers] + [r.source for r in rules.arches]
        cited += [r.source for r in rules.rocm_arches] + [r["source"] for r in data["family"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DetectionError(f"{where}: malformed rules ({exc!r})") from exc
    missing = sorted({s for s in cited if s not in sources})
    if missing:
        raise DetectionError(f"{where}: rows cite unknown sources: {', '.join(missing)}")
    return rules


def _driver_rule(row: Mapping[str, Any]) -> DriverRule:
    if row["kind"] not in (FULL, COMPAT):
        raise ValueError(f"driver row {row['cuda']}: unknown kind {row['kind']!r}")
    for key in ("linux", "windows"):
        if key in row:
            vt(row[key])
    return DriverRule(
        row["cuda"], row["kind"], row.get("linux"), row.get("windows"), row["release"], row["source"]
    )


def _arch_rule(row: Mapping[str, Any]) -> ArchRule:
    for target in row["targets"]:
        if not CC_RE.fullmatch(target):
            raise ValueError(f"arch row {row['cuda']}: bad target {target!r}")
    return ArchRule(
        cuda=row["cuda"],
        targets=tuple(row["targets"]),
        ptx=row.get("ptx"),
        torch_min=row["torch_min"],
        torch_below=row.get("torch_below"),
        machines=tuple(row.get("machines", ())),
        systems=tuple(row.get("systems", ())),
        source=row["source"],
    )


# --------------------------------------------------------------------------- driver lookups
def driver_min(rule: DriverRule, system: str) -> str | None:
    return rule.windows if system == "Windows" else rule.linux


def max_cuda_for_driver(driver: str, system: str, rules: Rules) -> tuple[str | None, str]:
    """Newest CUDA the driver runs in full, from NVIDIA's table; kind says how it was reached.

    "toolkit": a release's own driver minimum is met. "minor-version-compat": only a CUDA
    major's floor is met (then the answer is "<major>.x"). "none": older than every row.
    """
    best: tuple[tuple[int, ...], str] | None = None
    for rule in rules.drivers:
        minimum = driver_min(rule, system)
        met = rule.kind == FULL and minimum is not None and at_least(driver, minimum)
        if met and (best is None or vt(rule.cuda) > best[0]):
            best = (vt(rule.cuda), rule.cuda)
    if best is not None:
        return best[1], FULL
    compat = compat_majors(driver, system, rules)
    if compat:
        return f"{max(compat)}.x", COMPAT
    return None, NONE


def compat_majors(driver: str, system: str, rules: Rules) -> list[int]:
    """The CUDA majors whose minor-version-compatibility floor this driver meets."""
    return [
        int(rule.cuda)
        for rule in rules.drivers
        if rule.kind == COMPAT and (minimum := driver_min(rule, system)) and at_least(driver, minimum)
    ]


def driver_need(cuda: str, system: str, rules: Rules) -> DriverNeed:
    full = compat = None
    for rule in rules.drivers:
        if rule.kind == FULL and vt(rule.cuda) == vt(cuda)[:2]:
            full = driver_min(rule, system)
        if rule.kind == COMPAT and int(rule.cuda) == vt(cuda)[0]:
            compat = driver_min(rule, system)
    # A floor in the same driver branch as the toolkit's own minimum buys nothing in practice.
    lowest = compat if compat and (full is None or vt(compat)[0] < vt(full)[0]) else full
    return DriverNeed(lowest, full)


def support(machine: Machine, cuda: str, rules: Rules) -> str:
    """How the machine's driver runs CUDA `cuda`: FULL, COMPAT or NONE."""
    driver = machine.nvidia_driver
    if driver is None:
        return NONE
    if machine.max_cuda and vt(machine.max_cuda) >= vt(cuda)[:2]:
        return FULL
    if vt(cuda)[0] in compat_majors(driver, machine.system, rules):
        return COMPAT
    return NONE


# --------------------------------------------------------------------------- architecture lookups
def family(cc: str, rules: Rules) -> str | None:
    """'8.9' -> 'Ada Lovelace' (by exact compute capability, else by major)."""
    names = dict(rules.families)
    return names.get(cc) or names.get(cc.split(".")[0])


def cubin_for(cc: str, targets: Iterable[str]) -> str | None:
    """The target whose cubin runs on `cc`: same major, minor not above (binary compatibility)."""
    major, minor = vt(cc)[:2]
    usable = [t for t in targets if vt(t)[0] == major and vt(t)[1] <= minor]
    return max(usable, key=vt) if usable else None


def arch_row(cuda: str, machine: Machine, rules: Rules, torch_version: str | None) -> ArchRule | None:
    """The arch row for this build and platform; without a torch version, the newest torch's."""
    rows = [
        r
        for r in rules.arches
        if vt(r.cuda) == vt(cuda)
        and (not r.machines or norm_machine(machine.machine) in r.machines)
        and (not r.systems or machine.system in r.systems)
    ]
    if torch_version:
        rows = [
            r
            for r in rows
            if at_least(torch_version, r.torch_min)
            and (r.torch_below is None or not at_least(torch_version, r.torch_below))
        ]
    return max(rows, key=lambda r: vt(r.torch_min)) if rows else None


def rocm_row(version: str, rules: Rules) -> RocmArchRule | None:
    return next((r for r in rules.rocm_arches if vt(r.rocm) == vt(version)), None)
