"""`envbuild image`: an OCI build context (and, with --build, the image) from a committed lock."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.options import build_deployment, profile_options, profile_to_use
from envbuild.cli.output import say, show, warn

if TYPE_CHECKING:
    from envbuild.deploy.deployment import Deployment
    from envbuild.torch.profile import TorchProfile


@click.command()
@profile_options
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="The build context folder (replaced whole). Default: build/image-<profile> in the deployment.")
@click.option("--base", metavar="IMAGE",
              help="The default of the BASE_IMAGE build argument (default: python:<the lock's Python>-slim).")
@click.option("--uv-image", metavar="IMAGE",
              help="The default of the UV_IMAGE build argument, the image uv is copied from (default: "
                   "ghcr.io/astral-sh/uv:<this uv's version>): a mirror of it where ghcr.io is not reachable.")
@click.option("--build", is_flag=True, help="Build the image with podman, docker or buildah (the first found).")
@click.option("--tag", metavar="TAG",
              help="The image's tag with --build (default: localhost/envbuild-comfyui:<profile>).")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path),
              help="With --build: a CA bundle for TLS during the install step, passed as the build secret `ca` "
                   "(never copied into a layer). Default: $SSL_CERT_FILE when set.")
@click.option("--engine-arg", "engine_args", multiple=True, metavar="ARG",
              help="With --build: one more argument for the engine's build (repeatable), e.g. "
                   "--engine-arg=--network=host --engine-arg=--build-arg=BASE_IMAGE=...")
@click.pass_context
def image(ctx: click.Context, /, output: Path | None, base: str | None, uv_image: str | None, build: bool,
          tag: str | None,
          ca: Path | None, engine_args: tuple[str, ...], **flags: Any) -> None:
    """Write an OCI build context for a profile, installed from its committed lock.

    \b
    The context holds a Containerfile (also a valid Dockerfile), locks/<profile>/, ComfyUI (copied
    from the checkout, or fetched by git at the commit the lock records when envbuild.toml pins it
    with git/ref), the custom nodes and an entrypoint that starts ComfyUI as `envbuild run` does
    (torch guard included). Nothing of this machine: no credentials, absolute paths or caches.

    \b
    The lock must pass the same trust check as `sync`. The image installs with `uv sync --locked`
    in build stages; the runtime stage runs as a non-root user, listens on [comfyui] port (8188),
    keeps models/input/output/user on the volume /data (--base-directory).
    """
    from envbuild.env.export import export_lock
    from envbuild.image.context import write_context
    from envbuild.uv.command import checked_uv

    deployment = build_deployment(ctx, flags)
    profile = profile_to_use(ctx, deployment, flags)
    pylock = export_lock(deployment, profile, "pylock")  # the trust check (as `sync`), then uv's export
    _, uv_version = checked_uv(deployment.env)
    target = (Path.cwd() / output) if output else deployment.config.project_dir / "build" / f"image-{profile.name}"
    written = write_context(deployment, profile, target.resolve(), base=base, uv_version=str(uv_version),
                            torch_pylock=pylock.text, uv_image=uv_image)
    for warning in written.warnings:
        warn(warning)
    say(ctx, f"{profile.name}: wrote the build context {deployment.display(written.folder)} (base "
             f"{written.base_image}; torch layer: {len(written.torch_layer)} packages; nodes: "
             f"{', '.join(written.nodes) or 'none'})")
    if not build:
        say(ctx, f"build it with: podman build -t {tag or 'IMAGE'} {deployment.display(written.folder)}")
        return
    from envbuild.core.units import human_size
    from envbuild.image.build import build_image, default_tag
    from envbuild.uv.command import own_index_env

    given_ca = ca or (Path(deployment.env["SSL_CERT_FILE"]) if deployment.env.get("SSL_CERT_FILE") else None)
    built = build_image(written.folder, tag or default_tag(profile.name), deployment.env, ca=given_ca,
                        extra=engine_args, drop=own_index_env(deployment.folder(profile)),
                        mirror_rules=_install_mirror(deployment, profile), stream=not ctx.obj.get("quiet"))
    say(ctx, f"{profile.name}: built {built.tag} with {built.engine} in {built.seconds:.1f} s")
    show(f"{built.image_id} {human_size(built.size)}")


def _install_mirror(deployment: Deployment, profile: TorchProfile) -> list[tuple[str, str]]:
    """A mirror in mode `install` (environment, per-user file, [mirrors]): the build fetches through it."""
    if not deployment.mirrors.installs_through:
        return []
    from envbuild.pkgs.uvlock import read_uv_lock
    from envbuild.settings.mirrors import install_rules

    lock = read_uv_lock(deployment.folder(profile).uv_lock)
    return install_rules(lock, deployment.mirrors, deployment.pytorch_base)
