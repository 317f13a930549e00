#!/usr/bin/env python3
"""Pinned custom nodes at scale, on loopback only: `fetch` of N pinned nodes from local git
repositories, and a no-op `lock` with them pinned against plain `uv lock` on the same lock folder.

The no-op target is the project's: envbuild adds at most max(10 %, 100 ms) to uv's own time. The
packages come from the test suite's loopback PyPI/PyTorch index; envbuild runs as the console script
of the environment running this script.

    python scripts/bench_nodes.py [--nodes 20] [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import install_envbuild, pair, run, within  # noqa: E402

from tests.support.catalogue import build_standard_catalogue  # noqa: E402
from tests.support.deploy import make_deployment  # noqa: E402
from tests.support.gitrepos import git_env, make_repo  # noqa: E402
from tests.support.index import IndexServer  # noqa: E402

REQUIREMENTS = ("einops", "six", "pyyaml", "requests", "filelock")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--node-add", action="store_true", help="only the `node add` row")
    parser.add_argument("--pypi", action="store_true", help="with --node-add: the shipped ComfyUI on the real PyPI")
    args = parser.parse_args()
    from uv import find_uv_bin

    uv = find_uv_bin()
    with tempfile.TemporaryDirectory(prefix="envbuild-nodes-bench-") as scratch, IndexServer() as server:
        tmp = Path(scratch)
        catalogue = build_standard_catalogue(server, tmp / "wheels")
        env = {k: v for k, v in git_env().items() if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV", "PYTHON"))}
        env.update(UV_CACHE_DIR=str(tmp / "uv-cache"), UV_PYTHON_DOWNLOADS="never", UV_PYTHON=sys.executable,
                   UV_DEFAULT_INDEX=catalogue.pypi_url, ENVBUILD_PYTORCH_INDEX=catalogue.pytorch_base,
                   UV_NO_PROGRESS="1", PIP_CONFIG_FILE=os.devnull, ENVBUILD_CACHE_DIR=str(tmp / "eb-cache"))
        # The console script of the running environment (bytecode cached after its first run); without
        # one, installed from this checkout as scripts/bench.py does (needs PyPI for the build backend).
        script = Path(sys.executable).parent / "envbuild"
        envbuild = str(script if script.exists() else install_envbuild(uv, tmp, env))
        if args.node_add:
            node_add_row(envbuild, uv, env, tmp, args.runs, pypi=args.pypi)
            return
        site = make_deployment(tmp / "site", profiles=("cu126",)).root
        pins = []
        for i in range(args.nodes):
            repo = tmp / "upstream" / f"node-{i:02d}"
            commit = make_repo(repo, {"__init__.py": "", "requirements.txt": f"{REQUIREMENTS[i % 5]}\n"})
            pins.append(f'[custom-nodes.node-{i:02d}]\ngit = "{repo.as_uri()}"\ncommit = "{commit}"\n')
        config = site / "envbuild.toml"
        config.write_text(config.read_text() + "\n" + "\n".join(pins), encoding="utf-8")

        if args.nodes:  # --nodes 0: the same deployment without pins, the baseline
            started = time.perf_counter()
            subprocess.run([envbuild, "-q", "fetch"], cwd=site, env=env, check=True)
            cold = time.perf_counter() - started
            warm = statistics.median(run([envbuild, "-q", "fetch"], env, site).seconds for _ in range(3))
            print(f"fetch of {args.nodes} pinned nodes from local repositories: {cold:.2f} s cold (cloned), "
                  f"{warm:.2f} s when all are in place")

        run([envbuild, "lock", "--profile", "cu126"], env, site)
        folder = site / "locks" / "cu126"
        run([uv, "lock"], env, folder)  # warm uv's cache for its own no-op
        ours, theirs = pair(args.runs, lambda: None, ([envbuild, "lock", "--profile", "cu126"], env, site),
                            ([uv, "lock"], env, folder))
        assert theirs is not None
        budget = max(0.10 * theirs.seconds, 0.100)
        print(f"no-op lock with {args.nodes} pinned nodes: envbuild {ours.seconds * 1000:.0f} ms, uv lock "
              f"{theirs.seconds * 1000:.0f} ms on the same locks/cu126 (target ≤ uv + {budget * 1000:.0f} ms): "
              f"{'met' if within(ours, theirs) else 'NOT met'}")


def node_add_row(envbuild: str, uv: str, env: dict[str, str], tmp: Path, runs: int, *, pypi: bool = False) -> None:
    """`node add` of one node against one `uv lock` of the deployment it leaves (its generated pyproject,
    locked afresh in a scratch project, warm cache): the issue's target is ≤ 1.1× uv."""
    import shutil

    profile = "cu130-pypi" if pypi else "cu126"
    if pypi:  # the shipped ComfyUI requirements against the real PyPI: what a user's `node add` waits for
        env = {k: v for k, v in env.items() if k != "UV_DEFAULT_INDEX"}
        template = make_deployment(tmp / "add-template", profiles=(profile,), manager=None,
                                   requirements=(ROOT / "deploy/ComfyUI/requirements.txt").read_text(),
                                   requires_python=">=3.11,<3.14").root
    else:
        template = make_deployment(tmp / "add-template", profiles=(profile,)).root
    subprocess.run([envbuild, "-q", "lock", "--profile", profile], cwd=template, env=env, check=True)
    repo = tmp / "upstream" / "node-added"
    make_repo(repo, {"__init__.py": "", "requirements.txt": "requests\nfilelock\n"})
    added = [0]

    def fresh_site() -> Path:
        added[0] += 1
        site = tmp / f"add-{added[0]}"
        shutil.copytree(template, site, symlinks=True)
        return site

    ours, theirs = [], []
    for _ in range(runs):
        site = fresh_site()
        ours.append(run([envbuild, "-q", "node", "add", repo.as_uri()], env, site))
        scratch = tmp / f"uv-add-{added[0]}"
        scratch.mkdir()
        shutil.copyfile(site / "locks" / profile / "pyproject.toml", scratch / "pyproject.toml")
        theirs.append(run([uv, "lock"], env, scratch))
    a, b = statistics.median(x.seconds for x in ours), statistics.median(x.seconds for x in theirs)
    where = "shipped ComfyUI, real PyPI" if pypi else "loopback index"
    print(f"node add of one node ({where}): envbuild {a:.3f} s, uv lock of the resulting pyproject {b:.3f} s, "
          f"ratio {a / b:.2f} (target ≤ 1.1): {'met' if a <= 1.1 * b else 'NOT met'} ({runs} runs, medians)")


if __name__ == "__main__":
    main()
