"""Run one workflow: validate inputs, build the graph, run it under MLflow, report usage.

This is the path every entry point takes (the Dagster asset, the CLI, a notebook). It knows
nothing of Dagster; orchestration context arrives as plain MLflow tags.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents_pipelines.errors import (
    AgentsPipelinesError,
    BudgetExceededError,
    LlmCallError,
    SpendLimitError,
    StepLimitError,
    TrackingFailedWarning,
    WorkflowRunError,
)
from agents_pipelines.graph import (
    build_graph,
    event_loop,
    initial_state,
    map_node,
    node_spend,
    resume,
)
from agents_pipelines.graph.event_loop import AwaitableSaver
from agents_pipelines.graph.resume import Checkpointing
from agents_pipelines.llm import Backend, chat_model_factory, resolve_backend
from agents_pipelines.llm.cache import ResponseCache, open_cache
from agents_pipelines.llm.gemini import describe_failure, is_transient, retry_after_s
from agents_pipelines.redaction import redact_exception
from agents_pipelines.spec import Workflow
from agents_pipelines.state_evals import Verdict, evaluate
from agents_pipelines.tracking import (
    MlflowPriceTable,
    RunOutcome,
    RunRecorder,
    TrackingInfo,
)
from agents_pipelines.usage import Budget, SpendLimits, UsageLedger, UsageSummary, WindowSpend
from agents_pipelines.usage.budget import NextPrompt
from agents_pipelines.usage.spend_limits import SpendJournal, first_reached

__all__ = ["Checkpointing", "RunResult", "TrackingFailedWarning", "run_workflow", "spent_before"]


# Where the development cache lives outside Dagster (the CLI, a notebook).
DEFAULT_CACHE_DIR = Path(".agents_pipelines")

# The attribute that carries the spend on an interruption that run_workflow lets through.
_SPEND_ATTRIBUTE = "agents_pipelines_spent"


@dataclass(frozen=True)
class RunResult:
    workflow: str
    state: dict[str, Any]
    usage: UsageSummary
    node_runs: tuple[str, ...]
    duration_s: float
    backend: Backend
    tracking: TrackingInfo | None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # The spend limits' windows, with what earlier runs had spent in them at the start.
    spend_windows: tuple[WindowSpend, ...] = ()
    resume_note: str | None = None  # whether and how the run resumed an earlier attempt
    verdicts: tuple[Verdict, ...] = ()  # the evals' verdicts on the final state, in file order
    cache_note: str | None = None  # a damaged development cache was set aside and made anew

    @property
    def node_count(self) -> int:
        return len(self.node_runs)


def run_workflow(
    workflow: Workflow,
    inputs: Mapping[str, Any] | None = None,
    *,
    backend: Backend | str | None = None,
    tags: Mapping[str, str] | None = None,
    mlflow_ui_url: str | None = None,
    simulated_latency_s: float | None = None,
    spend_limits: SpendLimits | None = None,
    cache_dir: Path | None = None,
    checkpointing: Checkpointing | None = None,
    evals: bool = True,
    assess: bool = True,
) -> RunResult:
    """Run ``workflow`` once. Bad inputs raise InvalidInputsError before any LLM call;
    a failed run raises WorkflowRunError carrying the spend so far.

    The workflow's ``evals`` run on the final state, inside the run's trace and ledger:
    their verdicts are ``RunResult.verdicts``, each logged as an MLflow assessment on the
    trace; judge calls count in the run's figures and against its budget and spend limits.
    ``evals=False`` skips them (for a caller that runs ``state_evals.evaluate`` itself);
    ``assess=False`` keeps them off the trace (``agents-pipelines eval`` hands the verdicts
    to ``mlflow.genai.evaluate`` as scorers, which logs them once).

    ``spend_limits`` (given by an orchestrator that keeps records of earlier runs) are
    read once here: a window already spent raises SpendLimitError before the run starts,
    and one that this run's calls fill stops it before its next call.

    With ``config.execution.cache`` set, replies are cached in ``cache_dir`` (the Dagster
    asset passes its instance's storage folder), by default ``.agents_pipelines/`` in the
    current directory.

    With ``checkpointing`` the graph is checkpointed in that thread, and an unfinished
    checkpoint of the same workflow version is resumed (graph/resume.py); a run that
    succeeds clears its thread. Without it (the default) nothing is checkpointed."""
    spec = workflow.spec
    state = initial_state(spec, inputs or {})
    windows = spend_limits.open() if spend_limits is not None else ()
    journal = spend_limits.journal if spend_limits is not None and windows else None
    if (reached := first_reached(windows, UsageSummary(), journal)) is not None:
        window, in_flight = reached
        message = window.stop_message(workflow.name, UsageSummary(), in_flight)
        raise SpendLimitError(message, UsageSummary())
    chosen = resolve_backend(backend.value if isinstance(backend, Backend) else backend)
    cache = _cache(workflow, cache_dir, chosen)
    cache_note = cache.take_recovery_note() if cache is not None else None
    models = chat_model_factory(chosen, simulated_latency_s)
    graph = build_graph(spec, models, cache)
    run_version = resume.version(workflow.version_sha256(), state)
    start = resume.Start(state)
    on_event_loop = map_node.has_map(spec)
    awaitable: AwaitableSaver | None = None
    if checkpointing is not None:
        resume.redact_errors(checkpointing.saver)
        saver = checkpointing.saver
        awaitable = AwaitableSaver(saver) if on_event_loop else None
        graph = graph.copy({"checkpointer": awaitable or saver})
        start = resume.start(graph, checkpointing, state, run_version)
    pricer = MlflowPriceTable(spec.config.pricing)
    ledger = UsageLedger(
        pricer,
        keep_text=spec.config.observability.mlflow.artifact_level == "full",
        before_call=_guard(workflow, windows, journal),
        after_call=_journal_writer(journal),
    )
    ledger.resumed = start.resumed
    config = _run_config(ledger, spec.config.execution.max_steps, checkpointing, run_version)
    recorder = RunRecorder.start(workflow, chosen.value, tags or {}, mlflow_ui_url)
    started = time.perf_counter()
    node_runs: list[str] = []
    try:
        with recorder.traced(state, pricer, ledger.summary):
            if on_event_loop:  # a map node's items: awaited calls, no thread each
                stream = _astream(graph, start.input, state, config, node_runs, awaitable)
                final = event_loop.run(stream, config["configurable"][map_node.PASSES_KEY].stop)
            else:
                final = _stream(graph, start.input, state, config, node_runs)
            # In the trace and the ledger: the judges' spans, cost and budget are the run's.
            verdicts: tuple[Verdict, ...] = ()
            if evals:
                verdicts = tuple(evaluate(workflow, final, model_factory=models, ledger=ledger))
                if assess:
                    recorder.assess(verdicts)
    except BaseException as caught:
        exc = map_node.first_error(caught)
        if not isinstance(exc, Exception):  # a stop: the calls it cut short count
            ledger.cancel_in_flight()
        # A provider's error may repeat the API key: the chain that Dagster stores and
        # tracebacks print carries the redacted text only.
        redact_exception(exc)
        failure = _as_run_error(exc, workflow, ledger.summary())
        elapsed = time.perf_counter() - started
        recorder.finish(RunOutcome(state, None, ledger.summary(), len(node_runs), elapsed, failure))
        if failure is not exc:
            raise failure from exc
        if not isinstance(exc, Exception):
            setattr(exc, _SPEND_ATTRIBUTE, ledger.summary())
        if exc is not caught:
            raise exc from None
        raise
    duration = time.perf_counter() - started
    outcome = RunOutcome(state, final, ledger.summary(), len(node_runs), duration)
    recorder.finish(outcome)
    if checkpointing is not None:
        checkpointing.saver.delete_thread(checkpointing.thread_id)  # nothing left to resume
    skipped = outcome.usage.skipped_items_warning()
    return RunResult(
        spec.flow.name,
        final,
        outcome.usage,
        tuple(node_runs),
        duration,
        chosen,
        recorder.info(),
        (
            *recorder.notes,
            *([skipped] if skipped else []),
            *_warning(start),
            *([cache_note] if cache_note else []),
        ),
        windows,
        start.note,
        verdicts,
        cache_note,
    )


def _warning(start: resume.Start) -> list[str]:
    return [start.note] if start.warning and start.note is not None else []


def spent_before(stop: BaseException) -> UsageSummary | None:
    """What a run had spent when ``stop`` ended it: an interruption that ``run_workflow``
    lets through as it came (KeyboardInterrupt, SystemExit, an orchestrator's stop), so
    that whoever handles it can still report the spend. None for any other exception."""
    spent = getattr(stop, _SPEND_ATTRIBUTE, None)
    return spent if isinstance(spent, UsageSummary) else None


def _run_config(
    ledger: UsageLedger, max_steps: int, checkpointing: Checkpointing | None, run_version: str
) -> dict[str, Any]:
    """The LangGraph config of one run: the ledger (as callback, and for the nodes to claim
    their spend), the map nodes' passes, and the checkpoint thread."""
    configurable: dict[str, Any] = {
        node_spend.LEDGER_KEY: ledger,
        map_node.PASSES_KEY: map_node.Passes(),
    }
    if checkpointing is not None:
        configurable |= checkpointing.config()["configurable"]
    return {
        "callbacks": [ledger],
        "recursion_limit": max_steps,
        "configurable": configurable,
        "metadata": {resume.VERSION_KEY: run_version},
    }


def _stream(
    graph: Any,
    graph_input: dict[str, Any] | None,
    state: dict[str, Any],
    config: dict[str, Any],
    node_runs: list[str],
) -> dict[str, Any]:
    """Run the graph from ``graph_input`` (None: resume the thread); ``state`` is the
    result should the run stream no values."""
    final = state
    for mode, chunk in graph.stream(graph_input, config, stream_mode=["updates", "values"]):
        if mode == "updates":
            node_runs.extend(name for name in chunk if not name.startswith("__"))
        else:
            final = chunk
    return dict(final)


async def _astream(
    graph: Any,
    graph_input: dict[str, Any] | None,
    state: dict[str, Any],
    config: dict[str, Any],
    node_runs: list[str],
    saver: AwaitableSaver | None,
) -> dict[str, Any]:
    """``_stream`` on LangGraph's async path (graph.event_loop). A failed run ends once the
    checkpoint writes of the items that finished beside the failure have landed."""
    final = state
    try:
        async for mode, chunk in graph.astream(
            graph_input, config, stream_mode=["updates", "values"]
        ):
            if mode == "updates":
                node_runs.extend(name for name in chunk if not name.startswith("__"))
            else:
                final = chunk
    finally:
        if saver is not None:
            await saver.settled()
    return dict(final)


def _cache(workflow: Workflow, folder: Path | None, backend: Backend) -> ResponseCache | None:
    """Off for record and replay: a hit never reaches the cassette, so a recording would
    miss it, and a replay would bill it as $0 instead of what was recorded."""
    config = workflow.spec.config.execution.cache
    if config is None or backend in (Backend.RECORD, Backend.REPLAY):
        return None
    return open_cache(folder or DEFAULT_CACHE_DIR, config.ttl_s)


def _guard(
    workflow: Workflow, windows: tuple[WindowSpend, ...], journal: SpendJournal | None
) -> Callable[[UsageSummary, NextPrompt], None] | None:
    """Stops the run before its next LLM call once ``orchestration.budget`` is spent, or
    would be by that call's prompt alone (sized by characters / 4), or
    once a spend limit's window is (earlier runs' spend, other runs' in flight from the
    journal, and this run's)."""
    config = workflow.spec.orchestration.budget
    if config is None and not windows:
        return None
    budget = (
        Budget(workflow.name, config.max_cost_usd, config.max_total_tokens)
        if config is not None
        else None
    )

    def guard(usage: UsageSummary, prompt: NextPrompt) -> None:
        if budget is not None and (over := budget.overrun(usage)) is not None:
            raise BudgetExceededError(budget.stop_message(over), usage)
        if budget is not None and (too_large := budget.prompt_overrun(usage, prompt)):
            raise BudgetExceededError(too_large, usage)
        if (reached := first_reached(windows, usage, journal)) is not None:
            window, in_flight = reached
            raise SpendLimitError(window.stop_message(workflow.name, usage, in_flight), usage)

    return guard


def _journal_writer(journal: SpendJournal | None) -> Callable[[UsageSummary], None] | None:
    """Writes the run's running total to the journal after each call that cost something
    (a free call, a cache hit or a refused one, writes nothing)."""
    if journal is None:
        return None
    written = [0.0]
    lock = threading.Lock()  # parallel nodes finish on several threads

    def write(usage: UsageSummary) -> None:
        with lock:
            total = usage.total_cost_usd
            if total > written[0]:
                journal.record(total)
                written[0] = total

    return write


def _as_run_error(exc: BaseException, workflow: Workflow, usage: UsageSummary) -> BaseException:
    from langgraph.errors import GraphRecursionError

    name, steps = workflow.name, workflow.spec.config.execution.max_steps
    if isinstance(exc, WorkflowRunError):
        return exc.with_usage(usage)
    if isinstance(exc, AgentsPipelinesError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, GraphRecursionError):
        return StepLimitError(
            f"Workflow {name} ({workflow.path}) ran {steps} steps without reaching END "
            "(config.execution.max_steps). A route probably loops: check its conditions, "
            "or raise max_steps if the loop is meant to run longer.",
            usage,
        )
    return LlmCallError(
        f"Workflow {name} failed: {describe_failure(exc)}.",
        usage,
        transient=is_transient(exc),
        retry_after_s=retry_after_s(exc),
    )
