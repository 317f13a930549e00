#!/usr/bin/env python3
"""Wall times of the real-torch path: envbuild and plain uv through the pull-through mirror.

Workload: tests/test_realtorch.py's deployment (the real ComfyUI requirements.txt, profile
cu130-pypi, torch 2.14.1 from PyPI's CUDA 13.0 build), locked and synced through the loopback
pull-through mirror (tests/support/pullthrough.py) over this machine's local wheel indexes, every
other project relayed from PyPI (so this needs the network). Plain uv runs `uv lock` and
`uv sync --locked` on a copy of the generated locks/cu130-pypi/ project, through the same mirror.

Cold: a fresh uv cache (each cold run moves ~3.8 GB through the mirror and unpacks ~6.6 GB; its
deletion is not timed). Warm: the same cache, lock folder or venv removed first; medians of --runs.
"verify" is `envbuild doctor --no-import` (lock, venv and torch checked from files, no import);
"import" is one `import torch` plus a tensor op in the synced venv. One mirror process serves every
case, so its URL, and therefore uv's cache keys, stay the same throughout.

    python scripts/bench_realtorch.py [--runs 3] [--cold-runs 1] [--scratch DIR] [--markdown FILE]
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

from tests.support.pullthrough import LocalStore, PullThrough  # noqa: E402
from tests.test_realtorch import (  # noqa: E402
    IMPORT_PROBE,
    PROFILE,
    local_torch,
    python311,
    realtorch_env,
    realtorch_site,
)


@dataclass(frozen=True)
class Sample:
    seconds: float
    local_bytes: float  # what the mirror sent from the local files during the run
    relay_bytes: float  # what it relayed from PyPI


@dataclass
class Bench:
    mirror: PullThrough
    env: dict[str, str]

    def run(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> Sample:
        self.mirror.clear_log()
        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=env or self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        if proc.returncode not in ok:
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-4000:]}")
        return Sample(elapsed, self.mirror.bytes_served("local"), self.mirror.bytes_served("relay"))

    def measure(self, runs: int, prepare: Callable[[], None], argv: list[str], cwd: Path,
                env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> Sample:
        samples = []
        for _ in range(runs):
            prepare()
            samples.append(self.run(argv, cwd, env, ok))
        return median(samples)


def remove(*paths: Path) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def bench_envbuild(bench: Bench, tmp: Path, cache: Path, runs: int, cold_runs: int) -> dict[str, Sample]:
    site = realtorch_site(tmp / "envbuild")
    venv = tmp / "envbuild-venv"
    envbuild = [sys.executable, "-m", "envbuild"]
    lock = [*envbuild, "lock", "--profile", PROFILE]
    sync = [*envbuild, "sync", "--profile", PROFILE, "--venv", str(venv)]
    rows: dict[str, Sample] = {}
    cold_lock, cold_sync = [], []
    for _ in range(cold_runs):
        remove(cache, site.locks, venv)
        cold_lock.append(bench.run(lock, site.root))
        cold_sync.append(bench.run(sync, site.root))
    rows["lock, cold cache"] = median(cold_lock)
    rows["sync, cold cache"] = median(cold_sync)
    doctor = [*envbuild, "doctor", "--profile", PROFILE, "--venv", str(venv), "--no-import", "--json"]
    rows["verify (doctor --no-import)"] = bench.measure(runs, lambda: None, doctor, site.root, ok=(0, 1))
    rows["lock, warm cache"] = bench.measure(runs, lambda: remove(site.locks), lock, site.root)
    rows["sync, warm cache"] = bench.measure(runs, lambda: remove(venv), sync, site.root)
    python = str(venv / "bin" / "python")
    rows["import torch + tensor op"] = bench.measure(runs, lambda: None, [python, "-c", IMPORT_PROBE], tmp)
    shutil.copytree(site.locks / PROFILE, tmp / "generated", dirs_exist_ok=True)
    remove(venv)
    return rows


def bench_uv(bench: Bench, tmp: Path, cache: Path, uv: str, runs: int, cold_runs: int) -> dict[str, Sample]:
    plain = tmp / "plain"
    venv = tmp / "plain-venv"
    env = dict(bench.env, UV_PROJECT_ENVIRONMENT=str(venv))

    def fresh_project() -> None:
        remove(plain)
        plain.mkdir()
        shutil.copyfile(tmp / "generated" / "pyproject.toml", plain / "pyproject.toml")

    rows: dict[str, Sample] = {}
    cold_lock, cold_sync = [], []
    for _ in range(cold_runs):
        remove(cache, venv)
        fresh_project()
        cold_lock.append(bench.run([uv, "lock"], plain, env))
        cold_sync.append(bench.run([uv, "sync", "--locked"], plain, env))
    rows["lock, cold cache"] = median(cold_lock)
    rows["sync, cold cache"] = median(cold_sync)
    rows["lock, warm cache"] = bench.measure(runs, fresh_project, [uv, "lock"], plain, env)
    rows["sync, warm cache"] = bench.measure(runs, lambda: remove(venv), [uv, "sync", "--locked"], plain, env)
    remove(venv)
    return rows


def median(samples: list[Sample]) -> Sample:
    return Sample(statistics.median(s.seconds for s in samples), statistics.median(s.local_bytes for s in samples),
                  statistics.median(s.relay_bytes for s in samples))


def size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def render(ours: dict[str, Sample], theirs: dict[str, Sample], runs: int, cold_runs: int, uv: str) -> str:
    version = subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {version}; "
        f"{time.strftime('%Y-%m-%d')}. Profile {PROFILE} (torch 2.14.1, CUDA 13.0) through the pull-through "
        f"mirror. Warm rows: medians of {runs} runs; cold rows: of {cold_runs}. Local/relayed: what the mirror "
        "sent from the local files and relayed from PyPI during the run (envbuild / uv).",
        "",
        "| case | envbuild s | uv s | local | relayed |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, sample in ours.items():
        other = theirs.get(name)
        uv_s = f"{other.seconds:.2f}" if other else ""
        local = size(sample.local_bytes) + (f" / {size(other.local_bytes)}" if other else "")
        relay = size(sample.relay_bytes) + (f" / {size(other.relay_bytes)}" if other else "")
        lines.append(f"| {name} | {sample.seconds:.2f} | {uv_s} | {local} | {relay} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per warm case (median)")
    parser.add_argument("--cold-runs", type=int, default=1, help="runs per cold case (each needs a fresh cache)")
    parser.add_argument("--scratch", type=Path, help="where caches and venvs go (default: the system temp dir)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if local_torch(LocalStore()) is None:
        raise SystemExit("no local torch 2.14.1 wheel in /opt/pypi/simple or /opt/pypi-more/simple: nothing to bench")
    python = python311()
    if python is None:
        raise SystemExit("needs a CPython 3.11 (the local wheels are cp311)")
    from uv import find_uv_bin

    uv = find_uv_bin()
    with tempfile.TemporaryDirectory(prefix="envbuild-bench-realtorch-", dir=args.scratch) as scratch, \
            PullThrough() as mirror:
        tmp = Path(scratch)
        cache = tmp / "uv-cache"
        bench = Bench(mirror, realtorch_env(tmp, cache, python, mirror.url, Path(uv)))
        ours = bench_envbuild(bench, tmp, cache, args.runs, args.cold_runs)
        theirs = bench_uv(bench, tmp, cache, uv, args.runs, args.cold_runs)
        remove(cache)
    table = render(ours, theirs, args.runs, args.cold_runs, uv)
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
