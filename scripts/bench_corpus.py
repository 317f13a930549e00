#!/usr/bin/env python3
"""The real-node corpus at scale: `envbuild lock` of today's ComfyUI + its pip Manager + the corpus's custom
nodes (tests/data/real_nodes, the four that cannot lock left out with `[nodes] exclude`, as in
tests/test_network_real_nodes.py) against plain `uv lock` of the same generated pyproject, side by side.

Issue 24's target: a fresh lock of the corpus deployment (warm uv cache, no lock yet) takes ≤ 1.1× plain
`uv lock` of the same generated pyproject copied into a scratch project of its own. Everything comes from
the real PyPI (the -pypi profiles), so this needs the network; envbuild and uv run alternately (medians of
--runs pairs), so drift of the machine or of PyPI hits both. envbuild runs as the console script of the
environment running this script (or, without one, installed from this checkout as scripts/bench.py does).

A second row per profile runs both sides offline (UV_OFFLINE=1, everything cached): without PyPI's
round trips it shows envbuild's own work around uv's resolution.

    python scripts/bench_corpus.py [--runs 5] [--profiles cu132-pypi,cu130-pypi] [--markdown docs/benchmarks.md]

With --markdown, the table replaces what stands between the file's `<!-- bench-corpus:start -->` and
`<!-- bench-corpus:end -->` lines (appended as a new section when the file has none).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import Sample, install_envbuild, pair, run  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "real_nodes"
SHIPPED = ROOT / "deploy" / "ComfyUI"
# Refused before uv (transformers against ComfyUI's >=4.50.3), or unlockable by uv (LayerStyle's own
# fairscale pins; taichi has no Linux aarch64 wheel): see tests/test_network_real_nodes.py.
EXCLUDED = ("ComfyUI-Florence2", "was-node-suite-comfyui", "ComfyUI_LayerStyle", "ComfyUI-Frame-Interpolation")
TARGET = 1.10
START, END = "<!-- bench-corpus:start -->", "<!-- bench-corpus:end -->"


def make_site(root: Path, profiles: list[str]) -> Path:
    site = root / "site"
    (site / "ComfyUI").mkdir(parents=True)
    for name in ("requirements.txt", "manager_requirements.txt"):
        shutil.copyfile(SHIPPED / name, site / "ComfyUI" / name)
    (site / "ComfyUI" / "main.py").write_text("print('ComfyUI')\n", encoding="utf-8")
    shutil.copytree(CORPUS, site / "data" / "custom_nodes", ignore=shutil.ignore_patterns("SOURCES.md"))
    listed = ", ".join(f'"{p}"' for p in profiles)
    excluded = ", ".join(f'"{n}"' for n in EXCLUDED)
    (site / "envbuild.toml").write_text(
        '[comfyui]\npath = "ComfyUI"\nbase-directory = "data"\n\n'
        f'[lock]\nrequires-python = ">=3.11,<3.14"\nprofiles = [{listed}]\n\n[nodes]\nexclude = [{excluded}]\n',
        encoding="utf-8")
    return site


def packages(uv_lock: Path) -> int:
    import tomllib  # Python 3.11+, as torch 2.15 needs

    return len(tomllib.loads(uv_lock.read_text(encoding="utf-8"))["package"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profiles", default="cu132-pypi,cu130-pypi")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    from uv import find_uv_bin

    uv = find_uv_bin()
    with tempfile.TemporaryDirectory(prefix="envbuild-corpus-bench-") as scratch:
        tmp = Path(scratch)
        # A user's shell: none of this machine's uv/pip/Python settings; the real PyPI.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV", "PYTHON"))}
        env.update(UV_CACHE_DIR=str(tmp / "uv-cache"), UV_PYTHON_DOWNLOADS="never", UV_PYTHON=sys.executable,
                   UV_NO_PROGRESS="1", PIP_CONFIG_FILE=os.devnull, ENVBUILD_CACHE_DIR=str(tmp / "eb-cache"),
                   XDG_CONFIG_HOME=str(tmp / "xdg-config"))
        script = Path(sys.executable).parent / "envbuild"
        envbuild = str(script if script.exists() else install_envbuild(uv, tmp, env))
        site = make_site(tmp, profiles)
        nodes = sum(1 for p in CORPUS.iterdir() if p.is_dir()) - len(EXCLUDED)
        rows = []
        for profile in profiles:
            folder, plain = site / "locks" / profile, tmp / f"plain-{profile}"
            run([envbuild, "lock", "--profile", profile], env, site)  # warms uv's cache (and envbuild's reads)
            pyproject = (folder / "pyproject.toml").read_text(encoding="utf-8")
            count = packages(folder / "uv.lock")

            def fresh(folder: Path = folder, plain: Path = plain, pyproject: str = pyproject) -> None:
                """No lock on either side: envbuild's lock folder gone, uv's scratch project holds only the
                generated pyproject."""
                shutil.rmtree(folder, ignore_errors=True)
                shutil.rmtree(plain, ignore_errors=True)
                plain.mkdir()
                (plain / "pyproject.toml").write_text(pyproject, encoding="utf-8")

            fresh()
            run([uv, "lock"], env, plain)  # uv's own warm-up on its project
            ours, theirs = pair(args.runs, fresh, ([envbuild, "lock", "--profile", profile], env, site),
                                ([uv, "lock"], env, plain))
            assert theirs is not None
            rows.append((f"{profile}: fresh lock, warm cache", count, ours, theirs, True))
            # The same with uv offline (UV_OFFLINE=1 on both sides, everything cached): no revalidation of
            # PyPI's pages, so what is left is uv's resolution and envbuild's own work around it.
            offline = dict(env, UV_OFFLINE="1")
            ours, theirs = pair(args.runs, fresh, ([envbuild, "lock", "--profile", profile], offline, site),
                                ([uv, "lock"], offline, plain))
            assert theirs is not None
            rows.append((f"{profile}: fresh lock, warm cache, offline", count, ours, theirs, False))
        table = render(rows, args.runs, nodes, uv)
        print(table)
        if args.markdown is not None:
            write_markdown(args.markdown, table)


def render(rows: list[tuple[str, int, Sample, Sample, bool]], runs: int, nodes: int, uv: str) -> str:
    version = subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}, Python "
        f"{platform.python_version()}, {version}; run {time.strftime('%Y-%m-%d')}. Workload: today's ComfyUI + "
        f"its pip Manager + {nodes} of the corpus's 28 custom nodes, everything from PyPI. Medians of {runs} runs.",
        "",
        "| case | packages | envbuild s | uv lock s | ratio | envbuild peak MiB | uv peak MiB | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for case, count, ours, theirs, targeted in rows:
        ratio = ours.seconds / theirs.seconds
        target, met = (f"≤ {TARGET:.1f}× uv", "yes" if ratio <= TARGET else "**no**") if targeted else ("", "")
        lines.append(f"| {case} | {count} | {ours.seconds:.3f} | {theirs.seconds:.3f} | {ratio:.2f} | "
                     f"{ours.peak_mib:.0f} | {theirs.peak_mib:.0f} | {target} | {met} |")
    return "\n".join(lines)


def write_markdown(path: Path, table: str) -> None:
    """Between the markers when the file has them; else a new section at the end."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if START in old and END in old:
        head, rest = old.split(START, 1)
        text = f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}"
    else:
        text = (f"{old.rstrip()}\n\n## The real-node corpus: `envbuild lock` vs plain `uv lock`\n\n"
                f"Produced by `python scripts/bench_corpus.py --markdown docs/benchmarks.md`.\n\n"
                f"{START}\n{table}\n{END}\n")
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
