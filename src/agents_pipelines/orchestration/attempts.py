"""Step attempts: when to retry one, how long to wait, and what each attempt spent.

The asset asks Dagster for a retry itself (``RetryRequested``) rather than through a
``RetryPolicy`` on the op: Dagster 1.13 turns an interrupted step into a retry when the op
has a policy, so stopping a run would start it again and pay Gemini again.

Every attempt pays for its calls, and Dagster's STEP_UP_FOR_RETRY event carries no
metadata. So an attempt that is retried leaves an AssetObservation of its spend in the
run's event log; a later attempt reads them back, and the run's final failure (or its
success after a retry) reports every attempt and their total.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg

from agents_pipelines.orchestration.metadata_sets import AttemptMetadata
from agents_pipelines.spec.models import RetryConfig
from agents_pipelines.usage import UsageSummary

ATTEMPT_TAG = "agents_pipelines/attempt"
# The workflow's pool, on every record of spend: a pool's spend limit finds them by it.
POOL_TAG = "agents_pipelines/pool"
ERROR_CHARS = 300  # an error's text in the attempts table; the full text is in the log
# Starts of one attempt: a Celery worker that dies under a step (kill -9, out of memory, its
# machine lost) hands the step back to the broker (deploy/celery/celery.yaml), which
# delivers it again, so one attempt may start twice. A step that kills its process every
# time would otherwise start again for good, paying each time for the node it dies in.
MAX_STARTS = 3
_STARTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED}
_RETRIED = dg.DagsterEventType.STEP_UP_FOR_RETRY

_BACKOFF = {"exponential": dg.Backoff.EXPONENTIAL, "linear": dg.Backoff.LINEAR}
_JITTER = {"full": dg.Jitter.FULL, "plus_minus": dg.Jitter.PLUS_MINUS, "none": None}


@dataclass(frozen=True)
class Attempt:
    """One attempt of a step: how it ended and what it spent."""

    number: int  # 1 for the first attempt
    outcome: str  # "succeeded", "retried", "failed" or "stopped"
    llm_calls: int
    total_tokens: int
    cost_usd: float
    error: str = ""

    @classmethod
    def of(cls, number: int, outcome: str, usage: UsageSummary | None, error: str = "") -> Attempt:
        usage = usage or UsageSummary()
        return cls(
            number,
            outcome,
            usage.llm_calls,
            usage.tokens.total,
            usage.total_cost_usd,
            error[:ERROR_CHARS],
        )


def attempt_number(context: dg.AssetExecutionContext) -> int:
    return context.retry_number + 1


def may_retry(config: RetryConfig, attempt: int) -> bool:
    """Whether attempt ``attempt`` (1-based) may be followed by another."""
    return attempt <= config.max_retries


def retry_delay(config: RetryConfig, attempt: int, retry_after_s: float | None) -> float:
    """Seconds to wait after attempt ``attempt``: Dagster's backoff and jitter for
    ``orchestration.retry``, and never less than the server's Retry-After."""
    policy = dg.RetryPolicy(
        delay=config.delay_s, backoff=_BACKOFF[config.backoff], jitter=_JITTER[config.jitter]
    )
    return max(float(policy.calculate_delay(attempt)), retry_after_s or 0.0, 0.0)


def observation(
    context: dg.AssetExecutionContext, attempt: Attempt, pool: str
) -> dg.AssetObservation:
    """The event that keeps the spend of an attempt that did not materialize (retried,
    failed or stopped) in the run's event log."""
    return dg.AssetObservation(
        asset_key=context.asset_key,
        partition=context.partition_key if context.has_partition_key else None,
        description=f"Attempt {attempt.number} {attempt.outcome}: {attempt.error}",
        metadata=AttemptMetadata(
            attempt=attempt.number,
            outcome=attempt.outcome,
            llm_calls=attempt.llm_calls,
            total_tokens=attempt.total_tokens,
            total_cost_usd=attempt.cost_usd,
            error=attempt.error,
        ).as_metadata(),
        tags={ATTEMPT_TAG: str(attempt.number), POOL_TAG: pool},
    )


def earlier_attempts(context: dg.AssetExecutionContext) -> list[Attempt]:
    """The attempts of this step before the current one, read from the run's event log
    (so they are found when each attempt runs in its own process, too)."""
    if context.retry_number == 0:
        return []  # the common case costs no query
    records = context.instance.all_logs(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION
    )
    found = _attempts(context, records)
    return [attempt for attempt in found if attempt.number < attempt_number(context)]


def unfinished_paid_attempt(context: dg.AssetExecutionContext) -> Attempt | None:
    """The last earlier attempt of this step that paid for LLM calls and did not
    materialize: in this run (a step retry), or in the nearest run it re-executes (the
    parent, or further up) that ran the step. Its checkpoint should be there to resume.
    None on a first attempt of a new run (no query made)."""
    for run_id in _runs_back(context):
        records = context.instance.all_logs(
            run_id,
            of_type={
                dg.DagsterEventType.ASSET_OBSERVATION,
                dg.DagsterEventType.ASSET_MATERIALIZATION,
            },
        )
        if any(_is_mine(context, record.asset_materialization) for record in records):
            return None  # it succeeded there: its thread was deleted, nothing to resume
        if attempts := _attempts(context, records):
            paid = [attempt for attempt in attempts if attempt.llm_calls]
            return paid[-1] if paid else None
    return None


_ANCESTORS = 10  # re-executions looked through for the step's last attempt


def _runs_back(context: dg.AssetExecutionContext) -> Iterator[str]:
    """This run when it retries the step, then the runs it re-executes, nearest first."""
    if context.retry_number:
        yield context.run.run_id
    parent = context.run.parent_run_id
    for _ in range(_ANCESTORS):
        if parent is None:
            return
        yield parent
        run = context.instance.get_run_by_id(parent)
        parent = run.parent_run_id if run is not None else None


def _is_mine(context: dg.AssetExecutionContext, event: Any) -> bool:
    """Whether an event of the log is about this step's asset and partition."""
    partition = context.partition_key if context.has_partition_key else None
    return event is not None and (event.asset_key, event.partition) == (
        context.asset_key,
        partition,
    )


def _attempts(context: dg.AssetExecutionContext, records: Iterable[Any]) -> list[Attempt]:
    """The attempts of this step that ``records`` (a run's event log) observed, in order."""
    found: dict[int, Attempt] = {}
    for record in records:
        seen = record.asset_observation
        if not _is_mine(context, seen) or ATTEMPT_TAG not in (seen.tags or {}):
            continue
        meta = AttemptMetadata.extract(seen.metadata)
        number = meta.attempt or 0
        found[number] = Attempt(
            number,
            meta.outcome or "",
            meta.llm_calls or 0,
            meta.total_tokens or 0,
            meta.total_cost_usd or 0.0,
            meta.error or "",
        )
    return [found[number] for number in sorted(found)]


def starts_of_this_attempt(context: dg.AssetExecutionContext) -> int:
    """How many times this attempt of the step has started, this start included: more than
    once when the process running it died and the broker delivered the step again."""
    step_key = context.get_step_execution_context().step.key
    records = context.instance.all_logs(context.run.run_id, of_type={*_STARTS, _RETRIED})
    starts = 0
    for record in records:
        if record.step_key != step_key or record.dagster_event is None:
            continue
        retried = record.dagster_event.event_type == _RETRIED
        starts = 0 if retried else starts + 1  # a retry is a new attempt
    return starts
