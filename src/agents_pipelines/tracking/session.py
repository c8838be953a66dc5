"""One MLflow run per workflow run: params, tags, metrics, the trace and the artifacts.

The run is created and ended through ``MlflowClient`` with explicit ids, never through the
fluent API's active run: that is kept per thread, and concurrent runs in one process (a
threaded executor, a notebook) linked their traces to each other's runs (9 of 16,
measured). The root span names the run and the experiment itself.

LangChain's spans come from ``mlflow.langchain.autolog``, enabled once per process; they
nest under the root span because it is the active span while the graph runs. The trace
export stays asynchronous unless the workflow turns async_logging off; MLflow's atexit
hook drains the queue when the process ends, so no trace is lost.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents_pipelines.tracking import span_policy
from agents_pipelines.tracking.settings import TrackingSettings
from agents_pipelines.tracking.sqlite_store import tune_sqlite_store
from agents_pipelines.usage import Pricer, UsageSummary, round_usd

logger = logging.getLogger(__name__)
_configure_lock = threading.Lock()
_autolog_enabled = False
# MLflow's exporter writes spans in batches of 5 by default, one store transaction per
# batch: the larger share of tracing's cost per LLM call. CPU time per call, from chains of
# 1 and 11 calls on SQLite: 16 ms with batches of 5, 4.8 ms with batches of 100. A batch
# also goes out every 0.5 s instead of every 5 s, so a trace reaches the store soon after
# its run. Settings made in the environment win.
_SPAN_EXPORT_DEFAULTS = {
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_SPAN_BATCH_SIZE": "100",
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS": "500",
}
# (tracking URI, experiment name) -> experiment id: one lookup per process, not per run.
_experiment_ids: dict[tuple[str, str], str] = {}


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
    """Start with ``TrackingSession.start``; trace with ``traced``; finish with ``end``."""

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
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        client = _client(settings.tracking_uri)
        # Said here, once per run: _client() runs again when the run ends.
        logger.info("✓ MLflow auto-instrumentation enabled (langchain.autolog)")
        key = (settings.tracking_uri, settings.experiment_name)
        cached = key in _experiment_ids
        experiment_id = _experiment_id(client, *key)
        logger.info("✓ Experiment: %s (ID: %s)", settings.experiment_name, experiment_id)
        try:
            run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
        except MlflowException:
            if not cached:
                raise
            # The experiment may have been deleted and made anew since: look it up again.
            _experiment_ids.pop(key, None)
            experiment_id = _experiment_id(client, *key)
            run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        return cls(settings, experiment_id, run_id)

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
        from mlflow.entities.trace_location import MlflowExperimentLocation

        full = self.settings.config.artifact_level == "full"
        with mlflow.start_span(
            name=name,
            span_type="CHAIN",
            run_id=self.run_id,
            trace_destination=MlflowExperimentLocation(self.experiment_id),
        ) as root:
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
        """Log metrics and artifacts, then end the run (FINISHED or FAILED).

        One call each: a metrics batch, one upload of every artifact, the status.
        """
        from mlflow.entities import Metric

        client = _client(self.settings.tracking_uri)
        try:
            now = int(time.time() * 1000)
            client.log_batch(
                self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
            )
            if artifacts:
                with tempfile.TemporaryDirectory(prefix="agents-pipelines-") as folder:
                    for path, content in artifacts.items():
                        _write_artifact(Path(folder, path), content)
                    client.log_artifacts(self.run_id, folder)
        finally:
            client.set_terminated(self.run_id, status)
            if not self.settings.config.async_logging:
                drain_trace_export()


@contextmanager
def untraced() -> Iterator[None]:
    """Keep a run out of MLflow even where autolog is on in this process.

    Autolog is process-wide: once any workflow has traced, a workflow with tracking
    disabled would otherwise be traced too, its content unredacted, into MLflow's default
    experiment. Without MLflow imported, nothing can trace, and nothing is imported here.
    """
    if "mlflow" not in sys.modules:
        yield
        return
    import mlflow

    with mlflow.tracing.context(enabled=False):
        yield


def _write_artifact(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content, indent=2, default=str)
    path.write_text(text, encoding="utf-8")


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


def _client(tracking_uri: str) -> Any:
    """The client for ``tracking_uri``, with MLflow's process-wide state pointed at it.

    Traces are exported to the process-wide tracking URI, so it is set here as well.
    """
    global _autolog_enabled
    import mlflow

    with _configure_lock:
        tune_sqlite_store(tracking_uri)
        for name, value in _SPAN_EXPORT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        # A no-op when unchanged; when changed it also re-points MLflow's trace exporter
        # (comparing with get_tracking_uri() would not do: it prefers the environment).
        mlflow.set_tracking_uri(tracking_uri)
        if not _autolog_enabled:
            mlflow.langchain.autolog(log_traces=True, silent=True)
            _autolog_enabled = True
    return mlflow.MlflowClient(tracking_uri)


def _experiment_id(client: Any, tracking_uri: str, name: str) -> str:
    from mlflow.exceptions import MlflowException

    key = (tracking_uri, name)
    if (known := _experiment_ids.get(key)) is not None:
        return known
    if (experiment := client.get_experiment_by_name(name)) is not None:
        if experiment.lifecycle_stage != "deleted":
            _experiment_ids[key] = str(experiment.experiment_id)
        return str(experiment.experiment_id)
    try:
        experiment_id = str(client.create_experiment(name))
    except MlflowException:  # another process created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        experiment_id = str(experiment.experiment_id)
    _experiment_ids[key] = experiment_id
    return experiment_id
