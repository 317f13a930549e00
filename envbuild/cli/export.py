"""`envbuild export`: a committed lock as a pip requirements file or a PEP 751 pylock.toml."""

from __future__ import annotations

from pathlib import Path

import click

from envbuild.cli.common import load_config, say, warn


@click.command()
@click.option("--profile", "profile_name", metavar="NAME", required=True, help="Which committed lock to export.")
@click.option("--format", "fmt", type=click.Choice(["requirements", "pylock"]), required=True,
              help="requirements: pip-compatible, `--hash` on every line, for `pip install --require-hashes -r`. "
                   "It loses per-package indexes: the torch index is written once, globally, as "
                   "`--extra-index-url`, so under pip a package that exists on both indexes may come from either "
                   "(the hashes still pin the exact files). "
                   "pylock: PEP 751 `pylock.<profile>.toml`, every file with its URL, index and hash; it keeps "
                   "the routing but needs uv (`uv pip sync`) or another PEP 751 installer (recent pip reads it "
                   "only as an experimental feature).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write (`-` for stdout). Default: requirements-<profile>.txt or "
                   "pylock.<profile>.toml in the current folder.")
@click.option("--lock-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the lock folders live.")
@click.option("--allow-unhashed", is_flag=True,
              help="Export even if the lock has files without a sha256 (those lines carry no hash, and "
                   "`pip install --require-hashes` will refuse them; for pylock, uv downloads them to hash them).")
@click.pass_context
def export(ctx: click.Context, profile_name: str, fmt: str, output: Path | None, lock_dir: Path | None,
           allow_unhashed: bool) -> None:
    """Export a committed lock for pip or a PEP 751 installer, without re-resolving (`uv export --frozen`).

    The lock is audited first (as `envbuild verify`): an edited lock is never exported, and nor is
    one with files lacking a sha256 unless --allow-unhashed.
    """
    from envbuild.actions import catalogue_for
    from envbuild.export import check_output_name, default_filename, export_lock, write_export
    from envbuild.lockdir import LockFolder

    config = load_config(ctx, lock_dir=lock_dir)
    profile = catalogue_for(config).get(profile_name)
    target = None if output == Path("-") else (output or Path(default_filename(profile.name, fmt)))
    if target is not None:
        check_output_name(target, fmt)  # before uv runs, not after
    folder = LockFolder(config.lock_dir, profile.name)
    result = export_lock(folder, profile, fmt, shown_as=config.display(folder.uv_lock), allow_unhashed=allow_unhashed)
    if result.unhashed:
        warn(f"{profile.name}: {result.unhashed} file(s) in the lock have no sha256 "
             "(exported anyway: --allow-unhashed)")
    if target is None:
        click.echo(result.text, nl=False)
        return
    write_export(result, (Path.cwd() / target).resolve())
    say(ctx, f"{profile.name}: wrote {target} ({result.packages} packages, {fmt}) from "
             f"{config.display(folder.uv_lock)}")
