"""`envbuild model ...`: model files pinned by sha256 — add, list, remove, verify."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from envbuild.cli.options import build_deployment
from envbuild.cli.output import say, show

if TYPE_CHECKING:
    from envbuild.deploy.deployment import Deployment
    from envbuild.env.models import ModelFetch


@click.group()
def model() -> None:
    """Model files pinned in envbuild.toml ([models.NAME]: url, sha256, size, folder).

    \b
    Files land in <base-directory or ComfyUI checkout>/models/<folder>, as hard links to one copy per
    machine in envbuild's cache (ENVBUILD_CACHE_DIR); a file is placed only after its sha256 matched.
    Tokens come from the environment: HF_TOKEN (huggingface.co), CIVITAI_API_TOKEN (civitai.com).
    `envbuild fetch` restores every pinned model.
    """


@model.command("add")
@click.argument("url")
@click.option("--folder", metavar="FOLDER", help="ComfyUI's model folder: checkpoints, loras, vae, controlnet, "
                                                 "text_encoders, ... (default: one named in the URL, else "
                                                 "checkpoints).")
@click.option("--name", help="The pin's name (default: the file name's stem).")
@click.option("--filename", help="The file's name in the folder (default: the server's, else the URL's).")
@click.option("--sha256", "sha256", metavar="HEX", help="The file's sha256, enforced: other bytes are refused.")
@click.pass_context
def add(ctx: click.Context, url: str, folder: str | None, name: str | None, filename: str | None,
        sha256: str | None) -> None:
    """Download URL, hash it, place it under models/FOLDER and pin it."""
    from envbuild.cli.progress import DownloadProgress
    from envbuild.env.models import add_model

    deployment = build_deployment(ctx)
    with DownloadProgress(ctx) as progress:
        added = add_model(deployment, url, folder=folder, name=name, sha256=sha256, filename=filename,
                          on_progress=progress.update)
    _said_fetch(ctx, added.fetch)
    if added.folder_from != "given":
        why = "named in the URL" if added.folder_from == "url" else "the default"
        say(ctx, f"model {added.pin.name}: folder {added.pin.folder} ({why}; `--folder` names another)")
    if not sha256 and added.fetch.downloaded:
        say(ctx, f"model {added.pin.name}: sha256 {added.pin.sha256} computed by envbuild from the bytes it "
                 "downloaded (compare it with the publisher's, if they give one)")
    for line in added.config_lines:
        say(ctx, line)


@model.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (for scripts).")
@click.option("--hash", "full_hash", is_flag=True, help="Re-hash every file (default: size, and the link to the "
                                                        "store).")
@click.pass_context
def list_models(ctx: click.Context, as_json: bool, full_hash: bool) -> None:
    """Every pinned model: ok, missing or modified."""
    from envbuild.env.models import model_statuses

    deployment = build_deployment(ctx)
    statuses = model_statuses(deployment, full_hash=full_hash)
    if as_json:
        import json

        show(json.dumps({"models": [s.as_json(deployment) for s in statuses]}, indent=2))
        return
    if not statuses:
        say(ctx, "no models pinned (`envbuild model add URL` pins one)")
        return
    for status in statuses:
        detail = f" ({status.detail})" if status.detail else ""
        show(f"{status.pin.name}: {status.state}{detail}  {deployment.display(status.path)}")


@model.command("remove")
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, name: str) -> None:
    """Unpin NAME; its file is deleted only when it is the pinned one envbuild placed."""
    from envbuild.env.models import remove_model

    for line in remove_model(build_deployment(ctx), name):
        say(ctx, line)


@model.command("verify")
@click.pass_context
def verify(ctx: click.Context) -> None:
    """Re-hash every pinned model file in full; exit 1 when one is missing or modified."""
    from envbuild.core.errors import CheckFailed
    from envbuild.env.models import model_statuses

    deployment = build_deployment(ctx)
    statuses = model_statuses(deployment, full_hash=True)
    for status in statuses:
        detail = f" ({status.detail})" if status.detail else ""
        show(f"{status.pin.name}: {status.state}{detail}  {deployment.display(status.path)}")
    bad = [s for s in statuses if s.state != "ok"]
    if bad:
        raise CheckFailed(f"{len(bad)} of {len(statuses)} model(s) not as pinned",
                          hint="`envbuild fetch` restores missing ones; a modified file: move it away, then fetch")


def fetch_pinned_models(ctx: click.Context, deployment: Deployment, *, jobs: int, force: bool) -> None:
    """The models part of `envbuild fetch`: every pin placed and verified, several downloads at once."""
    from envbuild.cli.progress import DownloadProgress
    from envbuild.env.models import fetch_models, raise_failures

    with DownloadProgress(ctx) as progress:
        results = fetch_models(deployment, jobs=jobs, on_progress=progress.update, force=force)
    for result in results:
        _said_fetch(ctx, result)
    raise_failures(results)


def _said_fetch(ctx: click.Context, result: ModelFetch) -> None:
    from envbuild.core.units import human_size

    where = result.pin.relative()
    if result.action in ("failed", "modified"):
        return
    if result.action == "present":
        say(ctx, f"model {result.pin.name}: models/{where} already there, verified")
        return
    how = result.action
    if "copied" in how:
        how += " (the models folder is on another file system than envbuild's cache: a copy, not a link)"
    resumed = f", resumed at {human_size(result.resumed_from)}" if result.resumed_from else ""
    got = f" ({human_size(result.downloaded)} downloaded{resumed})" if result.downloaded else " (from the store)"
    say(ctx, f"model {result.pin.name}: models/{where} {how}{got}, sha256 {result.pin.sha256[:12]}… verified")
