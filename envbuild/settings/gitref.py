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
