"""One workflow run, from start to end, owned by one object.

``WorkflowRun(workflow, RunOptions(...)).execute(inputs)`` validates the inputs, builds
the graph, runs it under MLflow and returns a ``RunResult``. Its collaborators
(run_parts.py, tracking.RunRecorder, the ledger) each own a feature; the options are
one frozen object, so a new feature adds a part, not a parameter.

However the run ends, ``WorkflowRun.ending`` says how, with what it spent: the spend
travels as data. A failure is raised as a ``WorkflowRunError`` that carries the same
spend; a stop (Ctrl-C, SIGTERM, an orchestrator's interruption) is raised as it came, and
whoever handles it reads the spend from ``ending``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NoReturn

from agents_pipelines.errors import (
    AgentsPipelinesError,
    LlmCallError,
    StepLimitError,
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
from agents_pipelines.graph.batch_job_names import CheckpointedJobNames
from agents_pipelines.graph.event_loop import AwaitableSaver
from agents_pipelines.graph.resume import Checkpointing
from agents_pipelines.llm import Backend, ChatModelFactory, chat_model_factory, resolve_backend
from agents_pipelines.llm.batch_hooks import HOOKS_KEY, BatchHooks, SharedJobs
from agents_pipelines.llm.gemini import describe_failure, is_transient, retry_after_s
from agents_pipelines.process_heap import freeze_set_up_objects
from agents_pipelines.redaction import masking, redact_exception
from agents_pipelines.registry import ProcessRegistry, process_registry
from agents_pipelines.run_parts import Checkpoints, DevCache, RunPart, SpendGuard
from agents_pipelines.spec import Workflow, WorkflowSpec
from agents_pipelines.state_evals import Verdict, evaluate
from agents_pipelines.tracking import MlflowPriceTable, RunOutcome, RunRecorder, TrackingInfo
from agents_pipelines.tracking.prompt_registry import (
    PinnedPrompt,
    PromptPins,
    pin_prompts,
    versions_of,
)
from agents_pipelines.usage import SpendLimits, UsageLedger, UsageSummary, WindowSpend
from agents_pipelines.usage.records import PROMPTS_KEY

__all__ = ["RunEnding", "RunOptions", "RunResult", "WorkflowRun"]


@dataclass(frozen=True)
class RunOptions:
    """How to run a workflow; every field has the default a plain call wants.

    - ``backend``: the LLM backend; None: the environment's (AGENTS_PIPELINES_LLM_BACKEND).
    - ``tags``: MLflow tags of the run (an orchestrator's run id, asset key, partition).
    - ``spend_limits``: read once as the run starts; a window already spent refuses the
      run, one this run's calls fill stops it before its next call.
    - ``cache_dir``: the development cache's folder (``config.execution.cache``), by
      default ``.agents_pipelines/`` in the current directory.
    - ``checkpointing``: the graph is checkpointed in that thread, and an unfinished
      checkpoint of the same workflow version resumed; a run that succeeds clears it.
    - ``evals``: run the workflow's evals on the final state, in the run's trace and
      ledger (their calls count against its budget); ``assess``: log their verdicts as
      MLflow assessments on the trace.
    - ``registry``: the caches the run reuses (compiled graphs, the development cache's
      objects); None: the process's.
    - ``progress``: where the run's progress lines go (a batch job's state and done/total,
      llm.batch), beside the Python logger; Dagster passes its run's log.
    - ``shared_jobs``: in a range run, the range's pool of Batch API jobs and this run's
      partition key in it: its batch calls go in one job with the other partitions'.
    """

    backend: Backend | str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    mlflow_ui_url: str | None = None
    simulated_latency_s: float | None = None
    spend_limits: SpendLimits | None = None
    cache_dir: Path | None = None
    checkpointing: Checkpointing | None = None
    evals: bool = True
    assess: bool = True
    registry: ProcessRegistry | None = None
    progress: Callable[[str], None] | None = None
    shared_jobs: tuple[SharedJobs, str] | None = None


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
    prompts: tuple[PinnedPrompt, ...] = ()  # the registry prompts, at the versions run

    @property
    def node_count(self) -> int:
        return len(self.node_runs)


@dataclass(frozen=True)
class RunEnding:
    """How a run ended, and what it spent: ``status`` "succeeded"; "failed" (``error`` is
    what was raised: a WorkflowRunError once the graph started); "stopped" (``error`` is
    the stop, raised as it came: KeyboardInterrupt, an orchestrator's interruption)."""

    status: Literal["succeeded", "failed", "stopped"]
    usage: UsageSummary
    error: BaseException | None = None


@dataclass(frozen=True)
class _RunSetup:
    """A run as it is about to make its first call: ``workflow`` with its registry
    prompts pinned (``pins``)."""

    workflow: Workflow
    pins: PromptPins
    state: dict[str, Any]
    backend: Backend
    models: ChatModelFactory
    graph: Any
    config: dict[str, Any]
    on_event_loop: bool
    pricer: MlflowPriceTable
    ledger: UsageLedger
    guard: SpendGuard
    checkpoints: Checkpoints
    cache: DevCache

    @property
    def parts(self) -> tuple[RunPart, ...]:
        """The collaborators, in the order their notes are reported."""
        return (self.guard, self.checkpoints, self.cache)


class WorkflowRun:
    """One run of ``workflow``: ``execute`` once, then read ``ending``."""

    def __init__(self, workflow: Workflow, options: RunOptions | None = None):
        self.workflow = workflow
        self.options = options or RunOptions()
        self.ending: RunEnding | None = None  # set as execute returns or raises

    def execute(self, inputs: Mapping[str, Any] | None = None) -> RunResult:
        """Run the workflow once. Bad inputs raise InvalidInputsError, and a spent
        window SpendLimitError, before any LLM call; a failed run raises WorkflowRunError
        carrying the spend so far."""
        # redact_pii: everything the run stores or prints is masked, from here to its end.
        try:
            with masking(self.workflow.spec.config.observability.mlflow.pii()):
                result = self._execute(dict(inputs or {}))
        except BaseException as exc:
            if self.ending is None:  # refused before the graph started: nothing spent
                stopped = not isinstance(exc, Exception)
                self.ending = RunEnding("stopped" if stopped else "failed", UsageSummary(), exc)
            raise
        self.ending = RunEnding("succeeded", result.usage)
        return result

    def _execute(self, inputs: dict[str, Any]) -> RunResult:
        setup = self._set_up(inputs)
        recorder = RunRecorder.start(
            setup.workflow, setup.backend.value, self.options.tags, self.options.mlflow_ui_url
        )
        freeze_set_up_objects()  # imports, graph and MLflow's client are set up by now
        ledger, state = setup.ledger, setup.state
        started = time.perf_counter()
        node_runs: list[str] = []
        try:
            with recorder.traced(state, setup.pricer, ledger.summary) as tracers:
                recorder.link_prompts(setup.pins)
                final = _run_graph(setup, node_runs, tracers, recorder.export_pace())
                # In the trace and the ledger: the judges' spans, cost and budget are the run's.
                verdicts = self._evaluate(setup, final, recorder, tracers)
        except BaseException as caught:
            elapsed = time.perf_counter() - started
            failed = RunOutcome(state, None, UsageSummary(), len(node_runs), elapsed)
            self._end_in_failure(caught, ledger, recorder, failed)
        duration = time.perf_counter() - started
        outcome = RunOutcome(state, final, ledger.summary(), len(node_runs), duration)
        recorder.finish(outcome)
        for part in setup.parts:
            part.succeeded()
        skipped = outcome.usage.skipped_items_warning()
        notes = (*recorder.notes, *([skipped] if skipped else []))
        return RunResult(
            self.workflow.spec.flow.name,
            final,
            outcome.usage,
            tuple(node_runs),
            duration,
            setup.backend,
            recorder.info(),
            (*notes, *(note for part in setup.parts for note in part.notes())),
            setup.guard.windows,
            setup.checkpoints.start.note,
            verdicts,
            setup.cache.recovery_note,
            setup.pins.prompts,
        )

    def _set_up(self, inputs: dict[str, Any]) -> _RunSetup:
        """Everything before the first LLM call: inputs checked, spend limits read, the
        graph built (and checkpointed), the ledger made."""
        workflow, options = self.workflow, self.options
        registry = options.registry or process_registry()
        state = initial_state(workflow.spec, inputs)
        guard = SpendGuard(workflow, options.spend_limits)
        guard.refuse_if_spent()
        backend = options.backend
        chosen = resolve_backend(backend.value if isinstance(backend, Backend) else backend)
        cache = DevCache(workflow, options.cache_dir, chosen, registry)
        models = chat_model_factory(chosen, options.simulated_latency_s)
        run_version = resume.version(workflow.version_sha256(), state)
        # Each alias read once, now; a resumed attempt keeps its first attempt's versions.
        kept = resume.kept_prompts(options.checkpointing, run_version)
        pins = pin_prompts(workflow, versions_of(kept))
        workflow = replace(workflow, spec=_pinned_spec(workflow.spec, pins, registry))
        spec = workflow.spec
        on_event_loop = map_node.has_map(spec)
        checkpoints, graph = Checkpoints.attach(
            options.checkpointing,
            build_graph(spec, models, cache.cache, registry),
            state,
            run_version,
            on_event_loop,
        )
        pricer = MlflowPriceTable(spec.config.pricing)
        ledger = UsageLedger(
            pricer,
            keep_text=spec.config.observability.mlflow.artifact_level == "full",
            before_call=guard.before_call(),
            after_call=guard.after_call(),
        )
        ledger.resumed = checkpoints.start.resumed
        steps = spec.config.execution.max_steps + map_node.extra_steps(spec)
        config = _run_config(ledger, steps, options, run_version, pins)
        return _RunSetup(
            workflow, pins, state, chosen, models, graph, config, on_event_loop, pricer, ledger,
            guard, checkpoints, cache,
        )  # fmt: skip

    def _evaluate(
        self,
        setup: _RunSetup,
        final: dict[str, Any],
        recorder: RunRecorder,
        tracers: Sequence[Any],
    ) -> tuple[Verdict, ...]:
        if not self.options.evals:
            return ()
        verdicts = tuple(
            evaluate(
                setup.workflow,
                final,
                model_factory=setup.models,
                ledger=setup.ledger,
                callbacks=tracers,
            )
        )
        if self.options.assess:
            recorder.assess(verdicts)
        return verdicts

    def _end_in_failure(
        self, caught: BaseException, ledger: UsageLedger, recorder: RunRecorder, run: RunOutcome
    ) -> NoReturn:
        """Record the failed run with its spend, set ``ending``, and raise: a
        WorkflowRunError carrying the spend, or a stop as it came."""
        exc = map_node.first_error(caught)
        stopped = not isinstance(exc, Exception)
        if stopped:  # the calls it cut short count
            ledger.cancel_in_flight()
        # A provider's error may repeat the API key: the chain that Dagster stores and
        # tracebacks print carries the redacted text only.
        redact_exception(exc)
        usage = ledger.summary()
        failure = _as_run_error(exc, self.workflow, usage)
        recorder.finish(replace(run, usage=usage, failure=failure))
        self.ending = RunEnding("stopped" if stopped else "failed", usage, failure)
        if failure is not exc:
            raise failure from exc
        if exc is not caught:
            raise exc from None
        raise caught


_MAX_PINNED_SPECS = 256  # as many as graph.builder keeps compiled graphs


def _pinned_spec(spec: WorkflowSpec, pins: PromptPins, registry: ProcessRegistry) -> WorkflowSpec:
    """``spec`` pinned to ``pins``: the same object for the same versions, so that the
    graph compiled for it is reused (graph.builder keys it by the spec's id)."""
    if not pins.prompts:
        return spec
    key = (id(spec), pins.as_json())
    with registry.pins_lock:
        if (entry := registry.pinned_specs.get(key)) is None:
            entry = registry.pinned_specs[key] = (spec, pins.spec(spec))
        registry.pinned_specs.move_to_end(key)
        while len(registry.pinned_specs) > _MAX_PINNED_SPECS:
            registry.pinned_specs.popitem(last=False)
    return entry[1]


def _run_config(
    ledger: UsageLedger, max_steps: int, options: RunOptions, run_version: str, pins: PromptPins
) -> dict[str, Any]:
    """The LangGraph config of one run: the ledger (as callback, and for the nodes to claim
    their spend), the map nodes' passes, and the checkpoint thread."""
    checkpointing = options.checkpointing
    names = None
    shared, member = options.shared_jobs or (None, "")
    if checkpointing is not None:
        names = CheckpointedJobNames(checkpointing.saver, checkpointing.thread_id)
    configurable: dict[str, Any] = {
        node_spend.LEDGER_KEY: ledger,
        map_node.PASSES_KEY: map_node.Passes(),
        HOOKS_KEY: BatchHooks(names, ledger.check_job, options.progress, shared, member),
    }
    if checkpointing is not None:
        configurable |= checkpointing.config()["configurable"]
    return {
        "callbacks": [ledger],
        "recursion_limit": max_steps,
        "configurable": configurable,
        "metadata": {
            resume.VERSION_KEY: run_version,
            **({PROMPTS_KEY: pins.as_json()} if pins.prompts else {}),
        },
    }


def _run_graph(
    setup: _RunSetup,
    node_runs: list[str],
    tracers: Sequence[Any],
    pace: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """The graph's final state; a map node's items run as awaited calls, no thread each.
    ``tracers`` (the run's MLflow tracer) join the ledger in the callbacks, which LangChain
    hands down to every node, item and call of the run."""
    graph, state = setup.graph, setup.state
    config = {**setup.config, "callbacks": [*setup.config["callbacks"], *tracers]}
    if pace is not None:
        config["configurable"] = {**config["configurable"], map_node.PACE_KEY: pace}
    if setup.checkpoints.start.finished:  # a partition kept from an earlier attempt
        return {**state, **graph.get_state(config).values}
    graph_input = setup.checkpoints.start.input
    if not setup.on_event_loop:
        return _stream(graph, graph_input, state, config, node_runs)
    stream = _astream(graph, graph_input, state, config, node_runs, setup.checkpoints.awaitable)
    return event_loop.run(stream, config["configurable"][map_node.PASSES_KEY].stop)


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


def _as_run_error(exc: BaseException, workflow: Workflow, usage: UsageSummary) -> BaseException:
    """``exc`` as the WorkflowRunError that carries ``usage``; our other errors and stops
    as they are."""
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
