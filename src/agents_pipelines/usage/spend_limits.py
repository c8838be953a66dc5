"""Spend limits over time: what a workflow (or a pool of workflows) may spend per calendar
day or month, counted over every run in the window.

Dagster-free: whoever runs the workflow hands in a plain callable that says what was
recorded in a window before the run (``SpentSince``), read once when the run starts, and
optionally a ``SpendJournal``: what other runs still in flight have spent so far (read
before each LLM call) and where this run writes its own running total (after each priced
call). Without a journal, runs in flight at once do not see each other.
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

    def spent_usd(self, usage: UsageSummary, in_flight_usd: float = 0.0) -> float:
        """Earlier runs' spend, other runs' in flight, and this run's."""
        return round_usd(self.spent_before_usd + in_flight_usd + usage.total_cost_usd)

    def reached(self, usage: UsageSummary, in_flight_usd: float = 0.0) -> bool:
        return self.spent_usd(usage, in_flight_usd) >= self.limit.max_cost_usd

    def stop_message(self, workflow: str, usage: UsageSummary, in_flight_usd: float = 0.0) -> str:
        limit = self.limit
        key = "the pool's limit" if limit.scope == "pool" else "orchestration.spend_limits"
        others = f", runs in flight ${in_flight_usd:.6f}" if in_flight_usd else ""
        return (
            f"Workflow {workflow} stopped before its next LLM call: the spend limit of "
            f"{limit.describe()} is reached: ${self.spent_usd(usage, in_flight_usd):.6f} "
            f"spent since {self.start.isoformat()} (this run "
            f"${usage.total_cost_usd:.6f}{others}) of "
            f"max_cost_usd ${limit.max_cost_usd:.6f}. The window resets at "
            f"{self.resets_at.isoformat()}. Wait until then, or raise {key}."
        )


# What the records hold for a limit's scope from a time on (every run, failed ones too).
SpentSince = Callable[[SpendLimit, datetime], float]


@dataclass(frozen=True)
class SpendJournal:
    """Running totals of attempts in flight, shared by the runs of one orchestrator."""

    # What other attempts still in flight have spent in a limit's scope since a time.
    in_flight_since: SpentSince
    # Writes this attempt's running total (USD), after each call that cost something.
    record: Callable[[float], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SpendLimits:
    """The limits a run must keep, and where to read what was spent before it."""

    limits: tuple[SpendLimit, ...]
    spent_since: SpentSince
    clock: Callable[[], datetime] = utc_now
    journal: SpendJournal | None = None

    def open(self) -> tuple[WindowSpend, ...]:
        """Each limit's current window, read from the records once."""
        now = self.clock()
        windows = []
        for limit in self.limits:
            start, resets_at = limit.window(now)
            windows.append(WindowSpend(limit, start, resets_at, self.spent_since(limit, start)))
        return tuple(windows)


def first_reached(
    windows: Sequence[WindowSpend], usage: UsageSummary, journal: SpendJournal | None = None
) -> tuple[WindowSpend, float] | None:
    """The first window that earlier runs, other runs in flight (read from ``journal``
    now) and ``usage`` fill, with the in-flight spend it counted; None while all hold."""
    for window in windows:
        if window.reached(usage):
            return window, 0.0
        if journal is None:
            continue
        others = journal.in_flight_since(window.limit, window.start)
        if window.reached(usage, others):
            return window, others
    return None


def _settled(moment: datetime) -> datetime:
    return moment.astimezone(UTC).astimezone(moment.tzinfo)
