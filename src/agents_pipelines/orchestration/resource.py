"""The resource that runs workflows for Dagster assets.

Deployment settings come from here and from the environment, never from the YAML: the
backend (AGENTS_PIPELINES_LLM_BACKEND), the Gemini key (GOOGLE_API_KEY, read by the
Gemini backend itself, so it never passes through Dagster config), the MLflow UI address,
the pools' spend limits (AGENTS_PIPELINES_POOL_SPEND_LIMITS).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import dagster as dg
from pydantic import PrivateAttr

from agents_pipelines.errors import (
    AgentsPipelinesError,
    BudgetExceededError,
    CheckpointKeyError,
    InvalidInputsError,
    StoreDamagedError,
    WorkflowRunError,
)
from agents_pipelines.llm import Backend, resolve_backend
from agents_pipelines.llm.batch_hooks import SharedJobs
from agents_pipelines.orchestration.attempts import (
    MAX_STARTS,
    POOL_TAG,
    Attempt,
    attempt_number,
    earlier_attempts,
    may_retry,
    observation,
    retry_delay,
    starts_of_this_attempt,
)
from agents_pipelines.orchestration.checks import budget_result, eval_results, output_results
from agents_pipelines.orchestration.inputs import resolve_inputs
from agents_pipelines.orchestration.metadata import attempts_metadata, run_metadata, usage_metadata
from agents_pipelines.orchestration.partition_range import (
    PartitionContext,
    PartitionRun,
    RangeStep,
    materialize_range,
)
from agents_pipelines.orchestration.spend_windows import (
    AttemptJournal,
    attempt_journal,
    pool_limits,
    run_spend_limits,
)
from agents_pipelines.orchestration.stores import checkpoints
from agents_pipelines.redaction import masking, redact
from agents_pipelines.registry import ProcessRegistry, process_registry
from agents_pipelines.settings import PoolSpendLimits, settings
from agents_pipelines.spec import Workflow
from agents_pipelines.usage import SpendLimits, UsageSummary, round_usd

if TYPE_CHECKING:  # the graph package imports LangGraph: not at code-location load
    from agents_pipelines.graph.resume import Checkpointing
    from agents_pipelines.workflow_run import RunOptions

StepEvent = dg.MaterializeResult | dg.AssetCheckResult | dg.AssetObservation

# How a run is stopped (Terminate in the UI, SIGTERM, Ctrl-C) as it reaches the step.
_STOPS = (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)


class WorkflowRunner(dg.ConfigurableResource):
    """Runs a workflow and turns the result into a Dagster materialization and checks."""

    # An enum rather than a Literal: Dagster config cannot express an optional Literal.
    # "gemini", "simulated", "record" or "replay" (a typo is refused as the resource is
    # built); None: the environment decides. Record and replay read AGENTS_PIPELINES_CASSETTE.
    llm_backend: Backend | None = None
    mlflow_ui_url: str | None = None  # base URL of the MLflow UI for run links
    simulated_latency_s: float | None = None
    # USD per day and/or month (UTC) by pool, e.g. {"gemini": {"day": 20}}, over every
    # workflow in the pool; None: AGENTS_PIPELINES_POOL_SPEND_LIMITS.
    pool_spend_limits: dict[str, dict[str, float]] | None = None
    # An ISO time that spend limits judge their day or month by, instead of the clock (a
    # replay of a past day, tests); None: now.
    spend_limits_now: str | None = None

    # What the runs of this resource reuse (compiled graphs, store connections, the
    # development cache): the process's registry, which a test resets with one call.
    _registry: ProcessRegistry = PrivateAttr(default_factory=process_registry)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Dagster builds a run's resources in the run's process before its steps claim pool
        # slots. A run launched ahead of the free slots (op_granularity_run_buffer in the
        # shipped dagster.yaml) imports the step's libraries here, while other runs hold the
        # slots, instead of at the step's start with a slot held (README "Backfills through
        # the daemon").
        _import_run_libraries(self.llm_backend)

    def materialize(
        self, context: dg.AssetExecutionContext, workflow: Workflow, upstream: dict[str, Any]
    ) -> Iterator[StepEvent]:
        _refuse_a_step_that_keeps_dying(context)
        config = dict(context.op_execution_context.op_config or {})
        now = _fixed_time(self.spend_limits_now)
        limits_by_pool = pool_limits(self.pool_spend_limits)
        pii = workflow.spec.config.observability.mlflow.pii()
        if context.has_partition_key_range:  # several partitions (orchestration.backfill)
            with masking(pii):  # redact_pii: each partition's metadata and failure too
                yield from self._materialize_range(
                    context, workflow, config, upstream, now, limits_by_pool
                )
            return
        partition = context.partition_key if context.has_partition_key else None
        inputs = resolve_inputs(workflow.spec, partition, config, upstream)
        try:
            # Runs in flight at once see each other's spend through the journal; each
            # attempt marks its row as its record (materialization or observation) is stored.
            # redact_pii: the metadata, checks, logs and failures below are masked too.
            with (
                masking(pii),
                attempt_journal(context, workflow, limits_by_pool, self._registry) as journal,
            ):
                yield from self._run(context, workflow, inputs, now, limits_by_pool, journal)
        except (StoreDamagedError, CheckpointKeyError) as exc:  # before any call: says what to do
            description = f"Workflow {workflow.name} ({workflow.path}): {exc}"
            raise dg.Failure(description=redact(description), allow_retries=False) from None

    def _materialize_range(
        self,
        context: dg.AssetExecutionContext,
        workflow: Workflow,
        config: dict[str, Any],
        upstream: dict[str, Any],
        now: datetime | None,
        limits_by_pool: PoolSpendLimits,
    ) -> Iterator[StepEvent]:
        def run_one(
            part: PartitionContext,
            inputs: dict[str, Any],
            journal: AttemptJournal | None,
            shared: SharedJobs,
        ) -> PartitionRun:
            with shared.member(part.partition_key):
                return self._run_partition(
                    part, workflow, inputs, now, limits_by_pool, journal, shared
                )

        step = RangeStep(context, workflow, limits_by_pool, self._registry, run_one)
        try:
            yield from materialize_range(step, config, upstream)
        except (StoreDamagedError, InvalidInputsError) as exc:
            description = f"Workflow {workflow.name} ({workflow.path}): {exc}"
            raise dg.Failure(description=redact(description), allow_retries=False) from None

    def _run_partition(
        self,
        context: PartitionContext,
        workflow: Workflow,
        inputs: dict[str, Any],
        now: datetime | None,
        limits_by_pool: PoolSpendLimits,
        journal: AttemptJournal | None,
        shared: SharedJobs,
    ) -> PartitionRun:
        """One partition of a range run, in a worker thread: its workflow run, whose
        outcome the step reports once every partition has ended. Its batch calls go in
        the range's jobs (``shared``). Its checkpoint thread
        is kept when it succeeds, so that a retry of the step takes its final state
        rather than calling it again; the step deletes it once materialized."""
        from agents_pipelines.workflow_run import WorkflowRun  # heavy: not at load

        limits = run_spend_limits(context, workflow, limits_by_pool, now, journal)
        with checkpoints.checkpointing(
            context, workflow, self._registry, keep_finished=True
        ) as checkpointing:
            options = self._options(context, checkpointing, limits)
            options = replace(options, shared_jobs=(shared, context.partition_key))
            run = WorkflowRun(workflow, options)
            try:
                result = run.execute(inputs)
            except WorkflowRunError as exc:
                spent = exc.usage or UsageSummary()
                return PartitionRun(context.partition_key, spent, journal, error=exc)
        return PartitionRun(context.partition_key, result.usage, journal, result=result)

    def _options(
        self,
        context: dg.AssetExecutionContext,
        checkpointing: Checkpointing | None,
        limits: SpendLimits | None,
    ) -> RunOptions:
        from agents_pipelines.workflow_run import RunOptions  # heavy: not at load

        return RunOptions(
            backend=self.llm_backend,
            tags=_mlflow_tags(context),
            mlflow_ui_url=self.mlflow_ui_url,
            simulated_latency_s=self.simulated_latency_s,
            checkpointing=checkpointing,
            spend_limits=limits,
            # Beside the checkpoints: the instance's storage folder, shared by its runs.
            cache_dir=Path(context.instance.storage_directory()),
            registry=self._registry,
            progress=context.log.info,  # batch jobs' state, in the run's log
        )

    def _run(
        self,
        context: dg.AssetExecutionContext,
        workflow: Workflow,
        inputs: dict[str, Any],
        now: datetime | None,
        limits_by_pool: PoolSpendLimits,
        journal: AttemptJournal | None,
    ) -> Iterator[StepEvent]:
        from agents_pipelines.workflow_run import WorkflowRun  # heavy: not at load

        limits = run_spend_limits(context, workflow, limits_by_pool, now, journal)
        run: WorkflowRun | None = None
        try:
            with checkpoints.checkpointing(context, workflow, self._registry) as checkpointing:
                run = WorkflowRun(workflow, self._options(context, checkpointing, limits))
                result = run.execute(inputs)
        except InvalidInputsError as exc:
            raise dg.Failure(description=redact(str(exc)), allow_retries=False) from exc
        except WorkflowRunError as exc:
            spent = exc.usage if isinstance(exc, BudgetExceededError) else None
            if spent is not None and (check := budget_result(workflow, spent)) is not None:
                yield check
            yield from _retry_or_fail(context, workflow, exc, journal)
        except _STOPS as stop:
            spent = run.ending.usage if run is not None and run.ending is not None else None
            failure, this = _stopped(context, workflow, stop, spent)
            # The spend limits count a stopped run too.
            yield observation(context, this, workflow.spec.orchestration.pool)
            _recorded(journal)
            _stop_the_rest_of_the_run()
            raise failure from stop
        if result.resume_note is not None and result.resume_note not in result.warnings:
            context.log.info(result.resume_note)
        context.log.info(
            f"{workflow.name}: {result.usage.describe_spend()} "
            f"(backend {result.backend.value}, {result.duration_s:.2f} s)"
        )
        for warning in result.warnings:
            context.log.warning(redact(warning))
        metadata = run_metadata(result)
        if (attempt := attempt_number(context)) > 1:
            this = Attempt.of(attempt, "succeeded", result.usage)
            metadata |= attempts_metadata([*earlier_attempts(context), this])
        # The value goes to the IO manager, for downstream workflows and assets to load.
        pool = {POOL_TAG: workflow.spec.orchestration.pool}
        yield dg.MaterializeResult(value=result.state, metadata=metadata, tags=pool)
        _recorded(journal)
        if (check := budget_result(workflow, result.usage, result.spend_windows)) is not None:
            yield check
        yield from output_results(workflow, result.state)
        yield from eval_results(result.verdicts)


def _refuse_a_step_that_keeps_dying(context: dg.AssetExecutionContext) -> None:
    """Fail, before any call, a step whose process died under it MAX_STARTS times."""
    if settings().executor != "celery":
        return  # only a broker starts a step again: other runs skip the query (6.6 ms)
    if (starts := starts_of_this_attempt(context)) <= MAX_STARTS:
        return
    step = context.get_step_execution_context().step.key
    raise dg.Failure(
        description=(
            f"Step {step} of run {context.run.run_id} has started {starts} times: the "
            f"process running it died under each of the {starts - 1} starts before (kill -9, "
            "out of memory, a lost Celery worker) and the broker delivered the step again, "
            "so it is not run again. Find why its process dies (the workers' logs, the "
            "machine's memory), then re-execute the run from failure: it resumes after the "
            "nodes already finished."
        ),
        allow_retries=False,
    )


def _import_run_libraries(backend: Backend | None) -> None:
    """What a step imports on its first run: LangGraph and LangChain (the runner), MLflow's
    LangChain tracer (about 1 s of CPU, needed by every traced workflow), Gemini's client."""
    import agents_pipelines.runner  # noqa: F401  (and the run lifecycle, workflow_run)
    from agents_pipelines.tracking.client import import_tracer

    import_tracer()
    try:
        resolved = resolve_backend(backend)
    except AgentsPipelinesError:
        return  # the step reports it, as the run's failure
    if resolved is not Backend.SIMULATED:
        from agents_pipelines.llm.gemini import import_client

        import_client()


def _recorded(journal: AttemptJournal | None) -> None:
    if journal is not None:
        journal.recorded()


def _retry_or_fail(
    context: dg.AssetExecutionContext,
    workflow: Workflow,
    exc: WorkflowRunError,
    journal: AttemptJournal | None,
) -> Generator[dg.AssetObservation, None, NoReturn]:
    """Raise a retry of the step for a transient failure while retries are left (after
    recording this attempt's spend), else a failure that reports every attempt's spend.

    The last attempt fails with our own Failure, never Dagster's "Exceeded max_retries",
    which would carry no metadata."""
    policy = workflow.spec.orchestration.retry
    attempt = attempt_number(context)
    retry = exc.transient and may_retry(policy, attempt)
    reason = redact(str(exc))
    this = Attempt.of(attempt, "retried" if retry else "failed", exc.usage, reason)
    failure = _failure(context, reason, exc.usage, this)
    # Every attempt that does not materialize leaves its spend in the event log: a later
    # attempt reports it, and the spend limits (spend_windows.py) count it.
    yield observation(context, this, workflow.spec.orchestration.pool)
    _recorded(journal)
    if not retry:
        raise failure from exc
    delay = retry_delay(policy, attempt, getattr(exc, "retry_after_s", None))
    context.log.warning(
        f"Attempt {attempt} of {policy.max_retries + 1} failed for a transient reason; "
        f"retrying in {delay:.1f} s (orchestration.retry, and at least the server's "
        f"Retry-After). {reason}"
    )
    failure.__cause__ = exc
    # Should Dagster refuse the retry (retries disabled), it reports the cause's metadata.
    raise dg.RetryRequested(max_retries=policy.max_retries, seconds_to_wait=delay) from failure


def _stopped(
    context: dg.AssetExecutionContext,
    workflow: Workflow,
    stop: BaseException,
    usage: UsageSummary | None,
) -> tuple[dg.Failure, Attempt]:
    """The failure that ends a stopped step (never retried, with ``usage``, what it spent;
    None: stopped before the run started), and the attempt it ends."""
    attempt = attempt_number(context)
    spent = usage.describe_spend() if usage is not None else "nothing recorded"
    description = (
        f"Workflow {workflow.name} was stopped ({type(stop).__name__}) during attempt "
        f"{attempt}; a stopped run is not retried. Spent before stopping: {spent}."
    )
    this = Attempt.of(attempt, "stopped", usage)
    return _failure(context, description, usage, this), this


def _stop_the_rest_of_the_run() -> None:
    """Raise the stop again when the run's next step starts.

    Dagster delivers a stop to the running step once. Turned into a Failure (to carry the
    spend) it would end this step only, and an in-process run would go on to its other
    steps. Dagster keeps a stop that arrives between steps in a flag, and raises it as the
    next step starts: set that flag. With no next step, Dagster raises it as it tears
    down the run's resources, which ends the run as a stop does anyway. (A private detail
    of Dagster 1.13; if it moves, the run's other steps run, as they would without this.)
    """
    from agents_pipelines._compat.dagster import mark_stop_pending

    mark_stop_pending()


def _failure(
    context: dg.AssetExecutionContext,
    description: str,
    usage: UsageSummary | None,
    this: Attempt,
) -> dg.Failure:
    """A failure that is not retried, carrying this attempt's spend and every attempt's."""
    attempts = [*earlier_attempts(context), this]
    if len(attempts) > 1:
        description += (
            f" All {len(attempts)} attempts of this run together spent "
            f"${round_usd(sum(a.cost_usd for a in attempts)):.6f} over "
            f"{sum(a.llm_calls for a in attempts)} LLM call(s), "
            f"{sum(a.total_tokens for a in attempts)} tokens."
        )
    metadata = usage_metadata(usage or UsageSummary()) | attempts_metadata(attempts)
    return dg.Failure(description=description, metadata=metadata, allow_retries=False)


def _fixed_time(text: str | None) -> datetime | None:
    """``WorkflowRunner.spend_limits_now`` as a time; without an offset, UTC."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise AgentsPipelinesError(
            f"WorkflowRunner.spend_limits_now={text!r} is not an ISO time. Fix: write e.g. "
            "2026-11-26T09:00:00+00:00, or leave it unset to use the clock."
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _mlflow_tags(context: dg.AssetExecutionContext) -> dict[str, str]:
    tags = {
        "dagster.run_id": context.run.run_id,
        "dagster.asset_key": context.asset_key.to_user_string(),
        "dagster.job": context.run.job_name,
    }
    if context.has_partition_key:
        tags["dagster.partition"] = context.partition_key
    return tags
