"""Cron expressions and time zones, checked when a workflow loads.

The verdict is Dagster's own: ``dagster._utils.schedules.is_valid_cron_string`` (which
ScheduleDefinition and AutomationCondition.on_cron apply) run on the croniter release that
Dagster vendors, without importing Dagster. tests/test_properties.py compares the two over
generated expressions.
"""

from __future__ import annotations

import functools
import zoneinfo
from typing import Any

_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31, L for the last day"),
    ("month", "1-12 or JAN-DEC"),
    ("day of week", "0-7 or SUN-SAT, MON#2 for the 2nd Monday, L5 for the last Friday"),
)
_FEBRUARY = 2
ALIASES = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight")


def cron_problem(expression: str) -> str | None:
    """Why Dagster would refuse ``expression`` as a cron schedule, or None if it accepts it."""
    # croniter raises ValueError and TypeError subclasses; Dagster fails to load on any error.
    try:
        fields = _expand(expression)
    except Exception as exc:
        return _explain(expression.split()) or str(exc)
    if len(fields) != len(_FIELDS):
        return _field_count(len(fields))
    day, month = fields[2], fields[3]
    if month == [_FEBRUARY] and len(day) == 1 and day[0] in (30, 31):
        return f"February has no day {day[0]}: the schedule would never run"
    return None


def _field_count(count: int) -> str:
    return f"a cron expression has 5 fields (minute hour day month weekday), got {count}"


def _explain(parts: list[str]) -> str | None:
    """Say which part croniter refused: an alias, the field count, or the first bad item."""
    if len(parts) == 1 and parts[0].startswith("@"):
        return f"`{parts[0]}` is not a cron alias ({', '.join(ALIASES)})"
    if len(parts) != len(_FIELDS):
        return _field_count(len(parts))
    for i, (part, (field, allowed)) in enumerate(zip(parts, _FIELDS, strict=True)):
        for item in part.split(","):
            alone = ["*"] * len(_FIELDS)
            alone[i] = item
            if not _accepted(" ".join(alone)):
                return f"`{item}` is not a valid {field} (allowed: {allowed}; *, a-b, */n, lists)"
    return None  # only the combination is refused: croniter's own message says why


def _expand(expression: str) -> list[list[Any]]:
    # Imported on first use: with pytz and dateutil, croniter adds about a sixth to the spec
    # layer's import time (python -X importtime), and most workflow files have no cron.
    from croniter import croniter

    fields, *_ = croniter.expand(expression)
    return list(fields)


def _accepted(expression: str) -> bool:
    try:
        _expand(expression)
    except Exception:
        return False
    return True


# Files that zoneinfo loads but that are no zone of the IANA database: `localtime` is
# whatever zone the machine has (a link the OS keeps), `posixrules` a template, `Factory`
# tzdata's placeholder ("-00"), and `right/` zones count leap seconds. Each was accepted,
# and ran schedules and partitions in a time the file did not say (issue 20, item 5).
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


def timezone_problem(name: str) -> str | None:
    if name in ("UTC", "utc"):  # Dagster's get_timezone takes both without a zone lookup
        return None
    if name not in _iana_zone_names():
        return f"`{name}` is not an IANA time zone"
    return None


# Module-level, not in the registry: the installed zone names, fixed for the process.
@functools.cache
def _iana_zone_names() -> frozenset[str]:
    """Canonical names and their IANA links (`US/Eastern`), without `posix/` and `right/`
    copies: 8 ms of CPU once a process (it reads tzdata's list and walks the system's)."""
    return frozenset(zoneinfo.available_timezones() - _NOT_ZONES)
