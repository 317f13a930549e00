"""`envbuild profiles`: the torch profiles a deployment can lock; `profiles update` keeps them true."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.options import build_deployment
from envbuild.cli.output import say, show, warn

if TYPE_CHECKING:
    from envbuild.env.profiles_update import UpdateReport
    from envbuild.settings.config import Config


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def profiles(ctx: click.Context, as_json: bool) -> None:
    """List the torch profiles (built-in and the deployment's own profiles/)."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    catalogue = build_deployment(ctx).catalogue
    rows = []
    from envbuild.torch.profile_file import check_profile

    for name in catalogue.names():
        p = check_profile(catalogue.get(name))  # every file's specifiers and markers, as a lock would parse them
        torch = next((str(x.specifier) for x in p.packages if x.name == "torch"), "")
        rows.append({"name": p.name, "accelerator": p.accelerator, "version": p.accelerator_version,
                     "channel": p.channel, "index": p.index_url, "torch": torch, "description": p.description,
                     "ended": f"torch {p.last_torch}" if p.last_torch else None,
                     "companions": [c.as_written() for c in p.companions]})
    if as_json:
        show(json.dumps(rows, indent=2))
        return
    columns = (("name", "PROFILE"), ("accelerator", "ACCELERATOR"), ("version", "VERSION"), ("channel", "CHANNEL"),
               ("torch", "TORCH"), ("source", "TORCH FROM"), ("ended", "ENDED WITH"))
    table = [[title for _, title in columns]]
    for r in rows:
        source = "PyPI" if not r["index"] else "PyTorch index"
        table.append([str({**r, "source": source}[key] or "-") for key, _ in columns])
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    descriptions = ["DESCRIPTION", *(str(r["description"]) + (f" (companions: {', '.join(r['companions'])})"
                                                               if r["companions"] else "") for r in rows)]
    for row, description in zip(table, descriptions, strict=True):
        show("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + "  " + description)


@profiles.command()
@click.option("--profile", "names", multiple=True, metavar="NAME",
              help="Only this profile (cu126: its [packages]; cu126-pypi: its [pypi] table). Repeatable.")
@click.option("--write", is_flag=True, help="Write the proposed bounds into the profile files (comments kept).")
@click.option("--offline", is_flag=True,
              help="Use only the cached index answers, however old (also when UV_OFFLINE is set).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def update(ctx: click.Context, names: tuple[str, ...], write: bool, offline: bool, as_json: bool) -> None:
    """Check the profiles' torch-family bounds against their indexes; show (or --write) the fix.

    \b
    Reads each profile's index (ENVBUILD_PYTORCH_INDEX applies) and, for [pypi] tables and
    profiles without an index, UV_DEFAULT_INDEX or PyPI: PEP 691 JSON or PEP 503 HTML pages and
    wheel metadata, never whole wheels. Exits 6 when an index could not be read, 1 when a table has no
    compatible set.
    """

    from envbuild.env.profiles_update import update_profiles, write_updates

    deployment = build_deployment(ctx)
    config = deployment.config
    with deployment.index_client(offline=offline) as client:
        report = update_profiles(config, deployment.catalogue, names, client, environ=deployment.env)
    written = [config.display(p) for p in write_updates(report)] if write else []
    if as_json:
        show(_json(report, config, written))
    else:
        _print(ctx, report, config, written, write=write, offline=offline or deployment.offline)
    if report.unreadable:  # an index that could not be read: the same code as uv's unreachable index
        from envbuild.core.errors import IndexUnreachableError

        ctx.exit(IndexUnreachableError.exit_code)
    failed = [t for t in report.tables if t.error]
    if failed:
        from envbuild.core.errors import CheckFailed

        raise CheckFailed(f"{len(failed)} profile table(s) have no compatible set of releases on their index "
                          "(each is named above)")


def _print(ctx: click.Context, report: UpdateReport, config: Config, written: list[str], *,
           write: bool, offline: bool) -> None:
    from envbuild.core.http.indexclient import describe_age

    for table in report.tables:
        age = f" ({'offline: ' if offline else ''}cached {describe_age(table.cache_age)})" if table.cache_age else ""
        say(ctx, f"{table.profile} [{table.table}] from {table.index_url}{age}")
        if table.newest:
            say(ctx, "  newest compatible set: " + ", ".join(f"{k} {v}" for k, v in table.newest.items()))
        for change in table.changes:
            say(ctx, f"  {change.package}: {change.old} -> {change.new} ({change.reason})")
        if table.newest and not table.changes:
            say(ctx, "  bounds are true to the index")
        for note in table.notes:
            say(ctx, f"  note: {note}")
        if table.error:
            warn(f"{table.profile} [{table.table}]: {table.error}")
    for line in report.new_lines:
        say(ctx, line)
    diff = report.diff(config)
    if diff:
        show(diff, nl=False)
    if written:
        say(ctx, "wrote " + ", ".join(written))
    elif diff and not write:
        say(ctx, "(run with --write to apply)")
    if report.unreadable:
        warn("could not read:\n" + "\n".join(f"  {line}" for line in _grouped(report.unreadable)))


def _grouped(failures: tuple[tuple[str, str], ...]) -> list[str]:
    """One line per index and reason: `https://host/whl/cu126/ (torch, torchvision): connection failed`."""
    import re

    groups: dict[tuple[str, str], list[str]] = {}
    for url, reason in failures:
        page = re.fullmatch(r"(.*/)([^/]+)/", url)
        key, project = ((page.group(1), reason), page.group(2)) if page else ((url, reason), "")
        groups.setdefault(key, []).extend([project] if project else [])
    return [f"{where}{' (' + ', '.join(names) + ')' if names else ''}: {reason}"
            for (where, reason), names in groups.items()]


def _json(report: UpdateReport, config: Config, written: list[str]) -> str:
    import json

    def table(t: Any) -> dict[str, Any]:
        return {"profile": t.profile, "table": t.table, "file": config.display(t.path), "index": t.index_url,
                "newest": dict(t.newest), "error": t.error, "notes": list(t.notes), "cache_age_seconds": t.cache_age,
                "changes": [{"package": c.package, "old": c.old, "new": c.new, "reason": c.reason}
                            for c in t.changes]}
    unreadable = [{"url": url, "reason": reason} for url, reason in report.unreadable]
    return json.dumps({"tables": [table(t) for t in report.tables], "unreadable": unreadable,
                       "diff": report.diff(config), "written": written, "new_lines": list(report.new_lines)},
                      indent=2)
