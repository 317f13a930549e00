#!/usr/bin/env python3
"""Image build times and sizes with real torch: `envbuild image --build` of the real-torch deployment.

Workload: tests/test_realtorch.py's deployment (the real ComfyUI requirements.txt, profile
cu130-pypi, torch 2.14.1 from PyPI's CUDA 13.0 build), locked through the loopback pull-through
mirror over this machine's local wheels (other projects relayed from PyPI, so this needs the
network), built with podman as the tests set it up (tests/support/container.py: local bookworm
base, uv from a one-file image, `--network host` so the build reaches the mirror).

Measured: a build with no layer cache (the images are removed first; uv's cache mount is cold on
the first run, warm on the next ones: run it twice with --scratch and --port to keep uv's cache keys,
which hold the mirror's URL), a rebuild after a node's code changes, a rebuild after a node needs
one more package (re-locked), and whether the torch layer was reused; the image's size against the
venv `envbuild sync` makes from the same lock. Needs ~25 GB free for podman's storage.

    python scripts/bench_image.py [--scratch DIR] [--port PORT] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import find_uv  # noqa: E402
from tests.support.container import CA_BUNDLE, setup_podman  # noqa: E402
from tests.support.deploy import Deployment, run_cli  # noqa: E402
from tests.support.pullthrough import LocalStore, PullThrough  # noqa: E402
from tests.test_realtorch import PROFILE, local_torch, python311, realtorch_env, realtorch_site  # noqa: E402


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def du_or_zero(path: Path) -> int:
    return du(path) if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", type=Path, help="work folder (default: a temporary one, deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the images (default: removed at the end)")
    parser.add_argument("--port", type=int, default=0, help="the mirror's port (the same as an earlier run: warm)")
    args = parser.parse_args()
    if local_torch(LocalStore()) is None or python311() is None:
        raise SystemExit("needs this machine's local torch wheels (/opt/pypi...) and a CPython 3.11")
    uv_bin = find_uv()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="envbuild-bench-image-"))
    scratch.mkdir(parents=True, exist_ok=True)
    podman = setup_podman(uv_bin, scratch)
    tag = "localhost/envbuild-bench:cu130-pypi"
    python = python311()
    assert python is not None
    with PullThrough(port=args.port) as mirror:
        print(f"mirror on port {mirror.port}", flush=True)
        site = realtorch_site(scratch) if not (scratch / "site").exists() else Deployment(scratch / "site")
        env = realtorch_env(scratch, scratch / "uv-cache", python, mirror.url, uv_bin)

        def cli(*argv: str, timeout: float = 3600) -> float:
            started = time.perf_counter()
            result = run_cli(list(argv), env=env, cwd=site.root, timeout=timeout)
            if result.returncode != 0:
                raise SystemExit(f"envbuild {' '.join(argv)} failed:\n{result.output[-4000:]}")
            return time.perf_counter() - started

        def build(*more: str) -> float:
            ca = [f"--ca={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
            return cli("-q", "image", "--profile", PROFILE, "-o", str(scratch / "ctx"), "--build", "--tag", tag,
                       "--base", podman.base_image, "--engine-arg=--pull=never", "--engine-arg=--network=host",
                       f"--engine-arg=--build-arg=UV_IMAGE={podman.uv_image}", *ca, *more)

        node = site.add_node("comfy-bench", "einops\n")  # (again, on a kept scratch folder: the same node)
        print(f"lock: {cli('lock', '--profile', PROFILE):.1f} s", flush=True)
        venv = scratch / "venv"
        print(f"sync: {cli('sync', '--profile', PROFILE, '--venv', str(venv)):.1f} s", flush=True)
        venv_bytes = du(venv)
        shutil.rmtree(venv)
        podman.run("rmi", "-f", tag)
        podman.run("image", "prune", "-f")  # no layer cache; uv's cache mount stays
        print(f"uv cache mount at start: {du_or_zero(Path('/var/tmp/buildah-cache')) / 1e9:.1f} GB", flush=True)
        print(f"build without layer cache: {build():.1f} s", flush=True)
        fresh = layers = podman.layers(tag)
        (node / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {'bench': 1}\n", encoding="utf-8")
        code = build()
        print(f"rebuild after a node code change: {code:.1f} s; layers before it kept: "
              f"{podman.layers(tag)[:-1] == fresh[:-1]}", flush=True)
        (node / "requirements.txt").write_text("einops\nsix\n", encoding="utf-8")
        relock = cli("lock", "--profile", PROFILE)
        requirement = build()
        after = podman.layers(tag)
        print(f"re-lock {relock:.1f} s; rebuild after a node requirement change: {requirement:.1f} s; "
              f"torch layer reused: {after[2] == fresh[2]}", flush=True)
        size = int(podman.run("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
        base = int(podman.run("image", "inspect", "--format", "{{.Size}}", podman.base_image).stdout.strip())
        print(f"image {size / 1e9:.2f} GB (base {base / 1e9:.2f} GB); venv {venv_bytes / 1e9:.2f} GB; "
              f"{len(layers)} layers", flush=True)
    if not args.keep:
        podman.run("rmi", "-f", tag)
        podman.run("image", "prune", "-f")
    if args.scratch is None:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
