"""`[lock] exclude-newer`: a cooldown, so that a lock never takes a release published hours ago.

transformers 5.0.0 broke ComfyUI the day it was published (ComfyUI #12093, 2026-01-26: fix merged ~6 h
after the upload, released in v0.11.0 ~17 h after, no 5.0.1 for 10 days; upload times from
https://pypi.org/pypi/transformers/json; docs/explanation/cooldown.md says why the default is 7 days). uv
can hold a resolution to files uploaded before a moment (`exclude-newer`); this module reads the
setting in uv's own grammar and turns it into that moment.

The value is a span ("7 days", "1 week", "24 hours", "P7D": uv's "friendly" and ISO 8601 durations,
without calendar units), a date or RFC 3339 time ("2026-12-01", "2026-12-01T00:00:00Z"), or `false`.
envbuild never hands uv the span: a span resolved against the clock would move the cutoff on every
re-lock. It resolves the span once, when a lock is made (rounded down to the span's largest unit),
records the moment in the lock's fingerprint and renders that moment, so the pyproject stays byte
for byte the same (and `lock --check` needs no clock) until `lock --upgrade` or `update` moves it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from envbuild.core.errors import ConfigError

if TYPE_CHECKING:  # read on every load of envbuild.toml: datetime and the patterns only when a value is used
    import datetime

KEY = "lock.exclude-newer"
_UNITS = (  # uv's friendly units (jiff), largest first; calendar units (months, years) uv refuses
    ("weeks", 7 * 86400, ("weeks", "week", "wks", "wk", "w")),
    ("days", 86400, ("days", "day", "d")),
    ("hours", 3600, ("hours", "hour", "hrs", "hr", "h")),
    ("minutes", 60, ("minutes", "minute", "mins", "min", "m")),
    ("seconds", 1, ("seconds", "second", "secs", "sec", "s")),
)
_UNIT_OF = {alias: (index, seconds) for index, (_, seconds, aliases) in enumerate(_UNITS) for alias in aliases}
_FRIENDLY_PART = r"(\d{1,6}) ?([a-z]+)"  # patterns as text: `re` compiles (and caches) them on first use
_ISO = r"P(?:(\d{1,6})W)?(?:(\d{1,6})D)?(?:T(?:(\d{1,6})H)?(?:(\d{1,6})M)?(?:(\d{1,6})S)?)?"
_DATE = r"\d{4}-\d{2}-\d{2}"
_TIMESTAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})"
_EXAMPLES = '"7 days", "1 week", "24 hours", "P7D", "2026-12-01", "2026-12-01T00:00:00Z" or false'


class Cooldown(NamedTuple):
    """A cooldown: a span before the moment of locking, or a fixed moment."""

    span: int | None  # seconds before the moment of locking; None: `fixed` is the cutoff
    fixed: str | None = None  # an RFC 3339 UTC moment ("2026-12-01T00:00:00Z")

    @property
    def text(self) -> str:
        """The setting in one canonical spelling ("1 week" and "7 days" are the same setting)."""
        if self.span is None:
            return str(self.fixed)
        parts, rest = [], self.span
        for name, seconds, _ in _UNITS[1:]:  # weeks are said in days
            count, rest = divmod(rest, seconds)
            if count:
                parts.append(f"{count} {name[:-1] if count == 1 else name}")
        return " ".join(parts) or "0 seconds"

    def cutoff(self, now: datetime.datetime) -> str:
        """The moment a lock made at `now` holds to: files uploaded before it. A span's moment is rounded
        down to its largest unit (a span of days to midnight UTC, of hours to the hour): the cooldown is
        at least the span, and everyone who locks the same inputs on the same day renders the same bytes."""
        import datetime

        if self.span is None:
            return str(self.fixed)
        moment = now.astimezone(datetime.timezone.utc) - datetime.timedelta(seconds=self.span)
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        whole = int((moment - epoch).total_seconds()) // self._grain() * self._grain()
        return format_timestamp(epoch + datetime.timedelta(seconds=whole))

    def could_be(self, cutoff: str) -> bool:
        """Could a lock made with this setting have recorded `cutoff`? Its form and its rounding, no clock."""
        if self.span is None:
            return cutoff == self.fixed
        moment = parse_timestamp(cutoff)
        return (moment is not None and format_timestamp(moment) == cutoff
                and int(moment.timestamp()) % self._grain() == 0)

    def _grain(self) -> int:
        """A span's largest unit in seconds: what its cutoff is rounded down to."""
        return next((seconds for _, seconds, _ in _UNITS[1:] if (self.span or 0) >= seconds), 1)


DEFAULT_COOLDOWN = Cooldown(span=7 * 86400)  # "7 days": docs/explanation/cooldown.md says why


def utc_now() -> datetime.datetime:
    """The clock, in one place: only a lock that moves its cutoff reads it (tests shift it here)."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc)


def format_timestamp(moment: datetime.datetime) -> str:
    import datetime

    return moment.astimezone(datetime.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime.datetime | None:
    """An RFC 3339 time with its offset (None: not one)."""
    import datetime

    if not re.fullmatch(_TIMESTAMP, text):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_cooldown(value: Any, path: Path | str | None) -> Cooldown | None:
    """`[lock] exclude-newer` as written (None: off). Errors name the file and line and give examples."""
    import datetime

    if value is False:
        return None
    if not isinstance(value, str):
        raise _error(path, f"`{KEY}` must be a string or false, not {value!r}")
    text = value.strip()
    span = _span(text)
    if span is not None:
        return Cooldown(span=span)
    if re.fullmatch(_DATE, text):  # as uv reads a date: through the end of that day (here in UTC, not local time)
        try:
            day = datetime.date.fromisoformat(text)
        except ValueError:
            raise _error(path, f"`{KEY} = {value!r}` is not a date") from None
        end = datetime.datetime.combine(day, datetime.time(), datetime.timezone.utc) + datetime.timedelta(days=1)
        return Cooldown(span=None, fixed=format_timestamp(end))
    moment = parse_timestamp(text)
    if moment is not None:
        return Cooldown(span=None, fixed=format_timestamp(moment))
    raise _error(path, f"`{KEY} = {value!r}` is not a duration, a date or an RFC 3339 time")


def _span(text: str) -> int | None:
    """Seconds of a friendly ("1 week, 2 days") or ISO 8601 ("P1W2D", "PT36H") duration; None: not one.
    Each unit at most once, largest first, whole numbers: what uv 0.13.9 accepts (measured), nothing it
    refuses (months, years, "1.5 days", "7 Days"); negative spans ("7 days ago") are refused here."""
    iso = re.fullmatch(_ISO, text)
    if iso is not None:
        if text in ("P", "PT") or text.endswith("T"):
            return None
        weights = (7 * 86400, 86400, 3600, 60, 1)
        return sum(int(group or 0) * weight for group, weight in zip(iso.groups(), weights, strict=True))
    total, last, position = 0, -1, 0
    for match in re.finditer(_FRIENDLY_PART, text):
        between = text[position:match.start()]
        if between.strip(" ,") or (position and not between):
            return None
        unit = _UNIT_OF.get(match.group(2))
        if unit is None or unit[0] <= last:
            return None
        last, position = unit[0], match.end()
        total += int(match.group(1)) * unit[1]
    return total if position and position == len(text) else None


def _error(path: Path | str | None, message: str) -> ConfigError:
    line = _line_of(path) if path else None
    where = f"{path}:{line}" if line else path
    return ConfigError(where, message, hint=f"e.g. {_EXAMPLES} (false: no cooldown)")


def _line_of(path: Path | str | None) -> int | None:
    """The line of `exclude-newer` in the [lock] table of `path` (None: not found)."""
    try:
        lines = Path(str(path)).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    table = ""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        header = re.match(r"\[\s*([^\]]*?)\s*\]", stripped)
        if header:
            table = header.group(1)
        elif table == "lock" and re.match(r"""["']?exclude-newer["']?\s*=""", stripped):
            return number
    return None
