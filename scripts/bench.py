#!/usr/bin/env python3
"""envbuild against plain uv (and pip) on the real ComfyUI requirement set, side by side in one run.

Workload: the real ComfyUI + ComfyUI-Manager + custom-node requirement files in tests/fixtures
(was-node-suite left out: its transformers==4.26.1 conflicts with ComfyUI's), the torch family
from a loopback index of small test wheels, everything else from PyPI (so this needs the
network). Each figure is the median of several whole-process runs in this one process of the
script; envbuild and uv run on the same generated project, alternately, so their ratio holds when
the machine drifts. Peak memory is the largest single process of a run (the kernel's accounting).

envbuild runs as a user has it: installed (not editable) into a venv of its own with its bytecode
compiled, as `pip install .` does, and started through its console script.

    python scripts/bench.py [--runs 5] [--rows lock,noop,all,sync,pip,help,generations] [--markdown docs/benchmarks.md]

With --markdown, the table replaces what stands between the file's `<!-- bench:start -->` and
`<!-- bench:end -->` lines (the whole file when it has none), so the prose around it stays.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.catalogue import build_standard_catalogue  # noqa: E402
from tests.support.index import IndexServer  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
NODES = ("ComfyUI-GGUF", "ComfyUI-Impact-Pack", "ComfyUI-KJNodes", "ComfyUI-VideoHelperSuite",
         "comfyui_controlnet_aux")
PROFILES = ("cu126", "cu128", "cu124", "cpu", "cu130", "nightly-cu132")
MAIN = "cu126"


@dataclass(frozen=True)
class Sample:
    seconds: float
    peak_mib: float


@dataclass(frozen=True)
class Row:
    case: str
    ours: Sample
    theirs: Sample | None = None
    theirs_name: str = "uv"
    target: str = ""
    met: bool | None = None


def run(argv: list[str], env: dict[str, str], cwd: Path) -> Sample:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(map(str, argv))}\n{stderr}")
    return Sample(elapsed, usage.ru_maxrss / 1024)


def median(samples: list[Sample]) -> Sample:
    return Sample(statistics.median(s.seconds for s in samples), max(s.peak_mib for s in samples))


def pair(runs: int, prepare: Callable[[], None], a: tuple[list[str], dict[str, str], Path],
         b: tuple[list[str], dict[str, str], Path] | None = None) -> tuple[Sample, Sample | None]:
    """A and B alternately, each after `prepare`: drift hits both equally."""
    ours, theirs = [], []
    for _ in range(runs):
        prepare()
        ours.append(run(*a))
        if b is not None:
            prepare()
            theirs.append(run(*b))
    return median(ours), (median(theirs) if b is not None else None)


def make_site(root: Path) -> Path:
    site = root / "site"
    (site / "ComfyUI").mkdir(parents=True)
    shutil.copyfile(FIXTURES / "comfyui" / "requirements.txt", site / "ComfyUI" / "requirements.txt")
    nodes = site / "data" / "custom_nodes"
    shutil.copytree(FIXTURES / "manager", nodes / "comfyui-manager")
    for node in NODES:
        shutil.copytree(FIXTURES / "nodes" / node, nodes / node)
    listed = ", ".join(f'"{p}"' for p in PROFILES)
    (site / "envbuild.toml").write_text(
        '[comfyui]\npath = "ComfyUI"\nbase-directory = "data"\n'
        f'[lock]\nrequires-python = ">=3.11,<3.13"\nprofiles = [{listed}]\n'
        'allow-build = ["fvcore"]  # controlnet_aux asks for it; PyPI has only its sdist\n', encoding="utf-8")
    return site


def within(ours: Sample, theirs: Sample) -> bool:
    """The target: envbuild adds at most 10 % or 100 ms, whichever is larger, to uv's own time."""
    return ours.seconds - theirs.seconds <= max(0.10 * theirs.seconds, 0.100)


def install_envbuild(uv: str, tmp: Path, env: dict[str, str]) -> Path:
    """envbuild from this checkout into a venv of its own, bytecode compiled (what `pip install .` does)."""
    venv = tmp / "envbuild-venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], env=env, check=True)
    subprocess.run([uv, "pip", "install", "-q", "--compile-bytecode", "--python", str(venv / "bin" / "python"),
                    str(ROOT)], env=env, check=True)
    return venv / "bin" / "envbuild"


class Bench:
    def __init__(self, tmp: Path, runs: int, catalogue) -> None:
        from uv import find_uv_bin

        self.tmp, self.runs = tmp, runs
        self.uv = find_uv_bin()
        self.site = make_site(tmp)
        self.cache = tmp / "uv-cache"
        # A user's shell: none of this machine's uv/pip/Python settings (PYTHONDONTWRITEBYTECODE among them).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV", "PYTHON"))}
        env.update(UV_CACHE_DIR=str(self.cache), UV_PYTHON_DOWNLOADS="never", UV_PYTHON=sys.executable,
                   ENVBUILD_PYTORCH_INDEX=catalogue.pytorch_base, UV_NO_PROGRESS="1", PIP_CONFIG_FILE=os.devnull)
        self.env = env
        self.envbuild = [str(install_envbuild(self.uv, tmp, env))]
        self.plain = tmp / "plain"
        self.venv = tmp / "venv"
        self.pyproject = ""
        self.notes: list[str] = []  # measurements that are not times (disk)

    def lock_dir(self, profile: str = MAIN) -> Path:
        return self.site / "locks" / profile

    def eb(self, *args: str) -> tuple[list[str], dict[str, str], Path]:
        return [*self.envbuild, *args], self.env, self.site

    def drop(self, *paths: Path) -> Callable[[], None]:
        return lambda: [shutil.rmtree(p, ignore_errors=True) for p in paths] and None

    def fresh_venv(self) -> None:
        """No venv at all: envbuild's venv path is a link to a generation, so both go (and uv's real folder)."""
        if self.venv.is_symlink():
            self.venv.unlink()
        shutil.rmtree(self.venv, ignore_errors=True)
        shutil.rmtree(self.venv.parent / ".envbuild-generations", ignore_errors=True)

    def fresh_plain(self) -> None:
        """uv's side: the same generated pyproject, in a folder of its own, with no lock yet."""
        shutil.rmtree(self.plain, ignore_errors=True)
        self.plain.mkdir()
        (self.plain / "pyproject.toml").write_text(self.pyproject, encoding="utf-8")

    def lock_rows(self) -> list[Row]:
        uv_lock = ([self.uv, "lock"], self.env, self.plain)
        cold_runs = max(1, min(self.runs, 2))
        rows = []
        a, b = pair(cold_runs, lambda: (self.drop(self.cache, self.site / "locks")(), self.fresh_plain()),
                    self.eb("lock", "--profile", MAIN), uv_lock)
        rows.append(Row("lock, cold cache", a, b, target="≤ uv + max(10 %, 100 ms)", met=within(a, b)))
        a, b = pair(self.runs, lambda: (self.drop(self.site / "locks")(), self.fresh_plain()),
                    self.eb("lock", "--profile", MAIN), uv_lock)
        rows.append(Row("lock, warm cache", a, b, target="≤ uv + max(10 %, 100 ms)", met=within(a, b)))
        return rows

    def noop_rows(self) -> list[Row]:
        """The two commands people run most: nothing changed, so envbuild's own overhead is all there is."""
        run(*self.eb("lock", "--profile", MAIN))
        if not (self.plain / "uv.lock").is_file():
            self.fresh_plain()
            run([self.uv, "lock"], self.env, self.plain)
        a, b = pair(max(self.runs, 10), lambda: None, self.eb("lock", "--profile", MAIN),
                    ([self.uv, "lock"], self.env, self.plain))
        rows = [Row("lock, inputs unchanged (no-op; envbuild runs no uv)", a, b,
                    target="≤ uv + max(10 %, 100 ms)", met=within(a, b))]
        sync, uv_sync = self.sync_commands()
        run(*sync)
        a, b = pair(max(self.runs, 10), lambda: None, sync, uv_sync)
        rows.append(Row("sync, venv already current", a, b, target="≤ uv + max(10 %, 100 ms)", met=within(a, b)))
        return rows

    def sync_commands(self) -> tuple[tuple[list[str], dict[str, str], Path], tuple[list[str], dict[str, str], Path]]:
        uv_env = dict(self.env, UV_PROJECT_ENVIRONMENT=str(self.venv))
        uv_sync = ([self.uv, "sync", "--locked", "--project", str(self.lock_dir())], uv_env, self.site)
        return self.eb("sync", "--profile", MAIN, "--venv", str(self.venv)), uv_sync

    def all_rows(self) -> list[Row]:
        rows = []
        run(*self.eb("lock", "--all"))
        a, _ = pair(self.runs, lambda: None, self.eb("lock", "--all"))
        rows.append(Row(f"lock --all, no-op ({len(PROFILES)} profiles)", a, target="< 0.5 s", met=a.seconds < 0.5))
        checks = [[self.uv, "lock", "--check", "--offline", "--project", str(self.lock_dir(p))] for p in PROFILES]
        script = " && ".join(" ".join(map(str, c)) for c in checks)
        a, b = pair(self.runs, lambda: None, self.eb("lock", "--check", "--all"),
                    (["sh", "-c", script], self.env, self.site))
        rows.append(Row(f"lock --check --all vs uv lock --check per profile ({len(PROFILES)})", a, b,
                        "uv ×" + str(len(PROFILES))))
        seq = "; ".join(" ".join(map(str, [*self.envbuild, "lock", "--profile", p])) for p in PROFILES)
        a, b = pair(1, self.drop(self.site / "locks"), self.eb("lock", "--all", "--jobs", "4"),
                    (["sh", "-c", seq], self.env, self.site))
        rows.append(Row(f"lock --all (warm cache) vs one profile after another ({len(PROFILES)})", a, b,
                        "sequential"))
        return rows

    def sync_rows(self) -> list[Row]:
        run(*self.eb("lock", "--profile", MAIN))
        sync, uv_sync = self.sync_commands()
        run(*sync)  # downloads once: warm cache after
        a, b = pair(self.runs, self.fresh_venv, sync, uv_sync)
        return [Row("sync into a fresh venv, warm cache", a, b, target="≤ uv + max(10 %, 100 ms)", met=within(a, b))]

    def pip_row(self, a_fresh: Sample) -> Row:
        """pip install --no-deps --require-hashes of the exported requirements into a fresh venv (pip's cache
        warm), as the export's header says to install it."""
        exported = self.tmp / "requirements.txt"
        run(*self.eb("export", "--profile", MAIN, "--format", "requirements", "-o", str(exported)))
        pip_venv = self.tmp / "pip-venv"
        pip_env = dict(self.env, PIP_CACHE_DIR=str(self.tmp / "pip-cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
        script = (f"{sys.executable} -m venv {pip_venv} && {pip_venv}/bin/python -m pip install -q "
                  f"--no-deps --require-hashes -r {exported}")
        run(["sh", "-c", f"rm -rf {pip_venv} && {script}"], pip_env, self.site)  # warms pip's cache
        b = run(["sh", "-c", f"rm -rf {pip_venv} && {script}"], pip_env, self.site)  # minutes: measured once
        ratio = b.seconds / a_fresh.seconds
        return Row("sync into a fresh venv vs pip --require-hashes (warm caches)", a_fresh, b, "pip",
                   target="≥ 10× faster than pip", met=ratio >= 10)

    def generation_rows(self) -> list[Row]:
        """Venv generations: a new one vs uv into a fresh venv, the switch and rollback, and the disk a second
        generation adds (uv hardlinks from its cache: `du` over cache and generations together counts a
        linked file once, so the growth is what the second generation really costs)."""
        config = (self.site / "envbuild.toml").read_text(encoding="utf-8")
        run(*self.eb("lock", "--profile", MAIN))
        sync, uv_sync = self.sync_commands()
        run(*sync)  # warm cache
        a, b = pair(self.runs, self.fresh_venv, sync, uv_sync)
        rows = [Row("sync: a new generation vs uv sync into a fresh venv (warm cache)", a, b,
                    target="≤ 1.2× uv", met=a.seconds <= 1.2 * b.seconds)]
        self.fresh_venv()
        run(*sync)
        gens = self.venv.parent / ".envbuild-generations"
        one = du(self.cache, gens)
        other = self.tmp / "other" / "venv"  # the same lock in a venv path elsewhere: a generation of its own
        run(*self.eb("sync", "--profile", MAIN, "--venv", str(other)))
        same = du(self.cache, gens, other.parent) - one
        extra = self.site / "one-more.txt"
        extra.write_text("tomli-w\n", encoding="utf-8")  # a lock that differs in one package
        run(*self.eb("lock", "--profile", MAIN, "--extra-requirements", str(extra)))
        before = du(self.cache, gens)
        second = run(*sync)
        differing = du(self.cache, gens) - before
        single = du(next(p for p in gens.iterdir() if p.name.startswith(MAIN)))
        self.notes.append(f"Disk: one generation alone {single / 1e6:.1f} MB (du of its folder); a second "
                          f"generation of the same lock adds {same / 1e6:.1f} MB, one of a lock differing in one "
                          f"package {differing / 1e6:.1f} MB (du over uv's cache and the generations together).")
        rows.append(Row("sync: a new generation of a lock differing in one package (warm cache)", second))
        switch, back = switch_times(self.venv, max(self.runs, 20))
        rows.append(Row("switch: the venv path's link replaced (in process)", switch, target="< 50 ms",
                        met=switch.seconds < 0.050))
        a, _ = pair(max(self.runs, 10), lambda: None, self.eb("rollback", "--venv", str(self.venv)))
        rows.append(Row("envbuild rollback (whole process)", a, target="< 50 ms (switch)", met=None))
        rows.append(Row("rollback (in process)", back, target="< 50 ms", met=back.seconds < 0.050))
        (self.site / "envbuild.toml").write_text(config, encoding="utf-8")
        run(*self.eb("lock", "--profile", MAIN))
        return rows

    def help_row(self) -> Row:
        a, _ = pair(max(self.runs, 10), lambda: None, self.eb("--help"))
        return Row("envbuild --help", a, target="< 150 ms", met=a.seconds < 0.150)


def du(*paths: Path) -> int:
    """Bytes on disk under `paths`, a hardlinked file counted once across all of them (as `du` does)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in paths:
        for folder, _, files in os.walk(path):
            for name in files:
                stat = os.lstat(os.path.join(folder, name))
                if (stat.st_dev, stat.st_ino) not in seen:
                    seen.add((stat.st_dev, stat.st_ino))
                    total += stat.st_blocks * 512
    return total


def switch_times(venv: Path, runs: int) -> tuple[Sample, Sample]:
    """generations.switch and generations.rollback, timed in this process (no interpreter start)."""
    from envbuild.env import generations

    target = generations.current(venv)
    assert target is not None
    switches, rollbacks = [], []
    for _ in range(runs):
        started = time.perf_counter()
        generations.rollback(venv)
        rollbacks.append(Sample(time.perf_counter() - started, 0))
        started = time.perf_counter()
        generations.switch(venv, target)
        switches.append(Sample(time.perf_counter() - started, 0))
    return median(switches), median(rollbacks)


def render(rows: list[Row], runs: int, packages: int, uv: str) -> str:
    version = subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}, Python "
        f"{platform.python_version()}, {version}; run {time.strftime('%Y-%m-%d')}. Workload: the real ComfyUI + "
        f"Manager + 5 custom nodes, {packages} locked packages. Medians of {runs} runs "
        "(cold-cache rows: 2; `lock --all` vs sequential and pip: 1).",
        "",
        "| case | envbuild s | other s | other | ratio | envbuild peak MiB | other peak MiB | target | met |",
        "|---|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        if r.theirs is None:
            lines.append(f"| {r.case} | {r.ours.seconds:.3f} | | | | {r.ours.peak_mib:.0f} | | {r.target} | {met} |")
            continue
        lines.append(f"| {r.case} | {r.ours.seconds:.3f} | {r.theirs.seconds:.3f} | {r.theirs_name} | "
                     f"{r.ours.seconds / r.theirs.seconds:.2f} | {r.ours.peak_mib:.0f} | {r.theirs.peak_mib:.0f} | "
                     f"{r.target} | {met} |")
    return "\n".join(lines)


GROUPS = ("lock", "noop", "all", "sync", "pip", "help", "generations")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def rows_of(value: str) -> list[str]:
    chosen = [g.strip() for g in value.split(",") if g.strip()]
    unknown = sorted(set(chosen) - set(GROUPS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown row group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    return chosen


def write_markdown(path: Path, table: str) -> None:
    """Between the markers when the file has them (the prose around the table is hand-written)."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if START in old and END in old:
        head, rest = old.split(START, 1)
        text = f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}"
    else:
        text = table + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=rows_of, default=list(GROUPS),
                        help=f"which row groups to measure, comma-separated (default: {','.join(GROUPS)})")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR (created, not removed) to profile a case afterwards; the wheels "
                             "server is gone then, but no-op runs do not need it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="envbuild-bench-") as scratch, IndexServer() as server:
        tmp = Path(scratch)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=False)
            tmp = args.keep.resolve()
        bench = Bench(tmp, args.runs, build_standard_catalogue(server, tmp / "wheels"))
        run(*bench.eb("lock", "--profile", MAIN))  # warms the cache and gives plain uv its project
        bench.pyproject = (bench.lock_dir() / "pyproject.toml").read_text(encoding="utf-8")
        packages = (bench.lock_dir() / "uv.lock").read_text().count("\n[[package]]\n") - 1
        bench.fresh_plain()
        rows: list[Row] = []
        if "lock" in args.rows:
            rows += bench.lock_rows()
        if "noop" in args.rows:
            rows += bench.noop_rows()
        if "all" in args.rows:
            rows += bench.all_rows()
        if "sync" in args.rows or "pip" in args.rows:
            sync_rows = bench.sync_rows()
            rows += sync_rows if "sync" in args.rows else []
            if "pip" in args.rows:
                rows.append(bench.pip_row(a_fresh=sync_rows[0].ours))
        if "help" in args.rows:
            rows.append(bench.help_row())
        if "generations" in args.rows:
            rows += bench.generation_rows()
        table = "\n\n".join([render(rows, args.runs, packages, str(bench.uv)), *bench.notes])
    print(table)
    if args.markdown:
        write_markdown(args.markdown, table)


if __name__ == "__main__":
    main()
