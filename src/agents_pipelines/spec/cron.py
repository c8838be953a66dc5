"""Cron expressions and time zones, checked when a workflow loads.

The grammar is the one Dagster schedules accept (5 fields, names, ranges, steps, lists and
the @hourly-style aliases); a test keeps the two in agreement without the spec layer
importing Dagster.
"""

from __future__ import annotations

import re
import zoneinfo

ALIASES = frozenset(
    {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (low, high, names) per field: minute, hour, day of month, month, day of week.
_FIELDS = ((0, 59, ()), (0, 23, ()), (1, 31, ()), (1, 12, _MONTHS), (0, 7, _DAYS))
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a valid cron schedule, or None if it is."""
    text = expression.strip()
    if text.lower() in ALIASES:
        return None
    parts = text.split()
    if len(parts) != 5:
        return f"a cron expression has 5 fields (minute hour day month weekday), got {len(parts)}"
    for part, (low, high, names), field in zip(parts, _FIELDS, _FIELD_NAMES, strict=True):
        for item in part.lower().split(","):
            if not _item_ok(item, low, high, names):
                return f"`{item}` is not a valid {field} (allowed: {low}-{high}, *, ranges, steps)"
    return None


def _item_ok(item: str, low: int, high: int, names: tuple[str, ...] | tuple[()]) -> bool:
    base, _, step = item.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        return False
    if base == "*":
        return True
    bounds = base.split("-")  # a reversed range such as 22-2 wraps around, as in Dagster
    return len(bounds) <= 2 and all(_value(b, low, high, names) is not None for b in bounds)


def _value(text: str, low: int, high: int, names: tuple[str, ...] | tuple[()]) -> int | None:
    if re.fullmatch(r"\d{1,2}", text):
        number = int(text)
        return number if low <= number <= high else None
    if text in names:
        return names.index(text) + (1 if names is _MONTHS else 0)
    return None


def timezone_problem(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"`{name}` is not an IANA time zone"
    return None
