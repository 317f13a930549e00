"""`envbuild generations`: the environments kept beside the venv path, and which one it points at."""

from __future__ import annotations

from pathlib import Path

import click

from envbuild.cli.options import build_deployment, resolve_venv
from envbuild.cli.output import show
from envbuild.core.units import human_size


@click.command()
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="The venv path (default: .venv beside the ComfyUI checkout, else ./.venv).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def generations(ctx: click.Context, venv: Path | None, as_json: bool) -> None:
    """List the venv's generations: profile, lock digest, created, current/previous/in use, size.

    \b
    `sync` installs each lock into a generation of its own and switches the venv path (a symlink)
    to it; `envbuild rollback` switches back. Beyond [generations] keep (default 3) the oldest are
    removed, never the current or previous one, nor one a running ComfyUI uses.
    """
    import json

    from envbuild.env.switch import list_rows

    deployment = build_deployment(ctx)
    target = resolve_venv(deployment, venv)
    from envbuild.env.generations import generations_dir, total_on_disk

    rows = list_rows(target)
    together = total_on_disk([generations_dir(target) / row.name for row in rows])
    if as_json:
        show(json.dumps({"venv": str(target), "generations": [r.to_dict() for r in rows], "total_size": together},
                        indent=2))
        return
    if not rows:
        show(f"{target}: no generations yet (`envbuild sync` makes them)")
        return
    show(f"{target}:")
    for row in rows:
        marks = [m for m, on in (("current", row.current), ("previous", row.previous), ("in use", row.in_use),
                                 ("incomplete", not row.complete)) if on]
        what = f"profile {row.profile}, lock {row.digest}" if row.profile else "adopted (made before generations)"
        created = (row.created or "?")[:19].replace("T", " ")
        show(f"  {'*' if row.current else ' '} {row.name}  {what}, created {created} UTC, {human_size(row.size)}"
             + (f"  [{', '.join(marks)}]" if marks else ""))
    if len(rows) > 1:
        show(f"  together: {human_size(together)} on disk (a file the generations share, linked from uv's cache, "
             "counted once; the sizes above do not add up)")
