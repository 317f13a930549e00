"""`envbuild image --build`: the context built with podman, docker or buildah, whichever is present.

Credentials never become build arguments (those are recorded in the image's history): the
UV_INDEX_* variables and uv's index settings of this environment go into a temporary secret file
outside the context (`uv-env`), the CA bundle is the secret `ca`; both exist only while a RUN step
of a build stage runs.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from envbuild.core import runner
from envbuild.core.errors import CommandFailed, EnvbuildError, UsageError
from envbuild.uv import names as uv_names

ENGINES = ("podman", "docker", "buildah")
# What the build's uv takes from this environment: index credentials and index settings.
_UV_SECRET_PREFIXES = uv_names.SECRET_PREFIXES
_UV_SECRET_NAMES = uv_names.SECRET_NAMES


class ImageBuildError(EnvbuildError):
    """The container build failed, mostly in an install step (exit 6, as a failed `uv sync`)."""

    exit_code = 6


@dataclass(frozen=True)
class BuiltImage:
    engine: str
    image_id: str
    size: int | None  # bytes, as the engine reports the image
    tag: str
    seconds: float


def find_engine(env: Mapping[str, str]) -> tuple[str, str]:
    """(name, path) of the first of podman, docker, buildah on PATH."""
    for name in ENGINES:
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return name, found
    raise UsageError("no container engine found: --build needs podman, docker or buildah on PATH",
                     hint="install one (e.g. `apt-get install podman`), or build the context yourself")


def uv_secret_text(env: Mapping[str, str], drop: Sequence[str] = ()) -> str:
    """KEY='value' lines of uv's index settings and credentials, for `. /run/secrets/uv-env` in sh.
    `drop`: settings the lock must not see (a lock that names its own default index)."""
    keys = sorted(k for k in env if env[k] and k not in drop
                  and (k.startswith(_UV_SECRET_PREFIXES) or k in _UV_SECRET_NAMES))
    return "".join(f"{key}='{env[key].replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'\n" for key in keys)


def build_argv(engine: str, path: str, context: Path, tag: str, iidfile: Path, *, secrets: Mapping[str, Path],
               extra: Sequence[str]) -> list[str]:
    verb = ["build"] if engine != "buildah" else ["build", "--layers"]
    argv = [path, *verb, "-f", str(context / "Containerfile"), "-t", tag, "--iidfile", str(iidfile)]
    for name, source in sorted(secrets.items()):
        argv += ["--secret", f"id={name},src={source}"]
    return [*argv, *extra, str(context)]


def mirror_secret_text(rules: Sequence[tuple[str, str]]) -> str:
    """The `mirror` secret: canonical prefix, a tab, mirror prefix (mirrors.install_rules), one per line."""
    return "".join(f"{old}\t{new}\n" for old, new in rules)


def build_image(context: Path, tag: str, env: Mapping[str, str], *, ca: Path | None, extra: Sequence[str] = (),
                drop: Sequence[str] = (), mirror_rules: Sequence[tuple[str, str]] = (),
                stream: bool = True) -> BuiltImage:
    import time

    engine, path = find_engine(env)
    if ca is not None and not ca.is_file():
        raise UsageError(f"--ca {ca}: no such file", hint="a PEM bundle, e.g. /etc/ssl/certs/ca-certificates.crt")
    child_env = dict(env)
    if engine == "docker":
        child_env["DOCKER_BUILDKIT"] = "1"  # secrets and cache mounts need BuildKit
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="envbuild-image-") as scratch:
        iidfile = Path(scratch) / "iid"
        secrets: dict[str, Path] = {"ca": ca} if ca is not None else {}
        for name, text in (("uv-env", uv_secret_text(env, drop)), ("mirror", mirror_secret_text(mirror_rules))):
            if text:
                secrets[name] = Path(scratch) / name
                secrets[name].touch(mode=0o600)
                secrets[name].write_text(text, encoding="utf-8")
        argv = build_argv(engine, path, context, tag, iidfile, secrets=secrets, extra=extra)
        try:
            runner.run(argv, env=child_env, capture=not stream)
        except CommandFailed as exc:
            raise ImageBuildError(f"{engine} build failed (status {exc.returncode})"
                                  + (f":\n{exc.output_tail}" if not stream else " (its output is above)"),
                                  hint=_build_hint(exc.output_tail)) from None
        image_id = iidfile.read_text(encoding="utf-8").strip()
    seconds = time.perf_counter() - started
    return BuiltImage(engine, image_id, image_size(engine, path, image_id, child_env), tag, seconds)


def image_size(engine: str, path: str, image_id: str, env: Mapping[str, str]) -> int | None:
    """The image's size as the engine reports it (None when it does not say)."""
    if engine == "buildah":
        return None  # buildah has no image size field; `podman image inspect` reads its store
    proc = runner.run([path, "image", "inspect", "--format", "{{.Size}}", image_id], env=env, check=False)
    text = proc.stdout.strip()
    return int(text) if proc.returncode == 0 and text.isdigit() else None


def default_tag(profile: str) -> str:
    return f"localhost/envbuild-comfyui:{profile.replace('+', '-')}"


def _build_hint(output: str) -> str:
    """A pull that failed names the build argument that sets the image (a registry this machine cannot
    reach is the usual cause behind a firewall); anything else: the exact command with -v."""
    pulls = {"UV_IMAGE": ("astral-sh/uv", "--uv-image IMAGE"), "GIT_IMAGE": ("alpine/git", "--engine-arg="
                                                                             "--build-arg=GIT_IMAGE=IMAGE"),
             "BASE_IMAGE": ("python:", "--base IMAGE")}
    lowered = output.lower()
    if any(word in lowered for word in ("pull", "manifest", "registry", "resolve image", "name unknown")):
        named = [f"{arg} ({flag})" for arg, (needle, flag) in pulls.items() if needle in output]
        if named:
            return (f"an image the build pulls could not be had: set {', '.join(named)} to a copy on a registry "
                    "this machine reaches; rerun with -v to see the exact command")
    return "rerun with -v to see the exact command"

