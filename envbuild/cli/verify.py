"""`envbuild verify`: offline audit of committed locks (hashes, indexes, sources, freshness), for CI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from envbuild.cli.options import build_deployment, profile_options, profile_to_use, request_of
from envbuild.cli.output import error, say, show

if TYPE_CHECKING:
    from envbuild.deploy.deployment import Deployment
    from envbuild.lock.trust import Assessment


@click.command()
@profile_options
@click.option("--all", "all_profiles", is_flag=True, help="Check every committed lock under the lock folder.")
@click.option("--allow-unhashed", is_flag=True,
              help="List files without a sha256 as warnings instead of failing on them.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def verify(ctx: click.Context, /, all_profiles: bool, allow_unhashed: bool, as_json: bool, **flags: Any) -> None:
    """Check committed locks without network or uv, as sync does before it installs: every file the
    profile's platforms may install has a sha256, the indexes and sources still pin the torch family
    to the profile's index (and nothing else to it), and, where the ComfyUI checkout is here, the
    pyproject is what envbuild renders from it. Exit 5 naming each problem (4: stale or missing).
    """
    import json

    from envbuild.core.errors import UsageError

    deployment = build_deployment(ctx, flags)
    request = request_of(flags)
    if all_profiles and (request.profile or request.cuda):
        raise UsageError("--all checks every committed lock; drop --profile/--cuda")
    if all_profiles:
        names = deployment.committed()
        if not names:
            raise UsageError(f"no committed locks in {deployment.display(deployment.lock_dir)}",
                             hint="run `envbuild lock --all` first")
    else:
        names = [profile_to_use(ctx, deployment, flags).name]
    rows = [_checked(deployment, name, allow_unhashed, all_profiles) for name in names]
    if as_json:
        show(json.dumps(rows, indent=2, sort_keys=True))
    else:
        for row in rows:
            _print_row(ctx, row)
    codes = [row["exit"] for row in rows if row["exit"]]
    if codes:
        if not as_json:
            failed = [row["profile"] for row in rows if row["exit"]]
            error(f"error: {len(failed)} of {len(rows)} lock(s) failed verification: {', '.join(failed)}")
        ctx.exit(max(codes))


def _checked(deployment: Deployment, name: str, allow_unhashed: bool, many: bool) -> dict[str, Any]:
    """One lock's row; with --all, a lock that cannot even be checked is a failed row, not the end."""
    from envbuild.core.errors import EnvbuildError
    from envbuild.lock.trust import assess

    try:
        return _row(deployment, assess(deployment, deployment.catalogue.get(name), full=True), allow_unhashed)
    except EnvbuildError as exc:
        if not many:
            raise
        return {"profile": name, "lock": deployment.display(deployment.folder(name).path), "state": "error",
                "ok": False, "exit": exc.exit_code, "reasons": [str(exc)], "compared_with_inputs": False,
                "unhashed": [], "unhashed_allowed": allow_unhashed}


def _row(deployment: Deployment, found: Assessment, allow_unhashed: bool) -> dict[str, Any]:
    from envbuild.core.errors import LockIntegrityError, StaleLockError
    from envbuild.lock.trust import EDITED, UNHASHED

    report = found.report
    ok = found.usable and (allow_unhashed or found.state != UNHASHED)
    code = 0 if ok else (StaleLockError.exit_code if found.state in ("stale", "missing")
                         else LockIntegrityError.exit_code)
    return {
        "profile": found.profile,
        "lock": deployment.display(found.folder.path),
        "state": found.state,
        "ok": ok,
        "exit": code,
        "reasons": list(found.reasons),
        "compared_with_inputs": found.compared_with_inputs,
        "packages": report.packages if report else None,
        "artifacts": report.artifacts if report else None,
        "skipped": list(report.skipped) if report else [],
        "tampering": list(report.tampering) if report else [],
        "edited": found.state == EDITED,
        "unhashed": [{"package": a.package, "version": a.version, "kind": a.kind, "filename": a.filename,
                      "location": a.location, "hash": a.hash} for a in (report.unhashed if report else ())],
        "unhashed_allowed": allow_unhashed,
    }


def _print_row(ctx: click.Context, row: dict[str, Any]) -> None:
    from envbuild.lock.trust import STATE_MEANING

    name, state = row["profile"], row["state"]
    scope = "" if row["compared_with_inputs"] else "; no ComfyUI checkout here, so only the audit ran"
    if row["ok"] and not row["unhashed"]:
        say(ctx, f"{name}: {state} ({row['lock']}: {row['packages']} packages, {row['artifacts']} files, all with "
                 f"sha256; indexes and sources as the profile says{scope})")
        return
    meaning = STATE_MEANING.get(state, "could not be checked")
    heading = f"{name}: {state} ({row['lock']})" + ("" if row["ok"] else f": {meaning}")
    (say if row["ok"] else lambda _ctx, text: error(text))(ctx, heading)
    for reason in row["reasons"]:
        error(f"  {reason}")
    label = "warning: no sha256" if row["unhashed_allowed"] else "no sha256"
    for item in row["unhashed"]:
        why = "no hash" if item["hash"] is None else f"hash is not sha256 ({item['hash'].split(':', 1)[0]})"
        error(f"  {label}: {item['package']} {item['version']} {item['kind']} {item['filename']} ({why})")
    if row["state"] in ("edited", "stale"):
        error(f"  fix: `envbuild lock --profile {name}` regenerates the folder from the inputs and the profile")
    elif not row["ok"]:
        error("  the index served these files without a sha256; --allow-unhashed accepts them")
