"""One MLflow run per workflow run: params, tags, metrics, the trace and the artifacts.

MLflow's fluent API keeps the active run per thread, so the run is started on the thread
that invokes the graph; autolog then links the trace to it. The trace export stays
asynchronous unless the workflow turns async_logging off; MLflow's atexit hook drains the
queue when the process ends, so no trace is lost.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agents_pipelines.tracking import span_policy
from agents_pipelines.tracking.settings import TrackingSettings
from agents_pipelines.usage import Pricer, UsageSummary, round_usd

logger = logging.getLogger(__name__)
_configure_lock = threading.Lock()
_autolog_enabled = False


@dataclass(frozen=True)
class TrackingInfo:
    run_id: str
    experiment_id: str
    experiment_name: str
    trace_id: str | None
    run_url: str
    tracking_uri: str


def usage_metrics(summary: UsageSummary, duration_s: float, node_count: int) -> dict[str, float]:
    tokens = summary.tokens
    return {
        "total_tokens": tokens.total,
        "prompt_tokens": tokens.prompt,
        "completion_tokens": tokens.completion,
        "reasoning_tokens": tokens.reasoning,
        "cached_tokens": tokens.cached,
        "total_cost_usd": summary.total_cost_usd,
        "llm_calls": summary.llm_calls,
        "node_count": node_count,
        "duration_s": round(duration_s, 3),
    }


class TrackingSession:
    """Start with ``TrackingSession.start``; end with ``finish`` or ``fail``."""

    def __init__(self, settings: TrackingSettings, experiment_id: str, run_id: str):
        self.settings = settings
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.trace_id: str | None = None

    @classmethod
    def start(
        cls,
        settings: TrackingSettings,
        *,
        run_name: str | None,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
    ) -> TrackingSession:
        import mlflow

        _configure(settings.tracking_uri)
        experiment_id = _experiment_id(settings.experiment_name)
        logger.info("✓ Experiment: %s (ID: %s)", settings.experiment_name, experiment_id)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags))
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        return cls(settings, experiment_id, run.info.run_id)

    @contextmanager
    def traced(
        self,
        name: str,
        inputs: Mapping[str, Any],
        pricer: Pricer,
        usage: Callable[[], UsageSummary],
    ) -> Iterator[None]:
        """A root span around the graph; autolog's node and LLM spans nest below it.

        Each LLM span gets its cost from ``pricer`` (see span_policy). Before the root span
        closes, the trace's total cost is set from ``usage()``, the sum of those same span
        costs: MLflow's SQL store would otherwise recompute it from whichever span batch
        the async exporter delivers last.
        """
        import mlflow

        full = self.settings.config.artifact_level == "full"
        with mlflow.start_span(name=name, span_type="CHAIN") as root:
            self.trace_id = root.trace_id
            span_policy.apply_to(root.trace_id, span_policy.TracePolicy(pricer, full))
            root.set_inputs(dict(inputs) if full else {"inputs": sorted(inputs)})
            try:
                yield
            finally:
                span_policy.forget(root.trace_id)
                _set_trace_cost(usage())

    def info(self) -> TrackingInfo:
        return TrackingInfo(
            self.run_id,
            self.experiment_id,
            self.settings.experiment_name,
            self.trace_id,
            self.settings.run_url(self.experiment_id, self.run_id),
            self.settings.tracking_uri,
        )

    def end(self, metrics: Mapping[str, float], artifacts: Mapping[str, Any], status: str) -> None:
        """Log metrics and artifacts, then end the run (FINISHED or FAILED)."""
        import mlflow

        try:
            mlflow.log_metrics(dict(metrics), run_id=self.run_id)
            for path, content in artifacts.items():
                if isinstance(content, str):
                    mlflow.log_text(content, path, run_id=self.run_id)
                else:
                    mlflow.log_text(
                        json.dumps(content, indent=2, default=str), path, run_id=self.run_id
                    )
        finally:
            mlflow.end_run(status=status)
            if not self.settings.config.async_logging:
                drain_trace_export()


def drain_trace_export() -> None:
    """Block until every trace handed to MLflow is stored.

    ``mlflow.flush_trace_async_logging()`` stops and restarts the export thread, which
    wakes from a one-second queue poll: about 1 s per call, measured. Flushing the span
    batchers and joining the export queue returns once the last write is done (about the
    time of the write itself). Falls back to MLflow's public flush if its internals move.
    """
    import mlflow

    try:
        from mlflow.tracing.processor.base_mlflow import flush_all_batch_processors
        from mlflow.tracing.provider import _get_trace_exporter

        flush_all_batch_processors()
        queue = getattr(_get_trace_exporter(), "_async_queue", None)
        tasks = getattr(queue, "_queue", None)
        if tasks is not None:
            tasks.join()
            return
    except (ImportError, AttributeError):
        pass
    mlflow.flush_trace_async_logging()


def _set_trace_cost(summary: UsageSummary) -> None:
    import mlflow
    from mlflow.tracing.constant import TraceMetadataKey

    priced = [call.price for call in summary.calls if call.price is not None]
    if not priced:
        return
    cost = {
        "input_cost": round_usd(sum(p.input_usd for p in priced)),
        "output_cost": round_usd(sum(p.output_usd for p in priced)),
        "total_cost": summary.total_cost_usd,
    }
    mlflow.update_current_trace(metadata={TraceMetadataKey.COST: json.dumps(cost)})


def _configure(tracking_uri: str) -> None:
    global _autolog_enabled
    import mlflow

    with _configure_lock:
        # A no-op when unchanged; when changed it also re-points MLflow's trace exporter
        # (comparing with get_tracking_uri() would not do: it prefers the environment).
        mlflow.set_tracking_uri(tracking_uri)
        if not _autolog_enabled:
            mlflow.langchain.autolog(log_traces=True, silent=True)
            _autolog_enabled = True
    logger.info("✓ MLflow auto-instrumentation enabled (langchain.autolog)")


def _experiment_id(name: str) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    if (experiment := client.get_experiment_by_name(name)) is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # another process created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)
