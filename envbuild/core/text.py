"""Showing text read from files envbuild does not trust: escaped, and cut short."""

from __future__ import annotations

import json


def quoted(text: str) -> str:
    """A value read from an untrusted file, shown escaped and short."""
    shown = json.dumps(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."
