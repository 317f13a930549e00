"""uv's failure messages turned into errors a user can act on (which URL, what kind of failure, the fix).

Imported only when uv failed: compiling these patterns is work a successful run does not need.
"""

from __future__ import annotations

import re

from envbuild.core.errors import (
    EnvbuildError,
    IndexUnreachableError,
    StaleLockError,
    UvError,
    UvVersionError,
)

_UNREACHABLE = re.compile(
    r"(Connection refused|dns error|failed to lookup address|error sending request|"
    r"operation timed out|timed out|Could not connect|tcp connect error|Network is unreachable)",
    re.I,
)
# Where a download failed, most precise first: uv names the URL in its cause chain, the package above it.
# uv wraps long lines to the terminal, so words may be separated by any whitespace.
_FAILED_AT = (re.compile(r"for\s+url\s+\((\S+?)\)"), re.compile(r"Failed\s+to\s+fetch:?\s+`?(\S+?)`?$", re.M),
              re.compile(r"Failed\s+to\s+download\s+`([^`]+)`"))
_NO_BUILD = re.compile(r"Wheels\s+are\s+required\s+for\s+`([^`]+)`\s+because\s+building\s+from\s+source\s+is\s+"
                       r"disabled|Distribution\s+`([^`]+)`\s+can't\s+be\s+installed\s+because\s+it\s+is\s+marked\s+as\s+`--no-build`")
_NO_PLATFORM_WHEEL = re.compile(r"Because\s+([A-Za-z0-9._-]+)==\S+\s+has\s+no\s+`([^`]+)`-compatible\s+wheels")
_HTTP_STATUS = re.compile(r"HTTP\s+status\s+(?:client|server)\s+error\s+\((\d{3}[^)]*)\)\s+for\s+url\s+\((\S+?)\)")
_BODY_CUTS = tuple(re.compile(phrase.replace(" ", r"\s+"), re.I) for phrase in (  # most specific first
    "end of file before message length reached", "connection closed before message completed",
    "connection reset by peer", "error decoding response body"))
_NO_CREDENTIALS = re.compile(r"An\s+index\s+URL\s+\((\S+?)\)\s+could\s+not\s+be\s+queried\s+due\s+to\s+a\s+lack\s+"
                             r"of\s+valid\s+authentication\s+credentials\s+\(([^)]+)\)")
# Most specific first: uv's cause chain names several.
_FAILURE_KINDS = ("dns error", "Connection refused", "timed out", "Network is unreachable",
                  "tcp connect error", "error sending request")
_REQUIRED_VERSION = re.compile(r"Required\s+uv\s+version\s+`([^`]+)`\s+does\s+not\s+match\s+the\s+running"
                               r"\s+version\s+`([^`]+)`")
# uv wraps its messages to the terminal width: any whitespace may separate the words.
_STALE = re.compile(r"needs\s+to\s+be\s+updated,\s+but\s+`--(locked|check)`\s+was\s+provided", re.I)
# uv 0.13.9 (measured): "`alpha` was filtered by `exclude-newer` to only include packages uploaded before <time>."
_COOLDOWN = re.compile(r"`([^`]+)`\s+was\s+filtered\s+by\s+`exclude-newer`\s+to\s+only\s+include\s+packages\s+"
                       r"uploaded\s+before\s+(\S+?)\.(?:\s|$)")


def classify_failure(action: str, message: str, default: type[UvError], *, shown: bool = False) -> EnvbuildError:
    """Turn uv's words into the error a user can act on."""
    too_old = _REQUIRED_VERSION.search(message)
    if too_old:
        return UvVersionError(
            f"uv {too_old.group(2)} is too old for this lock: it needs uv {too_old.group(1)}",
            hint="upgrade it with `python -m pip install -U uv` (or point ENVBUILD_UV at a newer uv)",
        )
    if _STALE.search(message):
        return StaleLockError(
            "the lock is out of date with its pyproject.toml (uv --locked refused it)",
            hint="run `envbuild lock` for this profile (and commit the result)",
        )
    unbuilt = _NO_BUILD.search(message)
    if unbuilt:  # envbuild renders no-build: a package that ships no wheel would run its own build code
        name = re.split(r"[=@ ]", unbuilt.group(1) or unbuilt.group(2) or "")[0] or "a package"
        return default(
            action, message, shown=shown,
            summary=f"{name} ships no wheel this lock can use: installing it runs its build (its own code, "
                    "setup.py or a build backend) on this machine, which envbuild allows only by name",
            hint=f'if you trust it, add `allow-build = ["{name}"]` to [lock] in envbuild.toml (uv then builds it '
                 "from source, here and on every machine that syncs); or find the node that asks for it "
                 "(`envbuild merge --explain`) and leave that node out",
        )
    platform = _NO_PLATFORM_WHEEL.search(message)
    if platform:  # no-build: a platform the profile locks has no wheel of that release
        name, where = platform.group(1), platform.group(2)
        return default(
            action, message, shown=shown,
            summary=f"{name} has no wheel for `{where}`, a platform the profile locks, and envbuild builds nothing "
                    "it is not allowed to",
            hint=f'allow its build there: `allow-build = ["{name}"]` in [lock] (its own code runs on that platform '
                 "when it installs), or pin a release that ships that wheel in an input, or use a profile without "
                 "that platform",
        )
    cooled = _COOLDOWN.search(message)
    if cooled:  # uv's own hint (exclude-newer-package) names a file envbuild generates: say envbuild's ways
        return default(
            action, message, shown=shown,
            summary=f"{cooled.group(1)}: what the inputs ask for was uploaded after the cooldown's cutoff "
                    f"{cooled.group(2)}",
            hint=f"pin it exactly (`{cooled.group(1)}==<version>`) in an input to take it now, or set [lock] "
                 "exclude-newer in envbuild.toml to a shorter span (false: off); an index or mirror that lists no "
                 "upload times counts as all new")
    if _UNREACHABLE.search(message):
        kind = next((k for k in _FAILURE_KINDS if k.lower() in message.lower()), "network error")
        return IndexUnreachableError(
            action, message, shown=shown,
            summary=f"could not reach {_failed_at(message)} ({kind})",
            hint=_reach_hint(_failed_at(message), "check the network, or configure a mirror (see README, "
                                                  "'Behind a firewall')"),
        )
    return _index_failure(action, message, default, shown) or default(action, message, shown=shown)


def _index_failure(action: str, message: str, default: type[UvError], shown: bool) -> UvError | None:
    """An index that answered, but wrongly: an HTTP error, a download cut short, a demand for credentials."""
    status = _HTTP_STATUS.search(message)
    if status:
        return IndexUnreachableError(action, message, shown=shown,
                                     summary=f"{status.group(2)} answered {_one_line(status.group(1))}",
                                     hint=_reach_hint(status.group(2), "the index failed; try again later, or "
                                                                       "configure a mirror"))
    cut = next((found for found in (p.search(message) for p in _BODY_CUTS) if found), None)
    if cut:
        return IndexUnreachableError(action, message, shown=shown,
                                     summary=f"the connection dropped while downloading {_failed_at(message)} "
                                             f"({_one_line(cut.group(0))})",
                                     hint="try again; a proxy or an unstable network cuts downloads short")
    auth = _NO_CREDENTIALS.search(message)
    if auth:
        return default(action, message, shown=shown,
                       summary=f"{auth.group(1)} wants credentials ({_one_line(auth.group(2))})",
                       hint="give them to uv as UV_INDEX_<NAME>_USERNAME and UV_INDEX_<NAME>_PASSWORD, NAME being "
                            "the index's name in pyproject.toml, upper-cased, with _ for -")
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


_ORIGINS = ("pypi.org", "files.pythonhosted.org", "download.pytorch.org", "download-r2.pytorch.org")


def _reach_hint(url: str, origin_hint: str) -> str:
    """"Configure a mirror" helps only when the index asked was an origin; when it was not, one is
    configured already: name it, and the setting pull-through mirrors need."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if not host or any(host == o or host.endswith("." + o) for o in _ORIGINS):
        return origin_hint
    return (f"{host} is the index envbuild asked (a mirror or your own index): check that it is up and serves "
            "this path; a PyPI mirror that keeps its files under another root needs `pypi-files` in [mirrors] "
            "(README, 'Behind a firewall')")


def _failed_at(message: str) -> str:
    for pattern in _FAILED_AT:
        found = pattern.search(message)
        if found:
            return found.group(1)
    return "an index"
