#!/usr/bin/env python3
"""envbuild against plain uv on the real ComfyUI requirement set: lock, no-op lock, sync, --help.

Workload: the real ComfyUI + ComfyUI-Manager + custom-node requirement files in tests/fixtures
(was-node-suite left out: its transformers==4.26.1 conflicts with ComfyUI's), the torch family
from a loopback index of small test wheels, everything else from PyPI (so this needs the
network). Each figure is the median of several runs in this one process; envbuild and uv run on
the same generated project, one after the other, so their ratio holds when the machine drifts.

    python scripts/bench.py [--runs 5] [--profile cu126] [--markdown docs/benchmarks.md]
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


@dataclass(frozen=True)
class Sample:
    seconds: float
    peak_mib: float


def run(argv: list[str], env: dict[str, str], cwd: Path) -> Sample:
    """One whole-process run; peak memory from the kernel's accounting of the finished child."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{stderr}")
    return Sample(elapsed, usage.ru_maxrss / 1024)


def median(samples: list[Sample]) -> Sample:
    return Sample(statistics.median(s.seconds for s in samples), max(s.peak_mib for s in samples))


def measure(runs: int, prepare: Callable[[], None], argv: list[str], env: dict[str, str], cwd: Path) -> Sample:
    samples = []
    for _ in range(runs):
        prepare()
        samples.append(run(argv, env, cwd))
    return median(samples)


def make_site(root: Path, profile: str) -> Path:
    site = root / "site"
    (site / "ComfyUI").mkdir(parents=True)
    shutil.copyfile(FIXTURES / "comfyui" / "requirements.txt", site / "ComfyUI" / "requirements.txt")
    nodes = site / "data" / "custom_nodes"
    shutil.copytree(FIXTURES / "manager", nodes / "comfyui-manager")
    for node in NODES:
        shutil.copytree(FIXTURES / "nodes" / node, nodes / node)
    (site / "envbuild.toml").write_text(
        '[comfyui]\npath = "ComfyUI"\nbase-directory = "data"\n'
        f'[lock]\nrequires-python = ">=3.11,<3.13"\nprofiles = ["{profile}"]\n', encoding="utf-8")
    return site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", default="cu126")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    envbuild = [sys.executable, "-m", "envbuild"]
    from uv import find_uv_bin

    uv = find_uv_bin()
    with tempfile.TemporaryDirectory(prefix="envbuild-bench-") as scratch, IndexServer() as server:
        tmp = Path(scratch)
        catalogue = build_standard_catalogue(server, tmp / "wheels")
        site = make_site(tmp, args.profile)
        cache = tmp / "uv-cache"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV"))}
        env.update(UV_CACHE_DIR=str(cache), UV_PYTHON_DOWNLOADS="never", UV_PYTHON=sys.executable,
                   ENVBUILD_PYTORCH_INDEX=catalogue.pytorch_base, UV_NO_PROGRESS="1")
        lock_dir = site / "locks" / args.profile
        plain = tmp / "plain"
        rows: list[tuple[str, Sample, Sample | None]] = []

        def drop_cache() -> None:
            shutil.rmtree(cache, ignore_errors=True)

        def drop_lock() -> None:
            shutil.rmtree(site / "locks", ignore_errors=True)

        def fresh_plain() -> None:
            shutil.rmtree(plain, ignore_errors=True)
            plain.mkdir()
            shutil.copyfile(lock_dir / "pyproject.toml", plain / "pyproject.toml")

        run(envbuild + ["lock"], env, site)  # warms the cache and gives plain uv its project
        cold_runs = max(1, min(args.runs, 3))
        cold_e = measure(cold_runs, lambda: (drop_cache(), drop_lock()), envbuild + ["lock"], env, site)
        cold_u = measure(cold_runs, lambda: (drop_cache(), fresh_plain()), [uv, "lock"], env, plain)
        rows.append(("lock, cold cache", cold_e, cold_u))
        warm_e = measure(args.runs, drop_lock, envbuild + ["lock"], env, site)
        warm_u = measure(args.runs, fresh_plain, [uv, "lock"], env, plain)
        rows.append(("lock, warm cache", warm_e, warm_u))
        noop_e = measure(args.runs, lambda: None, envbuild + ["lock"], env, site)
        noop_u = measure(args.runs, lambda: None, [uv, "lock"], env, plain)
        rows.append(("lock, inputs unchanged (no-op)", noop_e, noop_u))
        check_u = measure(args.runs, lambda: None, [uv, "lock", "--check", "--offline"], env, plain)
        rows.append(("uv lock --check --offline (reference)", check_u, None))

        venv = tmp / "venv"
        run(envbuild + ["sync", "--venv", str(venv)], env, site)  # downloads once: warm cache from here

        def drop_venv() -> None:
            shutil.rmtree(venv, ignore_errors=True)

        sync_e = measure(args.runs, drop_venv, envbuild + ["sync", "--venv", str(venv)], env, site)
        uv_sync_env = dict(env, UV_PROJECT_ENVIRONMENT=str(venv))
        sync_u = measure(args.runs, drop_venv, [uv, "sync", "--locked", "--project", str(lock_dir)],
                         uv_sync_env, site)
        rows.append(("sync into a fresh venv, warm cache", sync_e, sync_u))
        noop_sync_e = measure(args.runs, lambda: None, envbuild + ["sync", "--venv", str(venv)], env, site)
        noop_sync_u = measure(args.runs, lambda: None, [uv, "sync", "--locked", "--project", str(lock_dir)],
                              uv_sync_env, site)
        rows.append(("sync, venv already current", noop_sync_e, noop_sync_u))
        rows.append(("envbuild --help", measure(args.runs, lambda: None, envbuild + ["--help"], env, site), None))
        packages = (lock_dir / "uv.lock").read_text().count("\n[[package]]\n") - 1
    table = render(rows, args.runs, packages, str(uv))
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n", encoding="utf-8")


def render(rows: list[tuple[str, Sample, Sample | None]], runs: int, packages: int, uv: str) -> str:
    version = subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {version}; "
        f"{time.strftime('%Y-%m-%d')}. Workload: {packages} locked packages. Medians of {runs} runs "
        "(cold-cache rows: up to 3).",
        "",
        "| case | envbuild s | uv s | envbuild − uv | ratio | envbuild peak MiB | uv peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ours, theirs in rows:
        if theirs is None:
            lines.append(f"| {name} | {ours.seconds:.3f} | | | | {ours.peak_mib:.0f} | |")
            continue
        lines.append(
            f"| {name} | {ours.seconds:.3f} | {theirs.seconds:.3f} | {ours.seconds - theirs.seconds:+.3f} | "
            f"{ours.seconds / theirs.seconds:.2f} | {ours.peak_mib:.0f} | {theirs.peak_mib:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
