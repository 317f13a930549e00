"""The grammar of a git ref a committed file names (`[comfyui] ref`, a node pin's `ref`), checked where it
is read: such a value reaches git's argv."""

from __future__ import annotations

import re

# git check-ref-format's rules for a name a user writes (a tag, a branch, a commit), plus: never an option.
_REF_CHARS = re.compile(r"[A-Za-z0-9_./+@-]{1,255}")


def ref_problem(ref: str) -> str | None:
    """Why `ref` cannot be a tag, branch or commit envbuild hands to git (None: it can). A value from a
    committed file reaches git's argv, so one that starts with `-` (an option: `--upload-pack=CMD`) or
    breaks git's ref grammar is refused where it is read."""
    if ref.startswith("-"):
        return "starts with `-` (git would read it as an option)"
    if not _REF_CHARS.fullmatch(ref):
        return "is not a tag, branch or commit name (letters, digits and _ . / + @ - only, at most 255)"
    if ".." in ref or "@{" in ref or "//" in ref or ref.endswith((".", "/", ".lock")) or ref.startswith("/") \
            or any(part.startswith(".") for part in ref.split("/")):
        return "breaks git's ref grammar (`..`, `@{`, `//`, a part starting with `.`, or ending in `.`, `/`, `.lock`)"
    return None


URL_LIMIT = 2048
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://")
CREDENTIALS_HINT = ("give the URL without them: git reads credentials from a credential helper "
                    "(`git config --global credential.helper store`) or ~/.netrc, and neither is committed")


def is_remote(url: str) -> bool:
    """A URL git fetches over a network (`https://…`, `ssh://…`, scp-like `user@host:path`), not a local
    path. Linear in the URL's length (the regular expression it replaces backtracked quadratically)."""
    if _SCHEME.match(url):
        return True
    head, colon, _ = url.partition(":")
    # scp-like: `host:path` or `user@host:path`, with no slash before the colon (else a local path);
    # one letter before the colon is a Windows drive.
    return bool(colon) and "/" not in head and "\\" not in head and len(head.rpartition("@")[2]) >= 2


def git_url_problem(url: str) -> str | None:
    """Why `url` cannot be a repository envbuild records and hands to git (None: it can): an option, a
    control character, or credentials, which would be committed with the pin and printed in logs."""
    if not url:
        return "is empty"
    if len(url) > URL_LIMIT:
        return f"is longer than {URL_LIMIT} characters"
    if url.startswith("-"):
        return "starts with `-` (git would read it as an option)"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "holds white space or a control character"
    scheme = _SCHEME.match(url)
    if scheme:
        authority = url[scheme.end():].split("/", 1)[0]
        user, at, _ = authority.rpartition("@")
        if at and (":" in user or scheme.group(0).lower() in ("http://", "https://")):
            return "carries credentials (a user name or token and password)"
    return None
