"""Dagster partitions from ``orchestration.partitions``: static keys, dynamic keys added by
the sensor, or hourly, daily, weekly or monthly time windows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import dagster as dg

from agents_pipelines.spec import Workflow
from agents_pipelines.spec.models import TimePartitions
from agents_pipelines.spec.partition_rules import partition_time

# Each takes start_date, end_date and timezone (their base class names them otherwise).
_TIME_KINDS: dict[str, Callable[..., dg.TimeWindowPartitionsDefinition]] = {
    "hourly": dg.HourlyPartitionsDefinition,
    "daily": dg.DailyPartitionsDefinition,
    "weekly": dg.WeeklyPartitionsDefinition,
    "monthly": dg.MonthlyPartitionsDefinition,
}


def partitions_def(workflow: Workflow) -> dg.PartitionsDefinition | None:
    config = workflow.spec.orchestration.partitions
    if config is None:
        return None
    if config.static:
        return dg.StaticPartitionsDefinition(list(config.static))
    if (time := config.time) is not None:
        return time_partitions_def(*time)
    return dg.DynamicPartitionsDefinition(name=f"{workflow.name}_inputs")


def time_partitions_def(kind: str, config: TimePartitions) -> dg.TimeWindowPartitionsDefinition:
    """Dagster's own definition for ``kind``, with its default key format: ``2026-11-01``
    (``2026-11-01-06:00`` for hourly). The dates were checked at load
    (spec.partition_rules); given as wall-clock datetimes, Dagster places them in
    ``config.timezone``."""
    end: datetime | None = partition_time(kind, config.end) if config.end else None
    return _TIME_KINDS[kind](
        start_date=partition_time(kind, config.start), end_date=end, timezone=config.timezone
    )
