"""What a workflow, or every workflow of a pool, spent in a window: read from the Dagster
instance's records, so spend limits hold with MLflow tracking off.

Each attempt of a step leaves exactly one record of its spend: an ASSET_MATERIALIZATION
when it succeeds (its ``total_cost_usd`` is that attempt's own, not all attempts'), an
attempt AssetObservation (attempts.py) when it is retried, fails or is stopped. Summing
the two counts every attempt once, failed runs included. Both carry the workflow's pool
as a tag: a pool's limit reads every asset's records and keeps those of its pool (the
step context has no code location to list the pool's assets from under
``dg.materialize``, and an asset moved to another pool keeps its old records' pool).

Those records are written as attempts end; the spend journal (stores/spend_journal.py) adds what the
attempts still in flight have spent so far, read before each LLM call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg
from pydantic import TypeAdapter, ValidationError

from agents_pipelines.errors import AgentsPipelinesError
from agents_pipelines.orchestration.attempts import ATTEMPT_TAG, POOL_TAG
from agents_pipelines.orchestration.metadata_sets import AttemptMetadata, UsageMetadata
from agents_pipelines.orchestration.stores.spend_journal import AttemptKey, Journal, open_journal
from agents_pipelines.registry import ProcessRegistry
from agents_pipelines.settings import PoolSpendLimits, settings
from agents_pipelines.spec import Workflow
from agents_pipelines.usage import SpendLimit, SpendLimits, round_usd
from agents_pipelines.usage.spend_limits import SpendJournal, utc_now

_PAGE = 1_000  # records per query; a day of a busy schedule is a few pages
_POOL_LIMITS = TypeAdapter(PoolSpendLimits)


@dataclass(frozen=True)
class AttemptJournal:
    """This attempt's row in the spend journal."""

    journal: Journal
    key: AttemptKey

    def recorded(self) -> None:
        """Call once the attempt's Dagster record is stored (the step's generator resumes
        after Dagster has stored the event it yielded)."""
        self.journal.recorded(self.key)


@contextmanager
def attempt_journal(
    context: dg.AssetExecutionContext,
    workflow: Workflow,
    pool_limits: PoolSpendLimits,
    registry: ProcessRegistry | None = None,
) -> Iterator[AttemptJournal | None]:
    """The journal row of this attempt; None (no store opened) when no limit applies.
    ``registry`` keeps the store's connection (default: the process's)."""
    if not _limits(workflow, pool_limits):
        yield None
        return
    with open_journal(context.instance, registry) as journal:
        journal.prune_now_and_then()
        yield AttemptJournal(journal, AttemptKey.of(context, workflow.spec.orchestration.pool))


def run_spend_limits(
    context: dg.AssetExecutionContext,
    workflow: Workflow,
    pool_limits: PoolSpendLimits,
    now: datetime | None = None,
    journal: AttemptJournal | None = None,
) -> SpendLimits | None:
    """The workflow's own limits and its pool's, read against this instance's records
    (and the attempts in flight in ``journal``); None when neither sets any. ``now``
    fixes the clock (tests, a replay of a past day)."""
    limits = _limits(workflow, pool_limits)
    if not limits:
        return None
    read_at: list[float] = []  # when the records were first read: later records are not

    def spent_since(limit: SpendLimit, start: datetime) -> float:
        read_at[:] = read_at or [time.time()]
        instance = context.instance
        if limit.scope == "workflow":
            return round_usd(spent(instance, context.asset_key, start))
        keys = instance.get_asset_keys()
        return round_usd(sum(spent(instance, key, start, pool) for key in keys))

    pool = workflow.spec.orchestration.pool
    clock: Callable[[], datetime] = (lambda: now) if now is not None else utc_now
    in_flight = None
    if journal is not None:
        row, key = journal.journal, journal.key

        def others(limit: SpendLimit, start: datetime) -> float:
            return row.in_flight(key, limit.scope, start.timestamp(), (read_at or [time.time()])[0])

        in_flight = SpendJournal(others, lambda usd: row.write(key, usd))
    return SpendLimits(tuple(limits), spent_since, clock, in_flight)


def _limits(workflow: Workflow, pool_limits: PoolSpendLimits) -> list[SpendLimit]:
    pool = workflow.spec.orchestration.pool
    limits = [
        SpendLimit("workflow", workflow.name, limit.per, limit.max_cost_usd, limit.timezone)
        for limit in workflow.spec.orchestration.spend_limits
    ]
    return limits + [
        SpendLimit("pool", pool, per, usd) for per, usd in sorted(pool_limits.get(pool, {}).items())
    ]


def pool_limits(configured: Mapping[str, Mapping[str, float]] | None) -> PoolSpendLimits:
    """The resource's pool limits when set, else AGENTS_PIPELINES_POOL_SPEND_LIMITS."""
    if configured is None:
        return settings().pool_spend_limits
    try:
        return _POOL_LIMITS.validate_python(configured)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != '[key]')}: {e['msg']}"
            for e in exc.errors()
        )
        raise AgentsPipelinesError(
            f"WorkflowRunner.pool_spend_limits is not valid ({problems}). Fix: map pool "
            'names to USD per day and/or month, e.g. {"gemini": {"day": 20}}.'
        ) from None


def spent(
    instance: dg.DagsterInstance, key: dg.AssetKey, start: datetime, pool: str | None = None
) -> float:
    """USD recorded for ``key`` since ``start``: its materializations and attempts (only
    those of ``pool``, when given)."""
    records_filter = dg.AssetRecordsFilter(asset_key=key, after_timestamp=start.timestamp())
    total = 0.0
    for fetch in (instance.fetch_materializations, instance.fetch_observations):
        cursor = None
        while True:
            page = fetch(records_filter, limit=_PAGE, cursor=cursor)
            total += sum(_cost(record.event_log_entry, pool) for record in page.records)
            if not page.has_more:
                break
            cursor = page.cursor
    return total


def _cost(entry: Any, pool: str | None) -> float:
    event = entry.asset_materialization or entry.asset_observation
    if event is None:
        return 0.0
    tags = event.tags or {}
    if entry.asset_observation is not None and ATTEMPT_TAG not in tags:
        return 0.0  # some other observation of the asset, not an attempt's spend
    if pool is not None and tags.get(POOL_TAG) != pool:
        return 0.0
    figures = UsageMetadata if entry.asset_observation is None else AttemptMetadata
    return figures.extract(event.metadata).total_cost_usd or 0.0
