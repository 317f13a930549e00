"""What GPU this machine has, and which PyTorch build (profile) fits it.

Detection reads the machine only through `envbuild.runner.run` and plain file reads, and a
source that fails (missing tool, timeout, garbage) becomes a note instead of an error: a
machine without a GPU is a normal machine. Everything after detection is pure: `assess` and
`recommend` take a `Machine` and the rules in `data/cuda_rules.toml`, so tests can describe
any machine without owning it.

Detection order, after uv's (astral-sh/uv crates/uv-torch/src/accelerator.rs), except that
nvidia-smi goes first because only it names the GPUs and their compute capability:
NVIDIA: nvidia-smi, then /sys/module/nvidia/version, then /proc/driver/nvidia/version;
AMD: rocm_agent_enumerator (+ /opt/rocm/.info/version); Intel: PCI scan of /sys/bus/pci.
ENVBUILD_CUDA_DRIVER_VERSION, ENVBUILD_GPU_COMPUTE_CAP and ENVBUILD_AMD_GPU_ARCHITECTURE
replace what was detected (containers without a GPU, tests).
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from envbuild.errors import CommandFailed, DetectionError
from envbuild.runner import run

# Every path below is read relative to _ROOT, so tests can point it at a tmp dir.
_ROOT = Path("/")
_TIMEOUT = 10.0

_ENV_DRIVER = "ENVBUILD_CUDA_DRIVER_VERSION"
_ENV_CC = "ENVBUILD_GPU_COMPUTE_CAP"
_ENV_AMD = "ENVBUILD_AMD_GPU_ARCHITECTURE"

_SYS_DRIVER = "/sys/module/nvidia/version"
_PROC_DRIVER = "/proc/driver/nvidia/version"
_ROCM_VERSION = "/opt/rocm/.info/version"
_ROCM_ENUMERATOR = "/opt/rocm/bin/rocm_agent_enumerator"
_PCI_DEVICES = "/sys/bus/pci/devices"

_DRIVER_RE = re.compile(r"\d{3,}\.\d+(?:\.\d+)?")
_CC_RE = re.compile(r"\d{1,2}\.\d")
_GFX_RE = re.compile(r"gfx[0-9a-f]+")
_QUERY_ROW = re.compile(
    r"(?P<name>.+?),\s*(?P<driver>\d{3,}\.\d+(?:\.\d+)?)(?:,\s*(?P<cc>\d{1,2}\.\d|\[N/A\]|N/A))?"
)
_PCI_VENDORS = {0x10DE: "nvidia", 0x1002: "amd", 0x8086: "intel"}


# --------------------------------------------------------------------------- machine model
class Gpu(NamedTuple):
    """One GPU as envbuild sees it; fields it could not learn are None."""

    vendor: str  # "nvidia" | "amd" | "intel" | "apple"
    name: str
    compute_capability: str | None  # NVIDIA "8.9"
    arch: str | None  # "sm_89", "gfx1100", ...


class Machine(NamedTuple):
    """What detection found, plus notes on every source that could not be read."""

    system: str  # "Linux" | "Windows" | "Darwin"
    machine: str  # "x86_64" | "AMD64" | "arm64" | "aarch64"
    gpus: tuple[Gpu, ...]
    nvidia_driver: str | None
    driver_source: str | None
    max_cuda: str | None  # nvidia-smi's "CUDA Version" when shown, else from the driver table
    rocm_version: str | None
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Stable keys for scripts (`envbuild detect --json`)."""
        return {
            "system": self.system,
            "machine": self.machine,
            "gpus": [
                {
                    "vendor": g.vendor,
                    "name": g.name,
                    "compute_capability": g.compute_capability,
                    "arch": g.arch,
                }
                for g in self.gpus
            ],
            "nvidia_driver": self.nvidia_driver,
            "driver_source": self.driver_source,
            "max_cuda": self.max_cuda,
            "rocm_version": self.rocm_version,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- pure parsers
def _nvidia_gpu(name: str, cc: str | None) -> Gpu:
    arch = "sm_" + cc.replace(".", "") if cc else None
    return Gpu("nvidia", name, cc, arch)


def _parse_query_rows(text: str) -> list[tuple[str, str, str | None]]:
    """(name, driver, compute capability) per line; [] if any line is not such a row.

    All-or-nothing, because a half-understood answer would mislead more than none.
    """
    rows: list[tuple[str, str, str | None]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _QUERY_ROW.fullmatch(line.strip())
        if match is None:
            return []
        cc = match["cc"] if match["cc"] and _CC_RE.fullmatch(match["cc"]) else None
        rows.append((match["name"].strip(), match["driver"], cc))
    return rows


def parse_nvidia_smi_query(text: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=name,driver_version[,compute_cap] --format=csv`."""
    return [_nvidia_gpu(name, cc) for name, _driver, cc in _parse_query_rows(text)]


def parse_nvidia_smi_header(text: str) -> tuple[str | None, str | None]:
    """(driver, CUDA) from plain `nvidia-smi`; CUDA is the newest the driver fully supports."""
    driver = re.search(r"Driver Version:\s*(\d+\.\d+(?:\.\d+)?)", text)
    cuda = re.search(r"CUDA Version:\s*(\d+\.\d+)", text)
    return (driver[1] if driver else None, cuda[1] if cuda else None)


def parse_proc_driver_version(text: str) -> str | None:
    """Driver from /proc/driver/nvidia/version (classic or open kernel module wording)."""
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            match = re.search(r"\s(\d{3,}\.\d+(?:\.\d+)?)\s", line + " ")
            return match[1] if match else None
    return None


def parse_rocm_agents(text: str) -> list[str]:
    """gfx names from `rocm_agent_enumerator`, one per GPU; gfx000 is the CPU agent."""
    names = [line.strip() for line in text.splitlines()]
    return [n for n in names if _GFX_RE.fullmatch(n) and n != "gfx000"]


def _parse_rocm_version(text: str) -> str | None:
    match = re.match(r"\s*(\d+\.\d+(?:\.\d+)?)", text)
    return match[1] if match else None


# --------------------------------------------------------------------------- version helpers
def _vt(text: str) -> tuple[int, ...]:
    """'570.133.07' -> (570, 133, 7); '2.11.0+cu128' -> (2, 11, 0). NVIDIA's parts are integers."""
    match = re.match(r"\d+(?:\.\d+)*", text.strip())
    if match is None:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in match.group().split("."))


def _at_least(version: str, minimum: str) -> bool:
    return _vt(version) >= _vt(minimum)


def _norm_machine(machine: str) -> str:
    lowered = machine.lower()
    if lowered in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if lowered in ("aarch64", "arm64"):
        return "aarch64"
    return lowered


# --------------------------------------------------------------------------- rules
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


def _parse_toml(text: str) -> dict[str, Any]:
    """tomllib where the standard library has it (3.11+), tomlkit (a dependency) on 3.10."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)
    import tomlkit

    return dict(tomlkit.parse(text).unwrap())


def load_rules(path: Path | None = None) -> Rules:
    """Read the packaged rules (or `path`); a broken file is a packaging bug, said plainly."""
    if path is None:
        return _packaged_rules()
    return _build_rules(_parse_toml(path.read_text(encoding="utf-8")), str(path))


@functools.lru_cache(maxsize=1)
def _packaged_rules() -> Rules:
    resource = Path(__file__).resolve().parent / "data" / "cuda_rules.toml"  # package data: always a file
    return _build_rules(_parse_toml(resource.read_text(encoding="utf-8")), "cuda_rules.toml")


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
    if row["kind"] not in ("toolkit", "minor-version-compat"):
        raise ValueError(f"driver row {row['cuda']}: unknown kind {row['kind']!r}")
    for key in ("linux", "windows"):
        if key in row:
            _vt(row[key])
    return DriverRule(
        row["cuda"],
        row["kind"],
        row.get("linux"),
        row.get("windows"),
        row["release"],
        row["source"],
    )


def _arch_rule(row: Mapping[str, Any]) -> ArchRule:
    for target in row["targets"]:
        if not _CC_RE.fullmatch(target):
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


def _driver_min(rule: DriverRule, system: str) -> str | None:
    return rule.windows if system == "Windows" else rule.linux


def max_cuda_for_driver(driver: str, system: str, rules: Rules) -> tuple[str | None, str]:
    """Newest CUDA the driver runs in full, from NVIDIA's table; kind says how it was reached.

    "toolkit": a release's own driver minimum is met. "minor-version-compat": only a CUDA
    major's floor is met (then the answer is "<major>.x"). "none": older than every row.
    """
    best: tuple[tuple[int, ...], str] | None = None
    for rule in rules.drivers:
        minimum = _driver_min(rule, system)
        met = rule.kind == "toolkit" and minimum is not None and _at_least(driver, minimum)
        if met and (best is None or _vt(rule.cuda) > best[0]):
            best = (_vt(rule.cuda), rule.cuda)
    if best is not None:
        return best[1], "toolkit"
    compat = _compat_majors(driver, system, rules)
    if compat:
        return f"{max(compat)}.x", "minor-version-compat"
    return None, "none"


def _compat_majors(driver: str, system: str, rules: Rules) -> list[int]:
    return [
        int(rule.cuda)
        for rule in rules.drivers
        if rule.kind == "minor-version-compat"
        and (minimum := _driver_min(rule, system))
        and _at_least(driver, minimum)
    ]


# --------------------------------------------------------------------------- detection
def detect_machine(
    *, env: Mapping[str, str] | None = None, system: str | None = None, machine: str | None = None
) -> Machine:
    """Look at this machine (or the one `system`/`machine` name); never fails for lack of a GPU.

    Raises DetectionError only for an ENVBUILD_* override that is not a valid value.
    """
    env = os.environ if env is None else env
    system = system or platform.system()
    machine = machine or platform.machine()
    if system == "Darwin":
        return _darwin_machine(machine)
    notes: list[str] = []
    gpus, driver, source, cuda = _detect_nvidia(env, system, notes)
    amd, rocm_version = _detect_amd(env, system, notes)
    pci = _pci_gpus() if system == "Linux" else []
    gpus += amd
    gpus += [g for g in pci if g.vendor == "intel"]
    if not any(g.vendor == "nvidia" for g in gpus):
        gpus = [g for g in pci if g.vendor == "nvidia"] + gpus
    if not amd:
        gpus += [g for g in pci if g.vendor == "amd"]
    if driver and cuda is None:
        cuda, _kind = max_cuda_for_driver(driver, system, load_rules())
    return Machine(system, machine, tuple(gpus), driver, source, cuda, rocm_version, tuple(notes))


def _darwin_machine(machine: str) -> Machine:
    """macOS: no NVIDIA/ROCm stack to ask; Apple silicon has the MPS GPU."""
    gpus = (
        (Gpu("apple", "Apple silicon GPU", None, None),)
        if _norm_machine(machine) == "aarch64"
        else ()
    )
    return Machine("Darwin", machine, gpus, None, None, None, None, ())


def _detect_nvidia(
    env: Mapping[str, str], system: str, notes: list[str]
) -> tuple[list[Gpu], str | None, str | None, str | None]:
    """(gpus, driver, driver source, CUDA from nvidia-smi's header) after the overrides."""
    gpus, driver, cuda = _query_nvidia_smi(env, notes)
    source = "nvidia-smi" if driver else None
    if driver is None and system == "Linux":
        driver, source = _driver_from_files(notes)
    override = env.get(_ENV_DRIVER, "").strip()
    if override:
        if not _DRIVER_RE.fullmatch(override):
            raise DetectionError(
                f"{_ENV_DRIVER}={override!r} is not an NVIDIA driver version",
                hint="use the form 550.54.14",
            )
        driver, source, cuda = override, _ENV_DRIVER, None
    return _apply_cc_override(gpus, env, notes), driver, source, cuda


def _which(tool: str, env: Mapping[str, str]) -> str | None:
    """Look only on the PATH of `env`, so a test's PATH is the whole world."""
    return shutil.which(tool, path=env.get("PATH", ""))


def _run_tool(argv: Sequence[str], notes: list[str]) -> subprocess.CompletedProcess[str] | None:
    """Run a probe; a timeout or a tool that cannot start is a note, not an error."""
    label = Path(argv[0]).name
    try:
        return run(argv, capture=True, timeout=_TIMEOUT, check=False)
    except CommandFailed as exc:
        notes.append(f"{label}: {exc.output_tail}")
    except OSError as exc:
        notes.append(f"{label} could not be started: {exc.strerror or exc}")
    return None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else "(no output)"


def _query_nvidia_smi(
    env: Mapping[str, str], notes: list[str]
) -> tuple[list[Gpu], str | None, str | None]:
    exe = _which("nvidia-smi", env)
    if exe is None:
        notes.append("nvidia-smi not found on PATH: no NVIDIA GPU details")
        return [], None, None
    fields = "name,driver_version,compute_cap"
    proc = _run_tool([exe, f"--query-gpu={fields}", "--format=csv,noheader"], notes)
    if proc is not None and proc.returncode != 0 and "compute_cap" in proc.stdout + proc.stderr:
        notes.append(
            "this nvidia-smi cannot report compute capability (no compute_cap field; newer "
            f"drivers have it): GPU kernels not checked; set {_ENV_CC} to check them"
        )
        fields = "name,driver_version"
        proc = _run_tool([exe, f"--query-gpu={fields}", "--format=csv,noheader"], notes)
    if proc is None:
        return [], None, None
    if proc.returncode != 0:
        said = _first_line(proc.stdout + "\n" + proc.stderr)
        notes.append(f"nvidia-smi failed (exit {proc.returncode}): {said}")
        return [], None, None
    rows = _parse_query_rows(proc.stdout)
    if not rows:
        notes.append(
            f"nvidia-smi printed something envbuild cannot read: {_first_line(proc.stdout)!r}"
        )
        return [], None, None
    return [_nvidia_gpu(n, cc) for n, _d, cc in rows], rows[0][1], _nvidia_smi_cuda(exe, notes)


def _nvidia_smi_cuda(exe: str, notes: list[str]) -> str | None:
    """The "CUDA Version" in plain nvidia-smi's header: the driver's own word on its CUDA."""
    proc = _run_tool([exe], notes)
    if proc is None:
        return None
    _driver, cuda = parse_nvidia_smi_header(proc.stdout)
    if proc.returncode != 0 or cuda is None:
        notes.append(
            "nvidia-smi showed no CUDA Version; the newest CUDA comes from the driver table"
        )
        return None
    return cuda


def _at_root(path: str) -> Path:
    return _ROOT / path.lstrip("/")


def _read_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _read(path: str) -> str | None:
    return _read_file(_at_root(path))


def _driver_from_files(notes: list[str]) -> tuple[str | None, str | None]:
    """The loaded kernel module's version: uv's fallbacks when nvidia-smi says nothing."""
    text = _read(_SYS_DRIVER)
    if text is not None:
        if _DRIVER_RE.fullmatch(text.strip()):
            return text.strip(), _SYS_DRIVER
        notes.append(f"{_SYS_DRIVER} holds {_first_line(text)!r}, not a driver version")
    text = _read(_PROC_DRIVER)
    if text is not None:
        driver = parse_proc_driver_version(text)
        if driver:
            return driver, _PROC_DRIVER
        notes.append(f"{_PROC_DRIVER} has no driver version envbuild can read")
    else:
        notes.append(f"no NVIDIA kernel module found ({_SYS_DRIVER}, {_PROC_DRIVER})")
    return None, None


def _apply_cc_override(gpus: list[Gpu], env: Mapping[str, str], notes: list[str]) -> list[Gpu]:
    """ENVBUILD_GPU_COMPUTE_CAP ("6.1" or "6.1,8.9") sets the compute capability per GPU."""
    raw = env.get(_ENV_CC, "").strip()
    if not raw:
        return gpus
    values = [v.strip() for v in raw.split(",")]
    if not all(_CC_RE.fullmatch(v) for v in values):
        raise DetectionError(
            f"{_ENV_CC}={raw!r} is not a list of compute capabilities", hint="e.g. 8.9 or 6.1,8.9"
        )
    if gpus and len(values) == 1:
        values = values * len(gpus)
    if gpus and len(values) == len(gpus):
        return [_nvidia_gpu(g.name, v) for g, v in zip(gpus, values, strict=True)]
    if gpus:
        notes.append(
            f"{_ENV_CC} lists {len(values)} GPUs, nvidia-smi {len(gpus)}: the override wins"
        )
    return [_nvidia_gpu(f"NVIDIA GPU {i} (from {_ENV_CC})", v) for i, v in enumerate(values)]


def _detect_amd(
    env: Mapping[str, str], system: str, notes: list[str]
) -> tuple[list[Gpu], str | None]:
    """AMD GPUs by gfx name (what ROCm builds are keyed by) and the installed ROCm version."""
    raw = env.get(_ENV_AMD, "").strip()
    if raw:
        archs = [a.strip() for a in raw.split(",")]
        if not all(_GFX_RE.fullmatch(a) for a in archs):
            raise DetectionError(f"{_ENV_AMD}={raw!r} is not a gfx name", hint="e.g. gfx1100")
    elif system == "Linux":
        archs = _rocm_agents(env, notes)
    else:
        archs = []
    version_text = _read(_ROCM_VERSION) if system == "Linux" else None
    rocm = _parse_rocm_version(version_text) if version_text else None
    return [Gpu("amd", f"AMD GPU {a}", None, a) for a in archs], rocm


def _rocm_agents(env: Mapping[str, str], notes: list[str]) -> list[str]:
    exe = _which("rocm_agent_enumerator", env)
    if exe is None and _at_root(_ROCM_ENUMERATOR).is_file():
        exe = str(_at_root(_ROCM_ENUMERATOR))
    if exe is None:
        notes.append("rocm_agent_enumerator not found: no AMD GPU details")
        return []
    proc = _run_tool([exe], notes)
    if proc is None:
        return []
    if proc.returncode != 0:
        notes.append(
            f"rocm_agent_enumerator failed (exit {proc.returncode}): {_first_line(proc.stderr)}"
        )
        return []
    return parse_rocm_agents(proc.stdout)


def _pci_gpus() -> list[Gpu]:
    """Display-class PCI devices (0x03xxxx) of NVIDIA, AMD and Intel; uv scans so for Intel."""
    try:
        devices = sorted(_at_root(_PCI_DEVICES).iterdir())
    except OSError:
        return []
    found: list[Gpu] = []
    for device in devices:
        ids = [_read_file(device / leaf) for leaf in ("class", "vendor", "device")]
        try:
            cls, vendor, dev = (int(text.strip(), 16) for text in ids if text is not None)
        except ValueError:
            continue
        if (cls >> 16) == 0x03 and vendor in _PCI_VENDORS:
            label = _PCI_VENDORS[vendor]
            name = (
                f"{label.upper() if label != 'intel' else 'Intel'} GPU (PCI {vendor:04x}:{dev:04x})"
            )
            found.append(Gpu(label, name, None, None))
    return found


# --------------------------------------------------------------------------- assessment
class ProfileLike(Protocol):
    """The part of a profile that detection needs (envbuild's Profile has more)."""

    @property
    def name(self) -> str: ...

    @property
    def accelerator(self) -> str: ...  # "cpu" | "cuda" | "rocm" | "xpu" | "mps"

    @property
    def accelerator_version(self) -> str | None: ...  # "12.6", "6.3", None

    @property
    def channel(self) -> str: ...  # "stable" | "nightly"


class Fit(NamedTuple):
    """One profile's verdict on this machine, with the reason in one sentence."""

    profile: str
    ok: bool
    reason: str


class Recommendation(NamedTuple):
    """The profile to use, why, every verdict, and what to do when no GPU build fits."""

    profile: str | None
    reason: str
    fits: tuple[Fit, ...]
    action: str | None


_NONE, _COMPAT, _FULL = "none", "minor-version-compat", "toolkit"


def _family(cc: str, rules: Rules) -> str | None:
    names = dict(rules.families)
    return names.get(cc) or names.get(cc.split(".")[0])


def _label(gpu: Gpu, rules: Rules) -> str:
    """'NVIDIA GeForce GTX 1080 (Pascal, sm_61)': the name a user knows plus what decides."""
    if not gpu.compute_capability:
        return gpu.name
    family = _family(gpu.compute_capability, rules)
    return f"{gpu.name} ({family + ', ' if family else ''}{gpu.arch})"


def _sm(target: str) -> str:
    return "sm_" + target.replace(".", "")


def _cubin_for(cc: str, targets: Iterable[str]) -> str | None:
    """The target whose cubin runs on `cc`: same major, minor not above (binary compatibility)."""
    major, minor = _vt(cc)[:2]
    usable = [t for t in targets if _vt(t)[0] == major and _vt(t)[1] <= minor]
    return max(usable, key=_vt) if usable else None


def _arch_row(
    cuda: str, machine: Machine, rules: Rules, torch_version: str | None
) -> ArchRule | None:
    """The arch row for this build and platform; without a torch version, the newest torch's."""
    rows = [
        r
        for r in rules.arches
        if _vt(r.cuda) == _vt(cuda)
        and (not r.machines or _norm_machine(machine.machine) in r.machines)
        and (not r.systems or machine.system in r.systems)
    ]
    if torch_version:
        rows = [
            r
            for r in rows
            if _at_least(torch_version, r.torch_min)
            and (r.torch_below is None or not _at_least(torch_version, r.torch_below))
        ]
    return max(rows, key=lambda r: _vt(r.torch_min)) if rows else None


def _unique(gpus: Iterable[Gpu]) -> list[Gpu]:
    seen: dict[tuple[str, str | None], Gpu] = {}
    for gpu in gpus:
        seen.setdefault((gpu.name, gpu.compute_capability), gpu)
    return list(seen.values())


def _known_nvidia(machine: Machine) -> list[Gpu]:
    return _unique(g for g in machine.gpus if g.vendor == "nvidia" and g.compute_capability)


def _kernel_phrase(gpu: Gpu, row: ArchRule, rules: Rules) -> str:
    cubin = _cubin_for(gpu.compute_capability or "", row.targets)
    label = _label(gpu, rules)
    if cubin and cubin != gpu.compute_capability:
        label = label[:-1] + f", runs the {_sm(cubin)} kernels)"
    return label


def _no_kernels(name: str, gpu: Gpu, row: ArchRule, rules: Rules) -> str:
    cc = _vt(gpu.compute_capability or "0.0")
    oldest, newest = min(row.targets, key=_vt), max(row.targets, key=_vt)
    if cc < _vt(oldest):
        where = f"its oldest target is {_sm(oldest)} ({_family(oldest, rules)})"
    elif cc[0] > _vt(newest)[0]:
        where = f"its newest target is {_sm(newest)} ({_family(newest, rules)})"
    else:
        where = "it carries " + ", ".join(_sm(t) for t in row.targets)
    return f"{name} carries no kernels for {_label(gpu, rules)}: {where}"


def _arch_verdict(
    machine: Machine, profile: ProfileLike, rules: Rules, torch_version: str | None
) -> tuple[bool | None, str]:
    """(True/False, reason), or (None, reason) when no GPU model is known to check."""
    known = _known_nvidia(machine)
    if not known:
        return None, "no NVIDIA GPU model is known, so its kernels were not checked"
    row = _arch_row(profile.accelerator_version or "", machine, rules, torch_version)
    if row is None:
        torch = f" for torch {torch_version}" if torch_version else ""
        return False, (
            f"cuda_rules.toml has no architecture list for {profile.name}{torch} "
            f"on {machine.system} {_norm_machine(machine.machine)}"
        )
    for gpu in known:
        if _cubin_for(gpu.compute_capability or "", row.targets) is None:
            return False, _no_kernels(profile.name, gpu, row, rules)
    phrases = " and ".join(_kernel_phrase(g, row, rules) for g in known)
    return True, f"{profile.name} carries kernels for {phrases}"


class _Need(NamedTuple):
    lowest: str | None  # the lowest driver that runs the build at all
    full: str | None  # the driver NVIDIA lists for that CUDA release


def _driver_need(cuda: str, system: str, rules: Rules) -> _Need:
    full = compat = None
    for rule in rules.drivers:
        if rule.kind == _FULL and _vt(rule.cuda) == _vt(cuda)[:2]:
            full = _driver_min(rule, system)
        if rule.kind == _COMPAT and int(rule.cuda) == _vt(cuda)[0]:
            compat = _driver_min(rule, system)
    # A floor in the same driver branch as the toolkit's own minimum buys nothing in practice.
    lowest = compat if compat and (full is None or _vt(compat)[0] < _vt(full)[0]) else full
    return _Need(lowest, full)


def _support(machine: Machine, cuda: str, rules: Rules) -> str:
    """How the driver runs CUDA `cuda`: in full, by minor-version compatibility, or not."""
    driver = machine.nvidia_driver
    if driver is None:
        return _NONE
    if machine.max_cuda and _vt(machine.max_cuda) >= _vt(cuda)[:2]:
        return _FULL
    if _vt(cuda)[0] in _compat_majors(driver, machine.system, rules):
        return _COMPAT
    return _NONE


def _driver_text(machine: Machine, name: str, cuda: str, rules: Rules) -> str:
    driver, newest = machine.nvidia_driver, machine.max_cuda
    support, need = _support(machine, cuda, rules), _driver_need(cuda, machine.system, rules)
    if support == _FULL:
        return f"driver {driver} supports CUDA {newest}"
    if support == _COMPAT:
        full = f" (full support from {need.full})" if need.full else ""
        return (
            f"driver {driver} supports CUDA {newest} in full and CUDA {cuda} "
            f"through minor-version compatibility{full}"
        )
    if need.lowest is None:
        return f"cuda_rules.toml has no driver minimum for CUDA {cuda} on {machine.system}"
    full = (
        f" (≥ {need.full} for full CUDA {cuda} support)"
        if need.full not in (None, need.lowest)
        else ""
    )
    has = (
        f"supports CUDA up to {newest}"
        if newest
        else "is older than every CUDA release envbuild knows"
    )
    return f"{name} needs NVIDIA driver ≥ {need.lowest}{full}; driver {driver} {has}"


def _check_cuda(
    machine: Machine, profile: ProfileLike, rules: Rules, torch_version: str | None
) -> tuple[bool, str]:
    cuda = profile.accelerator_version
    if machine.system not in ("Linux", "Windows"):
        return False, f"PyTorch publishes no CUDA builds for {machine.system}"
    if not cuda:
        return False, f"profile {profile.name} names no CUDA version"
    if machine.nvidia_driver is None:
        seen = " although an NVIDIA GPU is on the PCI bus" if _has(machine, "nvidia") else ""
        return False, f"no NVIDIA driver found{seen}"
    driver_text = _driver_text(machine, profile.name, cuda, rules)
    if _support(machine, cuda, rules) == _NONE:
        return False, driver_text
    arch_ok, arch_text = _arch_verdict(machine, profile, rules, torch_version)
    if arch_ok is False:
        return False, arch_text
    return True, f"{driver_text}, and {arch_text}"


def _has(machine: Machine, vendor: str) -> bool:
    return any(g.vendor == vendor for g in machine.gpus)


def _check_cpu(
    machine: Machine, profile: ProfileLike, rules: Rules, torch_version: str | None
) -> tuple[bool, str]:
    return True, "the CPU build runs on any machine (no GPU is used)"


def _check_mps(
    machine: Machine, profile: ProfileLike, rules: Rules, torch_version: str | None
) -> tuple[bool, str]:
    if machine.system == "Darwin" and _norm_machine(machine.machine) == "aarch64":
        return True, "Apple silicon Mac: PyTorch from PyPI uses its GPU through MPS"
    return (
        False,
        f"mps needs macOS on Apple silicon (arm64); this is {machine.system} {machine.machine}",
    )


def _check_xpu(
    machine: Machine, profile: ProfileLike, rules: Rules, torch_version: str | None
) -> tuple[bool, str]:
    intel = [g for g in machine.gpus if g.vendor == "intel"]
    if machine.system not in ("Linux", "Windows"):
        return False, f"PyTorch publishes no xpu builds for {machine.system}"
    if not intel:
        where = " (envbuild looks for one on Linux only)" if machine.system == "Windows" else ""
        return False, f"no Intel GPU found{where}"
    return True, (
        f"{intel[0].name} found, but envbuild cannot tell whether PyTorch's xpu build supports it "
        "(it supports Intel Arc, Core Ultra with Arc graphics and Data Center GPU Max, "
        "with Intel's GPU driver installed)"
    )


def _rocm_row(version: str, rules: Rules) -> RocmArchRule | None:
    return next((r for r in rules.rocm_arches if _vt(r.rocm) == _vt(version)), None)


def _check_rocm(
    machine: Machine, profile: ProfileLike, rules: Rules, torch_version: str | None
) -> tuple[bool, str]:
    version, installed = profile.accelerator_version, machine.rocm_version
    amd = _unique(g for g in machine.gpus if g.vendor == "amd" and g.arch)
    if machine.system != "Linux":
        return False, "PyTorch's ROCm builds are for Linux only"
    if not version:
        return False, f"profile {profile.name} names no ROCm version"
    if not amd:
        return False, "ROCm reports no AMD GPU (rocm_agent_enumerator)"
    if installed and _vt(version)[:2] > _vt(installed)[:2]:
        return False, f"{profile.name} is newer than the installed ROCm {installed}"
    row = _rocm_row(version, rules)
    for gpu in amd:
        if row and gpu.arch not in row.gfx:
            return (
                False,
                f"{profile.name} carries no kernels for {gpu.arch}: it has {', '.join(row.gfx)}",
            )
    names = " and ".join(g.arch or g.name for g in amd)
    kernels = (
        f"carries kernels for {names}" if row else f"was not checked for {names} (no gfx list)"
    )
    rocm = (
        f"ROCm {installed} is installed"
        if installed
        else f"the ROCm version is unknown ({_ROCM_VERSION})"
    )
    return True, f"{profile.name} {kernels}, and {rocm}"


_CHECKS = {
    "cpu": _check_cpu,
    "cuda": _check_cuda,
    "rocm": _check_rocm,
    "xpu": _check_xpu,
    "mps": _check_mps,
}


def assess(
    machine: Machine, profile: ProfileLike, rules: Rules, *, torch_version: str | None = None
) -> Fit:
    """Would this profile's PyTorch run on this machine's GPU? One sentence says why.

    `torch_version` picks the arch row of that torch release; without it, the newest.
    """
    check = _CHECKS.get(profile.accelerator)
    if check is None:
        return Fit(profile.name, False, f"envbuild knows no accelerator {profile.accelerator!r}")
    ok, reason = check(machine, profile, rules, torch_version)
    return Fit(profile.name, ok, reason)


# --------------------------------------------------------------------------- recommendation
class _Ctx(NamedTuple):
    machine: Machine
    usable: tuple[ProfileLike, ...]  # the profiles recommend may pick (stable, or all)
    profiles: tuple[ProfileLike, ...]
    rules: Rules
    torch_version: str | None


_Choice = tuple[str | None, str, str | None]  # (profile, reason, action)


def recommend(
    machine: Machine,
    profiles: Sequence[ProfileLike],
    rules: Rules,
    *,
    include_nightly: bool = False,
    torch_version: str | None = None,
) -> Recommendation:
    """The newest build that runs on every GPU here; if none, say exactly what to do instead.

    Nightly profiles are only picked with `include_nightly`; cpu is only recommended when no
    GPU is usable, never in place of a GPU build that merely needs a driver upgrade.
    """
    fits = tuple(assess(machine, p, rules, torch_version=torch_version) for p in profiles)
    usable = tuple(p for p in profiles if include_nightly or p.channel == "stable")
    ctx = _Ctx(machine, usable, tuple(profiles), rules, torch_version)
    for decide in (_for_nvidia, _for_amd, _for_apple, _for_intel):
        choice = decide(ctx)
        if choice is not None:
            return Recommendation(choice[0], _sentence(choice[1]), fits, choice[2])
    profile, reason, action = _cpu_choice(ctx, "no supported GPU found")
    return Recommendation(profile, _sentence(reason), fits, action)


def _sentence(text: str) -> str:
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _cpu_name(ctx: _Ctx) -> str | None:
    return next((p.name for p in ctx.profiles if p.accelerator == "cpu"), None)


def _cpu_choice(ctx: _Ctx, why: str, action: str | None = None) -> _Choice:
    cpu = _cpu_name(ctx)
    if cpu is None:
        return None, f"{why}, and no cpu profile is offered", action or "add a cpu profile"
    return cpu, f"{why} → {cpu}.", action


def _cuda_profiles(ctx: _Ctx) -> list[ProfileLike]:
    found = [p for p in ctx.usable if p.accelerator == "cuda" and p.accelerator_version]
    return sorted(found, key=lambda p: (_vt(p.accelerator_version or "0"), p.channel == "stable"))


def _covers(ctx: _Ctx, profile: ProfileLike, gpus: Sequence[Gpu] | None = None) -> bool:
    """False only when a known GPU lacks kernels; an unknown GPU cannot rule a build out."""
    machine = ctx.machine
    if gpus is not None:
        machine = Machine(machine.system, machine.machine, tuple(gpus), None, None, None, None, ())
    ok, _reason = _arch_verdict(machine, profile, ctx.rules, ctx.torch_version)
    return ok is not False


def _range(chosen: Sequence[ProfileLike], ordered: Sequence[ProfileLike]) -> str:
    """'cu128 or newer' / 'cu126 or older' / 'cu124 or cu128', for the builds a GPU can use."""
    names = [p.name for p in ordered]
    picked = [names.index(p.name) for p in chosen]
    contiguous = picked == list(range(min(picked), max(picked) + 1))
    if contiguous and max(picked) == len(names) - 1 and len(picked) < len(names):
        return f"{names[min(picked)]} or newer"
    if contiguous and min(picked) == 0 and len(picked) < len(names):
        return f"{names[max(picked)]} or older"
    return " or ".join(names[i] for i in picked)


def _for_nvidia(ctx: _Ctx) -> _Choice | None:
    machine = ctx.machine
    if not _has(machine, "nvidia") and machine.nvidia_driver is None:
        return None
    cands = _cuda_profiles(ctx)
    if not cands:
        return _cpu_choice(ctx, "an NVIDIA GPU is here, but no CUDA profile is offered")
    if machine.nvidia_driver is None:
        return _nvidia_without_driver(ctx, cands)
    covering = [p for p in cands if _covers(ctx, p)]
    if not covering:
        return _nvidia_no_kernels(ctx, cands)
    runnable = [
        p for p in covering if _support(machine, p.accelerator_version or "", ctx.rules) != _NONE
    ]
    if not runnable:
        return _nvidia_driver_too_old(ctx, covering)
    chosen = max(
        runnable,
        key=lambda p: (
            _support(machine, p.accelerator_version or "", ctx.rules) == _FULL,
            _vt(p.accelerator_version or "0"),
            p.channel == "stable",
        ),
    )
    gpus, driver = _gpu_clause(ctx, cands, covering), _driver_clause(ctx, chosen, covering)
    reason = f"{gpus}; {driver} → {chosen.name}."
    return chosen.name, reason, None


def _gpu_clause(ctx: _Ctx, cands: Sequence[ProfileLike], covering: Sequence[ProfileLike]) -> str:
    """Which GPU decides and which builds it allows, in words a non-expert follows."""
    known = _known_nvidia(ctx.machine)
    if not known:
        return "no NVIDIA GPU model was detected, so kernels were not checked"
    labels = " and ".join(_label(g, ctx.rules) for g in known)
    if len(covering) == len(cands):
        return f"every CUDA build offered has kernels for {labels}"
    if len(known) == 1:
        return f"{labels} needs {_range(covering, cands)}"
    limiting = min(
        known,
        key=lambda g: (sum(_covers(ctx, p, [g]) for p in cands), _vt(g.compute_capability or "0")),
    )
    weakest = min(known, key=lambda g: _vt(g.compute_capability or "0"))
    which = "weakest" if limiting is weakest else "newest"
    label = _label(limiting, ctx.rules)
    return f"chosen for the {which} GPU, {label}, which needs {_range(covering, cands)}"


def _driver_clause(ctx: _Ctx, chosen: ProfileLike, covering: Sequence[ProfileLike]) -> str:
    machine, rules = ctx.machine, ctx.rules
    cuda = chosen.accelerator_version or ""
    text = f"driver {machine.nvidia_driver} supports CUDA {machine.max_cuda}"
    if _support(machine, cuda, rules) == _COMPAT:
        need = _driver_need(cuda, machine.system, rules)
        full = f" (full support from {need.full})" if need.full else ""
        text += f", and {chosen.name} runs through minor-version compatibility{full}"
    newer = [p for p in covering if _vt(p.accelerator_version or "0") > _vt(cuda)]
    compat = [
        p.name for p in newer if _support(machine, p.accelerator_version or "", rules) == _COMPAT
    ]
    blocked = [p for p in newer if _support(machine, p.accelerator_version or "", rules) == _NONE]
    if compat:
        text += f"; {' and '.join(compat)} would run only through minor-version compatibility"
    if blocked:
        need = _driver_need(blocked[-1].accelerator_version or "", machine.system, rules)
        text += f"; {blocked[-1].name} would need driver ≥ {need.lowest}"
    return text


def _nvidia_without_driver(ctx: _Ctx, cands: Sequence[ProfileLike]) -> _Choice:
    gpu = next(g for g in ctx.machine.gpus if g.vendor == "nvidia")
    newest = cands[-1]
    need = _driver_need(newest.accelerator_version or "", ctx.machine.system, ctx.rules)
    asked = f"nvidia-smi, {_SYS_DRIVER}, {_PROC_DRIVER}"
    reason = f"{gpu.name} is here, but no NVIDIA driver answered ({asked})"
    action = (
        f"install the NVIDIA driver (≥ {need.full or need.lowest} for {newest.name}) and run "
        "envbuild detect again, or use profile cpu"
    )
    return None, reason, action


def _nvidia_no_kernels(ctx: _Ctx, cands: Sequence[ProfileLike]) -> _Choice:
    known = _known_nvidia(ctx.machine)
    names = ", ".join(p.name for p in cands)
    own = {g: [p for p in cands if _covers(ctx, p, [g])] for g in known}
    if len(known) > 1 and all(own.values()):
        needs = "; ".join(
            f"{_label(g, ctx.rules)} needs {_range(ps, cands)}" for g, ps in own.items()
        )
        reason = f"no single CUDA build offered carries kernels for every GPU: {needs}"
        action = (
            "hide the GPUs one build cannot serve with CUDA_VISIBLE_DEVICES and use the build the "
            "others need, or use profile cpu"
        )
        return None, reason, action
    rows = [
        r
        for p in cands
        if (r := _arch_row(p.accelerator_version or "", ctx.machine, ctx.rules, ctx.torch_version))
    ]
    if not rows:
        where = f"{ctx.machine.system} {_norm_machine(ctx.machine.machine)}"
        reason = f"cuda_rules.toml has no architecture list for {names} on {where}"
        return None, reason, "use profile cpu, or add the missing rows to cuda_rules.toml"
    gpu = next(g for g, ps in own.items() if not ps)
    oldest = min((t for r in rows for t in r.targets), key=_vt)
    side = "older" if _vt(gpu.compute_capability or "0") < _vt(oldest) else "newer"
    reason = f"no CUDA build offered ({names}) carries kernels for {_label(gpu, ctx.rules)}"
    return (
        None,
        reason,
        f"use profile cpu: {gpu.name} is {side} than every CUDA build offered supports",
    )


def _nvidia_driver_too_old(ctx: _Ctx, covering: Sequence[ProfileLike]) -> _Choice:
    machine, rules = ctx.machine, ctx.rules
    needs = [
        (p, _driver_need(p.accelerator_version or "", machine.system, rules)) for p in covering
    ]
    needs = [(p, n) for p, n in needs if n.lowest]
    has = (
        f"supports CUDA up to {machine.max_cuda}"
        if machine.max_cuda
        else "is older than every CUDA release envbuild knows"
    )
    who = "this machine's GPUs can use" if _known_nvidia(machine) else "offered"
    names = ", ".join(p.name for p in covering)
    reason = f"driver {machine.nvidia_driver} {has}, too old for every CUDA build {who} ({names})"
    if not needs:
        return None, reason, "use profile cpu"
    lowest = min((n.lowest or "" for _p, n in needs), key=_vt)
    target, need = [(p, n) for p, n in needs if n.lowest == lowest][-1]
    if not _known_nvidia(machine):
        major = _vt(target.accelerator_version or "0")[0]
        action = (
            f"upgrade the NVIDIA driver to ≥ {lowest} (the minimum for CUDA {major} builds) and "
            "run envbuild detect again so it can check the GPU architecture, or use profile cpu"
        )
        return None, reason, action
    full = (
        f" (≥ {need.full} for full CUDA {target.accelerator_version} support)"
        if need.full not in (None, lowest)
        else ""
    )
    return (
        None,
        reason,
        f"upgrade the NVIDIA driver to ≥ {lowest} to use {target.name}{full}, or use profile cpu",
    )


def _for_amd(ctx: _Ctx) -> _Choice | None:
    amd = [g for g in ctx.machine.gpus if g.vendor == "amd"]
    if not amd:
        return None
    if not any(g.arch for g in amd):
        why = (
            f"{amd[0].name} is here, but ROCm did not report it (rocm_agent_enumerator), "
            "so no ROCm build is picked"
        )
        hint = "if it is a GPU ROCm supports, install ROCm and run envbuild detect again"
        return _cpu_choice(ctx, why, hint)
    cands = [p for p in ctx.usable if p.accelerator == "rocm" and p.accelerator_version]
    fits = [(p, assess(ctx.machine, p, ctx.rules, torch_version=ctx.torch_version)) for p in cands]
    good = [p for p, fit in fits if fit.ok]
    archs = " and ".join(sorted({g.arch for g in amd if g.arch}))
    if good:
        chosen = max(good, key=lambda p: _vt(p.accelerator_version or "0"))
        rocm = ctx.machine.rocm_version
        installed = f"ROCm {rocm} is installed" if rocm else "the installed ROCm version is unknown"
        return (
            chosen.name,
            f"AMD GPU {archs}: {installed}, and {chosen.name} is the newest ROCm build that fits"
            f" → {chosen.name}.",
            None,
        )
    if not cands:
        return _cpu_choice(ctx, f"AMD GPU {archs} is here, but no ROCm profile is offered")
    reasons = "; ".join(fit.reason for _p, fit in fits)
    return None, f"no ROCm profile fits AMD GPU {archs}: {reasons}", _rocm_action(ctx, cands)


def _rocm_action(ctx: _Ctx, cands: Sequence[ProfileLike]) -> str:
    """Name a ROCm upgrade only when a newer ROCm would make a build fit."""
    m = ctx.machine
    unversioned = Machine(
        m.system, m.machine, m.gpus, m.nvidia_driver, m.driver_source, m.max_cuda, None, m.notes
    )
    would = [
        p for p in cands if assess(unversioned, p, ctx.rules, torch_version=ctx.torch_version).ok
    ]
    if not would:
        return "use profile cpu"
    oldest = min(would, key=lambda p: _vt(p.accelerator_version or "0"))
    return (
        f"upgrade ROCm to ≥ {oldest.accelerator_version} to use {oldest.name}, or use profile cpu"
    )


def _for_apple(ctx: _Ctx) -> _Choice | None:
    if not _has(ctx.machine, "apple"):
        return None
    mps = next((p for p in ctx.usable if p.accelerator == "mps"), None)
    if mps is None:
        return _cpu_choice(ctx, "Apple silicon Mac, but no mps profile is offered")
    return (
        mps.name,
        f"Apple silicon Mac: PyTorch from PyPI uses its GPU through MPS → {mps.name}.",
        None,
    )


def _for_intel(ctx: _Ctx) -> _Choice | None:
    intel = [g for g in ctx.machine.gpus if g.vendor == "intel"]
    if not intel:
        return None
    why = (
        f"{intel[0].name} found, but envbuild cannot tell whether PyTorch's xpu build supports it, "
        "so it does not pick xpu by itself"
    )
    hint = (
        "if it is an Intel Arc, Core Ultra with Arc graphics or Data Center GPU Max GPU with "
        "Intel's GPU driver installed, use profile xpu"
    )
    return _cpu_choice(ctx, why, hint)
