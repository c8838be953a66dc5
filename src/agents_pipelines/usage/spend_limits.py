"""Spend limits over time: what a workflow (or a pool of workflows) may spend per calendar
day or month, counted over every run in the window.

Dagster-free: whoever runs the workflow hands in a plain callable that says what was
recorded in a window before the run (``SpentSince``). The windows are read once, when the
run starts; this run's own spend is then added per call, so the records are not queried
again before each LLM call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from agents_pipelines.usage.records import UsageSummary, round_usd

Period = Literal["day", "month"]
Scope = Literal["workflow", "pool"]


@dataclass(frozen=True)
class SpendLimit:
    """At most ``max_cost_usd`` per calendar ``per`` in ``timezone``, over every run of one
    workflow (scope "workflow") or of every workflow in one pool (scope "pool")."""

    scope: Scope
    name: str  # the workflow's or the pool's name
    per: Period
    max_cost_usd: float
    timezone: str = "UTC"

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The calendar window that holds ``now``: when it began and when it resets."""
        local = now.astimezone(ZoneInfo(self.timezone))
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.per == "month":
            start = start.replace(day=1)
            year, month = divmod(start.month, 12)
            end = start.replace(year=start.year + year, month=month + 1)
        else:
            end = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=start.tzinfo)
        # Midnight may not exist (or exist twice) on a DST change; the UTC round trip
        # settles each on one instant.
        return _settled(start), _settled(end)

    def describe(self) -> str:
        return f"{self.scope} {self.name}'s {self.per} ({self.timezone})"


@dataclass(frozen=True)
class WindowSpend:
    """One limit's window, with what earlier runs spent in it."""

    limit: SpendLimit
    start: datetime
    resets_at: datetime
    spent_before_usd: float

    def spent_usd(self, usage: UsageSummary) -> float:
        return round_usd(self.spent_before_usd + usage.total_cost_usd)

    def reached(self, usage: UsageSummary) -> bool:
        return self.spent_usd(usage) >= self.limit.max_cost_usd

    def stop_message(self, workflow: str, usage: UsageSummary) -> str:
        limit = self.limit
        key = "the pool's limit" if limit.scope == "pool" else "orchestration.spend_limits"
        return (
            f"Workflow {workflow} stopped before its next LLM call: the spend limit of "
            f"{limit.describe()} is reached: ${self.spent_usd(usage):.6f} spent since "
            f"{self.start.isoformat()} (this run ${usage.total_cost_usd:.6f}) of "
            f"max_cost_usd ${limit.max_cost_usd:.6f}. The window resets at "
            f"{self.resets_at.isoformat()}. Wait until then, or raise {key}."
        )


# What the records hold for a limit's scope from a time on (every run, failed ones too).
SpentSince = Callable[[SpendLimit, datetime], float]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SpendLimits:
    """The limits a run must keep, and where to read what was spent before it."""

    limits: tuple[SpendLimit, ...]
    spent_since: SpentSince
    clock: Callable[[], datetime] = utc_now

    def open(self) -> tuple[WindowSpend, ...]:
        """Each limit's current window, read from the records once."""
        now = self.clock()
        windows = []
        for limit in self.limits:
            start, resets_at = limit.window(now)
            windows.append(WindowSpend(limit, start, resets_at, self.spent_since(limit, start)))
        return tuple(windows)


def first_reached(windows: Sequence[WindowSpend], usage: UsageSummary) -> WindowSpend | None:
    return next((window for window in windows if window.reached(usage)), None)


def _settled(moment: datetime) -> datetime:
    return moment.astimezone(UTC).astimezone(moment.tzinfo)
