"""`envbuild export`: a committed lock as a pip requirements file or a PEP 751 pylock.toml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from envbuild.cli.options import build_deployment, profile_options, profile_to_use
from envbuild.cli.output import say, show, warn


@click.command()
@profile_options
@click.option("--format", "fmt", type=click.Choice(["requirements", "pylock"]), required=True,
              help="requirements: pip-compatible, `--hash` on every line, for "
                   "`pip install --no-deps --require-hashes -r` (--no-deps: the file is the whole resolution, some "
                   "dependencies' requirements dropped on purpose). "
                   "It loses per-package indexes: the torch index is written once, globally, as "
                   "`--extra-index-url`, so under pip a package that exists on both indexes may come from either "
                   "(the hashes still pin the exact files). "
                   "pylock: PEP 751 `pylock.<profile>.toml`, every file with its URL, index and hash; it keeps "
                   "the routing but needs uv (`uv pip sync`) or another PEP 751 installer (recent pip reads it "
                   "only as an experimental feature).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write (`-` for stdout; never inside the lock folder). Default: "
                   "requirements-<profile>.txt or pylock.<profile>.toml in the current folder.")
@click.option("--force", is_flag=True, help="Write over an existing output file envbuild did not write.")
@click.option("--allow-unhashed", is_flag=True,
              help="Export even if the lock has files without a sha256 (those lines carry no hash, and "
                   "`pip install --require-hashes` will refuse them; for pylock, uv downloads them to hash them).")
@click.pass_context
def export(ctx: click.Context, /, fmt: str, output: Path | None, force: bool, allow_unhashed: bool,
           **flags: Any) -> None:
    """Export a committed lock for pip or a PEP 751 installer, without re-resolving (`uv export --frozen`).

    The lock must pass the same trust check as `sync` (current, audited): an edited lock is never
    exported, and nor is one with files lacking a sha256 unless --allow-unhashed.
    """
    from envbuild.env.export import check_output, default_filename, export_lock, write_export

    deployment = build_deployment(ctx, flags)
    profile = profile_to_use(ctx, deployment, flags)
    target = None if output == Path("-") else (output or Path(default_filename(profile.name, fmt)))
    if target is not None:
        check_output(Path.cwd() / target, fmt, deployment.lock_dir, force=force)  # before uv runs, not after
    result = export_lock(deployment, profile, fmt, allow_unhashed=allow_unhashed)
    if result.unhashed:
        warn(f"{profile.name}: {result.unhashed} file(s) in the lock have no sha256 "
             "(exported anyway: --allow-unhashed)")
    if target is None:
        show(result.text, nl=False)
        return
    write_export(result, (Path.cwd() / target).resolve(), deployment.lock_dir, force=force)
    say(ctx, f"{profile.name}: wrote {target} ({result.packages} packages, {fmt}) from "
             f"{deployment.display(deployment.folder(profile).uv_lock)}")
