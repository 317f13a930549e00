"""`envbuild merge`: the merged requirement set of a profile, with provenance."""

from __future__ import annotations

from typing import Any

import click

from envbuild.cli.common import config_options, load_config, profile_options, warn


@click.command()
@profile_options
@config_options
@click.option("--explain", is_flag=True, help="Show, for every package, which file and line asked for it.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def merge(ctx: click.Context, /, profile_name: str | None, cuda: str | None, explain: bool, as_json: bool,
          **flags: Any) -> None:
    """Print the merged requirement set for a profile (nothing is written, uv does not run)."""
    import json

    from envbuild.actions import catalogue_for, input_warnings, select_profile
    from envbuild.inputs import merge_inputs

    config = load_config(ctx, **flags)
    profile = select_profile(catalogue_for(config), config, profile=profile_name, cuda=cuda)
    merged = merge_inputs(config, profile)
    for warning in input_warnings(merged):
        warn(warning)
    if as_json:
        click.echo(json.dumps([
            {"requirement": r.pep508(), "origins": [
                {"path": o.origin.path, "line": o.origin.line, "source": o.origin.source, "text": o.text}
                for o in r.origins]}
            for r in merged.result.requirements], indent=2))
        return
    for requirement in merged.result.requirements:
        click.echo(requirement.pep508())
        if explain:
            for item in requirement.origins:
                click.echo(f"    {item.text:<30} {item.origin}")
