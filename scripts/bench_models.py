#!/usr/bin/env python3
"""Model downloads on loopback only, side by side in one run: envbuild's download (streamed, hashed,
fsynced, landed in the store) against `curl -o` of the same file from the same server; a resume after a
dropped connection (bytes served counted); a second deployment's `envbuild fetch` of the same model
(no download: a hard link from the store); peak memory of a process downloading the file.

The file is generated (random bytes, so nothing compresses), `--size` MiB, default 512.

    python scripts/bench_models.py [--size 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envbuild.core.http.download import download  # noqa: E402
from tests.support.modelserver import ModelServer, Served  # noqa: E402

# The download runs in a process of its own, as curl does (the loopback server's threads would share this
# process's GIL); it prints the seconds download() took, without the interpreter's start-up.
CHILD = """
import sys, time
from pathlib import Path
from envbuild.core.http.download import download
started = time.perf_counter()
download(sys.argv[1], Path(sys.argv[2]), sha256=sys.argv[3], size=int(sys.argv[4]))
print(time.perf_counter() - started)
"""


def envbuild_download(url: str, store: Path, sha: str, size: int) -> tuple[float, float, float]:
    """(seconds inside download(), seconds of the whole process, peak RSS in MiB) via /usr/bin/time -v: its
    own fork keeps this process's memory out of the child's high-water mark."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", CHILD, url, str(store), sha, str(size)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    whole = time.perf_counter() - started
    peak = next(int(line.split(":")[1]) for line in done.stderr.splitlines() if "Maximum resident" in line)
    return float(done.stdout.split()[-1]), whole, peak / 1024


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="MiB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-models-", dir=os.environ.get("TMPDIR")) as scratch:
        work = Path(scratch)
        blob = work / "model.safetensors"
        digest = hashlib.sha256()
        with open(blob, "wb") as out:
            for _ in range(args.size):
                block = os.urandom(1024 * 1024)
                digest.update(block)
                out.write(block)
        sha = digest.hexdigest()
        with ModelServer() as server:
            url = server.add("/model.safetensors", Served(file=blob))
            rows = []
            curl, curl_sync, curl_same, ours, ours_whole, peaks = [], [], [], [], [], []
            for run in range(args.runs):  # interleaved: this shared host's speed drifts
                target = work / f"curl-{run}"
                curl.append(timed(["curl", "-sS", "-o", str(target), url]))
                target.unlink()
                curl_sync.append(timed(["sh", "-c", f"curl -sS -o {target} {url} && sync {target}"]))
                target.unlink()
                curl_same.append(timed(["sh", "-c", f"curl -sS -o {target} {url} && sha256sum {target} >/dev/null "
                                                    f"&& sync {target}"]))
                target.unlink()
                inside, whole, peak = envbuild_download(url, work / f"store-{run}", sha, size)
                ours.append(inside)
                ours_whole.append(whole)
                peaks.append(peak)
                shutil.rmtree(work / f"store-{run}")
            mib = size / 2**20
            c, cs, csame, o, ow = (statistics.median(x) for x in (curl, curl_sync, curl_same, ours, ours_whole))
            rows.append(("download vs `curl -o` (no hash, no fsync)", f"{mib / c:.0f} MiB/s", f"{mib / o:.0f} MiB/s",
                         f"{c / o:.2f}x"))
            rows.append(("download vs `curl -o && sync`", f"{mib / cs:.0f} MiB/s", f"{mib / o:.0f} MiB/s",
                         f"{cs / o:.2f}x (envbuild hashes and fsyncs)"))
            rows.append(("download vs `curl -o && sha256sum && sync` (the same work)", f"{mib / csame:.0f} MiB/s",
                         f"{mib / o:.0f} MiB/s", f"{csame / o:.2f}x"))
            rows.append(("… counting envbuild's process start-up", f"{mib / cs:.0f} MiB/s", f"{mib / ow:.0f} MiB/s",
                         f"{cs / ow:.2f}x vs curl -o && sync"))
            rows.append(("peak memory of the downloading process", "", f"{max(peaks):.0f} MiB RSS",
                         "target < 100 MiB"))

            drop = Served(file=blob, drop_after=size // 2, drops=1)
            server.sent.clear()
            drop_url = server.add("/dropped.safetensors", drop)
            fetched = download(drop_url, work / "store-drop", sha256=sha, size=size)
            served = server.sent["/dropped.safetensors"]
            rows.append(("resume after a drop at 50 %", f"{size:,} B file", f"{served:,} B served",
                         f"{served - size:+,} B beyond the file (downloaded {fetched.downloaded:,})"))

            cache = work / "cache"
            env = {**os.environ, "ENVBUILD_CACHE_DIR": str(cache)}
            times = []
            for name in ("first", "second"):
                project = work / name
                (project / "ComfyUI").mkdir(parents=True)
                (project / "envbuild.toml").write_text(textwrap.dedent(f"""\
                    [comfyui]
                    path = "ComfyUI"
                    [models.big]
                    url = "{url}"
                    sha256 = "{sha}"
                    size = {size}
                    folder = "checkpoints"
                    """))
                before = server.sent.get("/model.safetensors", 0)
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "envbuild", "-q", "fetch"], cwd=project, env=env, check=True)
                times.append((time.perf_counter() - started, server.sent.get("/model.safetensors", 0) - before))
            rows.append(("`envbuild fetch`, first deployment", f"{times[0][0]:.2f} s", f"{times[0][1]:,} B served", ""))
            rows.append(("`envbuild fetch`, second deployment (store)", f"{times[1][0]:.2f} s",
                         f"{times[1][1]:,} B served", "a hard link"))

    print(f"file: {args.size} MiB of random bytes, loopback, median of {args.runs} where repeated\n")
    print("| measurement | curl / before | envbuild | note |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
