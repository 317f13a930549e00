"""Sizes as people read them: one rule for every command that reports bytes (sync --dry-run,
generations, image)."""

from __future__ import annotations


def human_size(count: int | None) -> str:
    """Binary units, as `du -h` and container engines print them; None: the size is not known."""
    if count is None:
        return "size not reported"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # unreachable: the loop returns at GiB
