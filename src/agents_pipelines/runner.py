"""Run one workflow: validate inputs, build the graph, run it under MLflow, report usage.

This is the path every entry point takes (the Dagster asset, the CLI, a notebook). It knows
nothing of Dagster; orchestration context arrives as plain MLflow tags.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from agents_pipelines.errors import (
    AgentsPipelinesError,
    BudgetExceededError,
    LlmCallError,
    StepLimitError,
    TrackingFailedWarning,
    WorkflowRunError,
)
from agents_pipelines.graph import build_graph, initial_state
from agents_pipelines.llm import Backend, chat_model_factory, resolve_backend
from agents_pipelines.llm.gemini import describe_failure, is_transient, retry_after_s
from agents_pipelines.redaction import redact, redact_exception, redacting_logger
from agents_pipelines.spec import Workflow, draw_mermaid
from agents_pipelines.tracking import (
    MlflowPriceTable,
    TrackingInfo,
    TrackingSession,
    resolve_settings,
    untraced,
    usage_metrics,
)
from agents_pipelines.usage import Budget, UsageLedger, UsageSummary, cost_summary

logger = redacting_logger(__name__)


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
) -> RunResult:
    """Run ``workflow`` once. Bad inputs raise InvalidInputsError before any LLM call;
    a failed run raises WorkflowRunError carrying the spend so far."""
    spec = workflow.spec
    state = initial_state(spec, inputs or {})
    chosen = resolve_backend(backend.value if isinstance(backend, Backend) else backend)
    graph = build_graph(spec, chat_model_factory(chosen, simulated_latency_s))
    mlflow_config = spec.config.observability.mlflow
    pricer = MlflowPriceTable(spec.config.pricing)
    ledger = UsageLedger(
        pricer,
        keep_text=mlflow_config.artifact_level == "full",
        before_call=_budget_guard(workflow),
    )
    notes: list[str] = []
    session = _start_tracking(workflow, chosen, tags or {}, mlflow_ui_url, notes)
    started = time.perf_counter()
    node_runs: list[str] = []
    try:
        with _traced(session, spec.flow.name, state, pricer, ledger):
            final = _stream(graph, state, ledger, spec.config.execution.max_steps, node_runs)
    except BaseException as exc:
        # A provider's error may repeat the API key: the chain that Dagster stores and
        # tracebacks print carries the redacted text only.
        redact_exception(exc)
        failure = _as_run_error(exc, workflow, ledger.summary())
        _end_tracking(
            session,
            workflow,
            state,
            None,
            ledger.summary(),
            chosen,
            node_runs,
            time.perf_counter() - started,
            notes,
            failure,
        )
        if failure is exc:
            if not isinstance(exc, Exception):
                setattr(exc, _SPEND_ATTRIBUTE, ledger.summary())
            raise
        raise failure from exc
    duration = time.perf_counter() - started
    summary = ledger.summary()
    _end_tracking(session, workflow, state, final, summary, chosen, node_runs, duration, notes)
    return RunResult(
        spec.flow.name,
        final,
        summary,
        tuple(node_runs),
        duration,
        chosen,
        session.info() if session else None,
        tuple(notes),
    )


def spent_before(stop: BaseException) -> UsageSummary | None:
    """What a run had spent when ``stop`` ended it: an interruption that ``run_workflow``
    lets through as it came (KeyboardInterrupt, SystemExit, an orchestrator's stop), so
    that whoever handles it can still report the spend. None for any other exception."""
    spent = getattr(stop, _SPEND_ATTRIBUTE, None)
    return spent if isinstance(spent, UsageSummary) else None


def _stream(
    graph: Any, state: dict[str, Any], ledger: UsageLedger, max_steps: int, node_runs: list[str]
) -> dict[str, Any]:
    final = state
    config = {"callbacks": [ledger], "recursion_limit": max_steps}
    for mode, chunk in graph.stream(state, config, stream_mode=["updates", "values"]):
        if mode == "updates":
            node_runs.extend(name for name in chunk if not name.startswith("__"))
        else:
            final = chunk
    return dict(final)


def _budget_guard(workflow: Workflow) -> Callable[[UsageSummary], None] | None:
    """Stops the run before its next LLM call once ``orchestration.budget`` is spent."""
    config = workflow.spec.orchestration.budget
    if config is None:
        return None
    budget = Budget(workflow.name, config.max_cost_usd, config.max_total_tokens)

    def guard(usage: UsageSummary) -> None:
        if (over := budget.overrun(usage)) is not None:
            raise BudgetExceededError(budget.stop_message(over), usage)

    return guard


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


def _start_tracking(
    workflow: Workflow,
    backend: Backend,
    tags: Mapping[str, str],
    ui_url: str | None,
    notes: list[str],
) -> TrackingSession | None:
    config = workflow.spec.config.observability.mlflow
    if not config.enabled:
        return None
    settings = resolve_settings(config, workflow.name, ui_url)
    spec = workflow.spec
    params = {
        "workflow": workflow.name,
        "workflow_sha256": workflow.sha256,
        "models": ",".join(spec.models_used()),
        "temperature": spec.config.llm.temperature,
        "node_temperatures": ",".join(
            f"{n.id}={spec.config.llm.merged(n.llm).temperature}" for n in spec.nodes
        ),
        "max_steps": spec.config.execution.max_steps,
        "llm_backend": backend.value,
    }
    all_tags = {
        "agents_pipelines.workflow": workflow.name,
        "agents_pipelines.llm_backend": backend.value,
        **tags,
    }
    try:
        return TrackingSession.start(
            settings, run_name=config.run_name, tags=all_tags, params=params
        )
    except Exception as exc:
        _tracking_failed(workflow, exc, notes)
        return None


def _tracking_failed(
    workflow: Workflow, exc: Exception, notes: list[str], usage: UsageSummary | None = None
) -> None:
    """Fail the run if tracking is required (with ``usage``, the spend so far, so that it
    is reported although MLflow could not record it); else warn and go on."""
    config = workflow.spec.config.observability.mlflow
    # The first error comes first: later ones (noted on it) are usually its consequences.
    detail = " ".join([str(exc), *getattr(exc, "__notes__", ())])
    reason = redact(
        f"MLflow tracking failed for workflow {workflow.name}: {type(exc).__name__}: {detail}"
    )
    if config.required:
        raise WorkflowRunError(
            reason + ". Fix the tracking server, or set observability.mlflow.required: false "
            "to let runs succeed without tracking.",
            usage,
        ) from exc
    notes.append(reason)
    warnings.warn(reason, TrackingFailedWarning, stacklevel=3)
    return None


def _traced(
    session: TrackingSession | None,
    name: str,
    state: dict[str, Any],
    pricer: MlflowPriceTable,
    ledger: UsageLedger,
) -> AbstractContextManager[None]:
    if session is None:
        return untraced()
    return session.traced(name, state, pricer, ledger.summary)


def _end_tracking(
    session: TrackingSession | None,
    workflow: Workflow,
    inputs: dict[str, Any],
    outputs: dict[str, Any] | None,
    summary: UsageSummary,
    backend: Backend,
    node_runs: list[str],
    duration_s: float,
    notes: list[str],
    failure: BaseException | None = None,
) -> None:
    if session is None:
        return
    config = workflow.spec.config.observability.mlflow
    status = "failed" if failure else "succeeded"
    artifacts: dict[str, Any] = {}
    if config.log_artifacts:
        artifacts["cost_summary.json"] = cost_summary(
            summary,
            workflow=workflow.name,
            backend=backend.value,
            status=status,
            error=str(failure) if failure else None,
        )
        if config.artifact_level in ("standard", "full"):
            artifacts[f"workflow/{workflow.path.name}"] = workflow.text
            artifacts["graph.mmd"] = draw_mermaid(workflow.spec)
        if config.artifact_level == "full":
            artifacts["inputs.json"] = inputs
            artifacts["outputs.json"] = outputs
            artifacts["prompts.json"] = [
                {"node": c.node, "model": c.model, "prompt": c.prompt, "reply": c.reply}
                for c in summary.calls
            ]
    metrics = usage_metrics(summary, duration_s, len(node_runs))
    try:
        session.end(metrics, artifacts, "FAILED" if failure else "FINISHED")
    except Exception as exc:
        if failure is None:
            _tracking_failed(workflow, exc, notes, summary)
        else:
            logger.warning("Could not record the failed run in MLflow: %s", exc)
