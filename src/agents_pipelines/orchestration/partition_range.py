"""Several partitions in one run (``orchestration.backfill``, Dagster's multi-run backfill
policy): each partition's graph runs as a workflow run of its own, ``max_concurrency`` at
once, in worker threads of the step. Each keeps what a run of one partition has: its
materialization metadata (``add_asset_metadata(..., partition_key=...)``), its MLflow run
and trace tagged with the partition, its checkpoint thread, its spend journal row and its
attempt records.

The step yields nothing until every partition has ended. When all succeeded, it yields one
materialization whose value maps each partition to its final state (the IO manager stores
each under its partition: range_io_manager.py). When some failed, each partition leaves an
attempt record of its spend, the failure lists every partition, and the partitions that
finished keep their checkpoint: a retry or a re-execution from failure takes their final
state without a call, and runs only the others.

A batch node's calls in all the range's partitions go in one Batch API job
(``SharedJobs``, llm.batch): each partition records its own share of it. With
``max_concurrency`` below the range's size, a partition whose calls wait on the job gives
its slot to one not started yet, and takes a slot again once answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg

from agents_pipelines.errors import BudgetExceededError, WorkflowRunError
from agents_pipelines.llm.batch_hooks import SharedJobs
from agents_pipelines.orchestration.attempts import (
    POOL_TAG,
    Attempt,
    attempt_number,
    earlier_attempts,
    may_retry,
    observation,
    retry_delay,
)
from agents_pipelines.orchestration.checks import budget_result, eval_results, output_results
from agents_pipelines.orchestration.inputs import resolve_inputs
from agents_pipelines.orchestration.metadata import attempts_metadata, run_metadata
from agents_pipelines.orchestration.metadata_sets import RangeMetadata, UsageMetadata
from agents_pipelines.orchestration.spend_windows import AttemptJournal, attempt_journal
from agents_pipelines.orchestration.stores import checkpoints
from agents_pipelines.redaction import redact
from agents_pipelines.registry import ProcessRegistry
from agents_pipelines.settings import PoolSpendLimits
from agents_pipelines.spec import Workflow
from agents_pipelines.spec.batch_rules import has_batch_calls
from agents_pipelines.usage import UsageSummary, round_usd

if TYPE_CHECKING:
    from agents_pipelines.workflow_run import RunResult

_COLUMNS = [
    dg.TableColumn("partition", "string"),
    dg.TableColumn(
        "status",
        "string",
        description="finished (kept: a retry does not call it again), or failed",
    ),
    dg.TableColumn("llm_calls", "int"),
    dg.TableColumn("total_tokens", "int"),
    dg.TableColumn("cost_usd", "float"),
    dg.TableColumn("error", "string"),
]
_ERROR_CHARS = 300


class PartitionContext(dg.AssetExecutionContext):
    """The step's context as one partition of its range sees it: ``partition_key`` is that
    partition's, so the checkpoint thread, the MLflow tags, the journal row and the attempt
    records that the one-partition code derives from the context are that partition's."""

    def __init__(self, context: dg.AssetExecutionContext, key: str):
        super().__init__(context.op_execution_context)
        self._key = key

    @property
    def partition_key(self) -> str:
        return self._key

    @property
    def has_partition_key(self) -> bool:
        return True


@dataclass(frozen=True)
class PartitionRun:
    """How one partition's workflow run ended: ``result`` when it succeeded, ``error``
    (carrying the spend) when it failed."""

    key: str
    usage: UsageSummary
    journal: AttemptJournal | None
    result: RunResult | None = None
    error: WorkflowRunError | None = None


@dataclass(frozen=True)
class RangeStep:
    """What the step hands the range: its context, the workflow, and how to run one
    partition (the runner's, in a worker thread, as a member of the range's SharedJobs)."""

    context: dg.AssetExecutionContext
    workflow: Workflow
    pool_limits: PoolSpendLimits
    registry: ProcessRegistry
    run_one: Callable[
        [PartitionContext, dict[str, Any], AttemptJournal | None, SharedJobs], PartitionRun
    ]


def materialize_range(
    step: RangeStep, config: Mapping[str, Any], upstream: Mapping[str, Any]
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetObservation]:
    context, workflow = step.context, step.workflow
    parts = [PartitionContext(context, key) for key in context.partition_keys]
    backfill = workflow.spec.orchestration.backfill
    at_once = min(backfill.max_concurrency if backfill else 1, len(parts))
    with ExitStack() as journals:
        # Opened here, on the step's thread: each row is marked once its record is stored.
        opened = [
            journals.enter_context(attempt_journal(part, workflow, step.pool_limits, step.registry))
            for part in parts
        ]
        runs = _run_all(step, parts, opened, at_once, config, upstream)
        if failed := [run for run in runs if run.error is not None]:
            yield from _fail(step, parts, runs, failed)
            return  # unreachable: _fail raises
        yield from _materialize(step, parts, runs)


def _run_all(
    step: RangeStep,
    parts: Sequence[PartitionContext],
    journals: Sequence[AttemptJournal | None],
    at_once: int,
    config: Mapping[str, Any],
    upstream: Mapping[str, Any],
) -> list[PartitionRun]:
    spec = step.workflow.spec
    keys = [part.partition_key for part in parts]
    if has_batch_calls(spec) and at_once < len(parts):
        # Every partition's batch calls go in one job: each partition has a thread, and
        # `at_once` slots bound the ones running; a partition waiting on the job gives
        # its slot to one not started yet (SharedJobs).
        shared, threads = SharedJobs(keys, slots=at_once), len(parts)
    else:
        # The partitions the pool starts at once are expected at the batch nodes from
        # the start: one that is slower to reach it is waited for.
        shared, threads = SharedJobs(keys[:at_once]), at_once
    with ThreadPoolExecutor(threads, thread_name_prefix="partition") as pool:
        futures = [
            pool.submit(
                step.run_one,
                part,
                resolve_inputs(
                    spec, part.partition_key, config, _upstream_of(step, upstream, part)
                ),
                journal,
                shared,
            )
            for part, journal in zip(parts, journals, strict=True)
        ]
        try:
            return [future.result() for future in futures]
        except BaseException:
            # A stop, or a partition that could not start (bad inputs, a damaged store):
            # the partitions not yet started never start. Those in flight run to their end
            # as the pool shuts down (their spend reaches MLflow, not the attempt records).
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _upstream_of(
    step: RangeStep, upstream: Mapping[str, Any], part: PartitionContext
) -> dict[str, Any]:
    """The upstream states of one partition: an upstream workflow with the same
    partitions (dependency_rules) comes in as ``{partition: state}`` over the range."""
    picked = {}
    for name, value in upstream.items():
        ranged = len(_input_keys(step.context, name)) > 1 and isinstance(value, Mapping)
        picked[name] = value.get(part.partition_key) if ranged else value
    return picked


def _input_keys(context: dg.AssetExecutionContext, name: str) -> Sequence[str]:
    try:
        return context.asset_partition_keys_for_input(name)
    except dg.DagsterInvariantViolationError:  # an unpartitioned upstream workflow
        return ()


def _materialize(
    step: RangeStep, parts: Sequence[PartitionContext], runs: Sequence[PartitionRun]
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    context, workflow = step.context, step.workflow
    results: list[RunResult] = [run.result for run in runs if run.result is not None]
    for part, result in zip(parts, results, strict=True):
        _log(part, result)
        metadata = run_metadata(result)
        if (attempt := attempt_number(context)) > 1:
            this = Attempt.of(attempt, "succeeded", result.usage)
            metadata |= attempts_metadata([*earlier_attempts(part), this])
        context.add_asset_metadata(metadata, partition_key=part.partition_key)
    pool = {POOL_TAG: workflow.spec.orchestration.pool}
    value = {part.partition_key: result.state for part, result in zip(parts, results, strict=True)}
    yield dg.MaterializeResult(value=value, tags=pool)
    for run in runs:
        if run.journal is not None:
            run.journal.recorded()
    for part in parts:  # materialized: nothing is left to resume
        _forget(step, part)
    yield from _checks(
        {
            run.key: [
                *filter(None, [budget_result(workflow, result.usage, result.spend_windows)]),
                *output_results(workflow, result.state),
                *eval_results(result.verdicts),
            ]
            for run, result in zip(runs, results, strict=True)
        }
    )


def _log(part: PartitionContext, result: RunResult) -> None:
    key = part.partition_key
    if result.resume_note is not None and result.resume_note not in result.warnings:
        part.log.info(f"{key}: {result.resume_note}")
    part.log.info(
        f"{result.workflow} {key}: {result.usage.describe_spend()} "
        f"(backend {result.backend.value}, {result.duration_s:.2f} s)"
    )
    for warning in result.warnings:
        part.log.warning(redact(f"{key}: {warning}"))


def _forget(step: RangeStep, part: PartitionContext) -> None:
    with checkpoints.checkpointing(part, step.workflow, step.registry) as kept:
        if kept is not None:
            kept.saver.delete_thread(kept.thread_id)


def _checks(
    by_partition: Mapping[str, Sequence[dg.AssetCheckResult]],
) -> Iterator[dg.AssetCheckResult]:
    """One result per check for the run (Dagster 1.13 checks a step, not a partition):
    passed when it passed for every partition, with the first failing partition's figures
    (else the first partition's) and the partitions it failed for."""
    names: dict[str, list[tuple[str, dg.AssetCheckResult]]] = {}
    for key, results in by_partition.items():
        for result in results:
            names.setdefault(result.check_name or "", []).append((key, result))
    for name, found in names.items():
        failed = [key for key, result in found if not result.passed]
        shown = next((result for _, result in found if not result.passed), found[0][1])
        extra = RangeMetadata(
            failed_partitions=", ".join(failed) or None, checked_partitions=len(found)
        )
        yield dg.AssetCheckResult(
            check_name=name,
            passed=not failed,
            metadata={**shown.metadata, **extra.as_metadata()},
            severity=shown.severity,
            description=(
                f"Failed for {len(failed)} of {len(found)} partitions." if failed else None
            ),
        )


def _fail(
    step: RangeStep,
    parts: Sequence[PartitionContext],
    runs: Sequence[PartitionRun],
    failed: Sequence[PartitionRun],
) -> Iterator[dg.AssetObservation | dg.AssetCheckResult]:
    """Record every partition's spend (an attempt record each: the spend limits count
    them), then ask for a retry when every failure is transient and retries are left,
    else fail with each partition's status, calls and cost."""
    context, workflow = step.context, step.workflow
    policy = workflow.spec.orchestration.retry
    attempt = attempt_number(context)
    errors = [run.error for run in failed if run.error is not None]
    retry = all(error.transient for error in errors) and may_retry(policy, attempt)
    outcome = "retried" if retry else "failed"
    over_budget = {
        run.key: [check]
        for run in failed
        if isinstance(run.error, BudgetExceededError)
        and (check := budget_result(workflow, run.usage)) is not None
    }
    yield from _checks(over_budget)
    for part, run in zip(parts, runs, strict=True):
        error = redact(str(run.error)) if run.error is not None else ""
        this = Attempt.of(attempt, "finished" if run.error is None else outcome, run.usage, error)
        yield observation(part, this, workflow.spec.orchestration.pool)
        if run.journal is not None:
            run.journal.recorded()
    description = _describe(workflow, runs, failed, attempt)
    metadata = _range_metadata(runs)
    if not retry:
        raise dg.Failure(description=description, metadata=metadata, allow_retries=False)
    delay = max(
        retry_delay(policy, attempt, getattr(error, "retry_after_s", None)) for error in errors
    )
    context.log.warning(
        f"Attempt {attempt} of {policy.max_retries + 1} failed for a transient reason in "
        f"{len(failed)} partition(s); retrying them in {delay:.1f} s. {description}"
    )
    cause = dg.Failure(description=description, metadata=metadata, allow_retries=False)
    raise dg.RetryRequested(max_retries=policy.max_retries, seconds_to_wait=delay) from cause


def _describe(
    workflow: Workflow, runs: Sequence[PartitionRun], failed: Sequence[PartitionRun], attempt: int
) -> str:
    first = failed[0]
    finished = len(runs) - len(failed)
    return redact(
        f"Workflow {workflow.name}: {len(failed)} of {len(runs)} partitions failed in attempt "
        f"{attempt} (first: {first.key}: {first.error}). The {finished} that finished are "
        "kept: a retry or a re-execution from failure reuses them without calling the model "
        f"again. This attempt spent ${round_usd(sum(r.usage.total_cost_usd for r in runs)):.6f} "
        f"over {sum(r.usage.llm_calls for r in runs)} LLM call(s)."
    )


def _range_metadata(runs: Sequence[PartitionRun]) -> dict[str, Any]:
    rows = [
        dg.TableRecord(
            {
                "partition": run.key,
                "status": "finished" if run.error is None else "failed",
                "llm_calls": run.usage.llm_calls,
                "total_tokens": run.usage.tokens.total,
                "cost_usd": run.usage.total_cost_usd,
                "error": redact(str(run.error))[:_ERROR_CHARS] if run.error is not None else "",
            }
        )
        for run in runs
    ]
    usage = UsageMetadata(
        total_tokens=sum(run.usage.tokens.total for run in runs),
        total_cost_usd=round_usd(sum(run.usage.total_cost_usd for run in runs)),
        llm_calls=sum(run.usage.llm_calls for run in runs),
    )
    table = dg.MetadataValue.table(rows, dg.TableSchema(_COLUMNS))
    failed = ", ".join(run.key for run in runs if run.error is not None)
    return (
        usage.as_metadata()
        | RangeMetadata(partitions=table, failed_partitions=failed).as_metadata()
    )
