"""A workflow run's MLflow record, and its OpenTelemetry export, owned by one object from
start to end.

``RunRecorder.start`` opens the MLflow run (or none: tracking disabled, or failed and not
required), ``traced`` wraps the graph in the run's root span, and ``finish`` logs the
outcome, success or failure, with its metrics and artifacts. With a collector configured
(telemetry/), the trace goes to it too, and ``finish`` sends the run's GenAI metrics,
whether MLflow tracking is on or not. Whether a tracking failure
fails the run is decided here, once: ``observability.mlflow.required``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from agents_pipelines.errors import TrackingFailedWarning, WorkflowRunError
from agents_pipelines.redaction import redact, redacting_logger
from agents_pipelines.spec import Workflow, draw_mermaid
from agents_pipelines.telemetry import RunTelemetry
from agents_pipelines.tracking import span_release
from agents_pipelines.tracking.assessments import Assessed, log_assessments
from agents_pipelines.tracking.client import untraced
from agents_pipelines.tracking.prompt_registry import PromptPins, link_prompts
from agents_pipelines.tracking.session import TrackingInfo, TrackingSession
from agents_pipelines.tracking.tracking_settings import resolve_settings
from agents_pipelines.usage import Pricer, UsageSummary
from agents_pipelines.usage.cost_summary_json import cost_summary_file

logger = redacting_logger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    """What a run did, as its MLflow record shows it. ``failure`` is None on success."""

    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any] | None
    usage: UsageSummary
    node_count: int
    duration_s: float
    failure: BaseException | None = None

    def metrics(self) -> dict[str, float]:
        return {
            **self.usage.totals(),
            "node_count": self.node_count,
            "duration_s": round(self.duration_s, 3),
            # Apart from total_cost_usd: an earlier attempt paid it, on its own MLflow run.
            **({"resumed_cost_usd": self.usage.resumed_cost_usd} if self.usage.resumed else {}),
        }


class RunRecorder:
    """Start with ``RunRecorder.start``; trace with ``traced``; end with ``finish``.

    Without a session (tracking disabled, or it failed to start and is not required) the
    run is kept out of MLflow and ``finish`` does nothing.
    """

    def __init__(
        self,
        workflow: Workflow,
        backend: str,
        session: TrackingSession | None,
        notes: list[str],
        telemetry: RunTelemetry,
    ):
        self._workflow = workflow
        self._telemetry = telemetry
        self._backend = backend
        self._session = session
        self._notes = notes  # why tracking failed, when it did and the run went on

    @classmethod
    def start(
        cls, workflow: Workflow, backend: str, tags: Mapping[str, str], ui_url: str | None
    ) -> RunRecorder:
        config = workflow.spec.config.observability.mlflow
        notes: list[str] = []
        telemetry = RunTelemetry.start(workflow, tags)
        if not config.enabled:
            return cls(workflow, backend, None, notes, telemetry)
        settings = resolve_settings(config, workflow.name, ui_url)
        params = _params(workflow, backend)
        tags = {
            "agents_pipelines.workflow": workflow.name,
            "agents_pipelines.llm_backend": backend,
            **tags,
        }
        try:
            session = TrackingSession.start(
                settings, run_name=config.run_name, tags=tags, params=params
            )
        except Exception as exc:
            _tracking_failed(workflow, exc, notes)
            session = None
        return cls(workflow, backend, session, notes, telemetry)

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(self._notes)

    def info(self) -> TrackingInfo | None:
        return None if self._session is None else self._session.info()

    def traced(
        self, inputs: Mapping[str, Any], pricer: Pricer, usage: Callable[[], UsageSummary]
    ) -> AbstractContextManager[tuple[Any, ...]]:
        """The run's root span; yields the LangChain callbacks that trace the run (none
        when it is kept out of MLflow)."""
        if self._session is None:
            return _untraced_run()
        name = self._workflow.spec.flow.name
        return self._session.traced(name, inputs, pricer, usage, self._telemetry.traces)

    def export_pace(self) -> Callable[[], float] | None:
        """Inside ``traced``: what a map calls before each wave after the first, to let
        the trace's export catch up (span_release.wait_for_store); None when untraced."""
        trace_id = None if self._session is None else self._session.trace_id
        if trace_id is None:
            return None
        return functools.partial(span_release.wait_for_store, trace_id)

    def link_prompts(self, pins: PromptPins) -> None:
        """Link the run's registry prompt versions to its MLflow run and trace; call it
        inside ``traced``. A failure to link them is a tracking failure."""
        if self._session is None or not pins.prompts:
            return
        try:
            link_prompts(pins, self._session.run_id, self._session.settings.tracking_uri)
        except Exception as exc:
            _tracking_failed(self._workflow, exc, self._notes)

    def assess(self, verdicts: Sequence[Assessed]) -> None:
        """Log each eval's verdict as an assessment on the run's trace; call it inside
        ``traced``, where the trace is still open (the assessments then go to MLflow with
        the trace, at no extra request). A failure to log them is a tracking failure."""
        if self._session is None or self._session.trace_id is None or not verdicts:
            return
        try:
            log_assessments(self._session.trace_id, verdicts)
        except Exception as exc:
            _tracking_failed(self._workflow, exc, self._notes)

    def finish(self, outcome: RunOutcome) -> None:
        """End the MLflow run. A failure to record a success fails the run if tracking
        is required (else a warning); a failure to record a failure is only logged."""
        self._telemetry.finish(outcome.usage)
        if self._session is None:
            return
        status = "FAILED" if outcome.failure else "FINISHED"
        try:
            self._session.end(outcome.metrics(), self._artifacts(outcome), status)
        except Exception as exc:
            if outcome.failure is None:
                _tracking_failed(self._workflow, exc, self._notes, outcome.usage)
            else:
                logger.warning("Could not record the failed run in MLflow: %s", exc)

    def _artifacts(self, outcome: RunOutcome) -> dict[str, Any]:
        workflow, failure = self._workflow, outcome.failure
        config = workflow.spec.config.observability.mlflow
        if not config.log_artifacts:
            return {}
        artifacts: dict[str, Any] = {
            "cost_summary.json": cost_summary_file(
                outcome.usage,
                workflow=workflow.name,
                backend=self._backend,
                status="failed" if failure else "succeeded",
                error=str(failure) if failure else None,
            )
        }
        if config.artifact_level in ("standard", "full"):
            artifacts[f"workflow/{workflow.path.name}"] = workflow.text
            artifacts["graph.mmd"] = draw_mermaid(workflow.spec)
        if config.artifact_level == "full":
            artifacts["inputs.json"] = outcome.inputs
            artifacts["outputs.json"] = outcome.outputs
            artifacts["prompts.json"] = [
                {
                    "node": c.node,
                    "item": c.item,
                    "model": c.model,
                    "prompt": c.prompt,
                    "reply": c.reply,
                }
                for c in outcome.usage.calls
                if c.is_llm
            ]
        return artifacts


@contextmanager
def _untraced_run() -> Iterator[tuple[Any, ...]]:
    with untraced():
        yield ()


def _params(workflow: Workflow, backend: str) -> dict[str, Any]:
    spec = workflow.spec
    return {
        "workflow": workflow.name,
        "workflow_sha256": workflow.sha256,
        "models": ",".join(spec.models_used()),
        "temperature": spec.config.llm.temperature,
        "node_temperatures": ",".join(
            f"{n.id}={spec.config.llm.merged(n.llm).temperature}" for n in spec.nodes
        ),
        "max_steps": spec.config.execution.max_steps,
        "llm_backend": backend,
    }


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
    # stacklevel 3: the warning points at WorkflowRun, the caller of start or finish.
    warnings.warn(reason, TrackingFailedWarning, stacklevel=3)
