"""podman for the image tests, set up as issue 18 measured it on Debian bookworm machines.

Debian's podman with runc (crun fails on the hybrid cgroup setup of these machines), ulimits the
kernel accepts, and no registry: the base image is a minimal Debian made by mmdebstrap and
imported, and uv comes from a one-file image of the uv binary the tests drive. Anything that
cannot be had makes the caller skip, with the reason.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

BASE_IMAGE = "localhost/envbuild-test-base:bookworm"
UV_IMAGE = "localhost/envbuild-test-uv:latest"
PACKAGES = ("podman", "buildah", "runc", "mmdebstrap")
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class Unavailable(Exception):
    """Why podman cannot build and run containers here (the test skips with this)."""


@dataclass(frozen=True)
class Podman:
    path: str
    base_image: str
    uv_image: str

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.path, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def layers(self, image: str) -> list[str]:
        out = self.run("image", "inspect", "--format", "{{range .RootFS.Layers}}{{.}} {{end}}", image)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()


def _sh(argv: list[str], what: str, timeout: float = 900) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise Unavailable(f"{what} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-400:]}")
    return proc.stdout


def _install_packages() -> None:
    missing = [name for name in PACKAGES if shutil.which(name) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(f"{', '.join(missing)} not installed, and not root on a Debian-like system to install them")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise Unavailable(f"`{' '.join(argv)}` failed: {proc.stderr.strip()[-400:]}")


def _configure() -> None:
    """runc, and a nofile limit this machine grants (podman's default 1048576 is refused)."""
    if CONTAINERS_CONF.exists() or os.geteuid() != 0:
        return
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = hard if hard != resource.RLIM_INFINITY else 1048576
    CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
    CONTAINERS_CONF.write_text(
        "# Written by envbuild's image tests (tests/support/container.py)\n"
        f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]\n\n'
        '[engine]\nruntime = "runc"\n', encoding="utf-8")


def _image_exists(podman: str, name: str) -> bool:
    return subprocess.run([podman, "image", "exists", name], capture_output=True).returncode == 0


def _base_image(podman: str, scratch: Path) -> None:
    if _image_exists(podman, BASE_IMAGE):
        return
    tar = scratch / "base.tar"
    _sh(["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm",
         str(tar)], "mmdebstrap")
    _sh([podman, "import", str(tar), BASE_IMAGE], "podman import of the base")
    tar.unlink()


def _uv_image(podman: str, uv_bin: Path, scratch: Path) -> None:
    """A one-file image with /uv, standing in for ghcr.io/astral-sh/uv (no registry here)."""
    tar = scratch / "uv.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(uv_bin, arcname="uv")
    _sh([podman, "import", str(tar), UV_IMAGE], "podman import of uv")
    tar.unlink()


def setup_podman(uv_bin: Path, scratch: Path) -> Podman:
    """Once per machine at a time: pytest's workers each ask, the first one installs and imports."""
    from envbuild.core.fsio import exclusive_lock

    with exclusive_lock(Path(tempfile.gettempdir()) / "envbuild-podman-setup.lock", timeout=1800):
        _install_packages()
        podman = shutil.which("podman")
        if podman is None:
            raise Unavailable("podman is not on PATH")
        _configure()
        _base_image(podman, scratch)
        _uv_image(podman, uv_bin, scratch)
    _sh([podman, "run", "--rm", "--network", "none", BASE_IMAGE, "python3", "-c", "print('ok')"],
        "podman run of the base image", timeout=120)
    return Podman(podman, BASE_IMAGE, UV_IMAGE)
