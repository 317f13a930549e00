"""`envbuild merge`: the merged requirement set of a profile, with provenance."""

from __future__ import annotations

from typing import Any

import click

from envbuild.cli.options import build_deployment, input_options, profile_options, profile_to_lock
from envbuild.cli.output import show, warn


@click.command()
@profile_options
@input_options
@click.option("--explain", is_flag=True, help="Show, for every package, which file and line asked for it.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def merge(ctx: click.Context, /, explain: bool, as_json: bool, **flags: Any) -> None:
    """Print the merged requirement set for a profile (nothing is written, uv does not run; the input
    flags here are a preview: `envbuild lock` with them writes them into envbuild.toml)."""
    import json

    from envbuild.lock.plan import input_warnings, settled_inputs

    deployment = build_deployment(ctx, flags)
    profile = profile_to_lock(ctx, deployment, flags)
    merged, _, untrusted = settled_inputs(deployment, profile)  # as the lock renders them: its settled groups too
    for problem in untrusted:
        warn(f"ignored: {problem}")
    for warning in input_warnings(merged):
        warn(warning)
    if as_json:
        show(json.dumps([
            {"requirement": r.pep508(), "origins": [
                {"path": o.origin.path, "line": o.origin.line, "source": o.origin.source, "text": o.text}
                for o in r.origins]}
            for r in merged.result.requirements], indent=2))
        return
    for requirement in merged.result.requirements:
        show(requirement.pep508())
        if explain:
            for item in requirement.origins:
                show(f"    {item.text:<30} {item.origin}")
