"""`envbuild profiles`: the torch profiles a deployment can lock."""

from __future__ import annotations

import click

from envbuild.cli.common import load_config


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def profiles(ctx: click.Context, as_json: bool) -> None:
    """List the torch profiles (built-in and the deployment's own profiles/)."""
    import json

    from envbuild.actions import catalogue_for

    catalogue = catalogue_for(load_config(ctx))
    rows = []
    for name in catalogue.names():
        p = catalogue.get(name)
        torch = next((str(x.specifier) for x in p.packages if x.name == "torch"), "")
        rows.append({"name": p.name, "accelerator": p.accelerator, "version": p.accelerator_version,
                     "channel": p.channel, "index": p.index_url, "torch": torch, "description": p.description})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    widths = [max(len(str(r[k] or "")) for r in rows) for k in ("name", "accelerator", "version", "torch")]
    for r in rows:
        cells = [str(r[k] or "-").ljust(w) for k, w in zip(("name", "accelerator", "version", "torch"), widths, strict=True)]
        click.echo(f"{'  '.join(cells)}  {r['description']}")
