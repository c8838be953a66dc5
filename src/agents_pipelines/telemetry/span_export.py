"""Each workflow trace's spans, as MLflow ends them, also go to an OpenTelemetry collector.

MLflow's own OTLP export replaces its store rather than adding to it (unless
MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT), and it loses the whole trace when the exporter
package is missing; tracking/mlflow_env.py turns it off. Instead, one span processor of
ours sits on MLflow's tracer provider, beside MLflow's own: it hands the spans of each
routed trace to a batching OTLP exporter for that trace's target. MLflow runs its span
processors, and ours of tracking/span_policy.py (cost, content, API keys), before a span
ends, so the collector gets the very spans MLflow stores.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from agents_pipelines.redaction import redacting_logger
from agents_pipelines.telemetry.otlp_target import HTTP, OtlpSignal

logger = redacting_logger(__name__)
FLUSH_TIMEOUT_MS = 5_000  # at a run's end; a collector that is down costs at most this


class _Router(SpanProcessor):
    """Sends the spans of routed traces to their target's batch processor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[int, OtlpSignal] = {}  # OpenTelemetry trace id -> target
        self._batches: dict[OtlpSignal, BatchSpanProcessor] = {}

    def route(self, trace_id: int, signal: OtlpSignal) -> None:
        with self._lock:
            self._routes[trace_id] = signal
            if signal not in self._batches:
                self._batches[signal] = BatchSpanProcessor(_exporter(signal))

    def end_route(self, trace_id: int) -> None:
        """Forget the trace, and send what is queued for its target now: a run may be the
        last thing its process does."""
        with self._lock:
            signal = self._routes.pop(trace_id, None)
            batch = self._batches.get(signal) if signal else None
        if batch is not None and not batch.force_flush(FLUSH_TIMEOUT_MS):
            logger.warning("The OpenTelemetry collector did not take the trace's spans in time")

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        with self._lock:
            signal = self._routes.get(context.trace_id) if context else None
            batch = self._batches.get(signal) if signal else None
        if batch is not None:
            batch.on_end(span)

    def shutdown(self) -> None:
        with self._lock:
            batches = list(self._batches.values())
            self._batches.clear()
        for batch in batches:
            batch.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        with self._lock:
            batches = list(self._batches.values())
        return all(batch.force_flush(timeout_millis) for batch in batches)


def _exporter(signal: OtlpSignal) -> SpanExporter:
    if signal.protocol == HTTP:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter(endpoint=signal.endpoint)


# Module-level, not in the registry: it lives on MLflow's tracer provider, which is
# process-wide too. ``_attached`` is the provider it was last added to: MLflow makes a new
# one whenever the tracking URI changes.
_router = _Router()
_attached: weakref.ReferenceType[Any] | None = None
_attach_lock = threading.Lock()


def route(trace_id: int, signal: OtlpSignal) -> None:
    """Send the spans of the trace ``trace_id`` (OpenTelemetry's) to ``signal``'s collector.

    Call it once the trace's root span has started: MLflow has made its provider by then.
    """
    _attach()
    _router.route(trace_id, signal)


def end_route(trace_id: int) -> None:
    _router.end_route(trace_id)


def forget_exporters() -> None:
    """Send what is queued and stop every exporter (a process done with its collectors)."""
    _router.shutdown()


def _attach() -> None:
    import mlflow.tracing

    from agents_pipelines._compat.mlflow import stop_mlflow_span_metrics

    global _attached
    provider = mlflow.tracing.get_bridged_tracer_provider()
    with _attach_lock:
        if _attached is not None and _attached() is provider:
            return
        if hasattr(provider, "add_span_processor"):  # not the no-op one (tracing off)
            provider.add_span_processor(_router)
            stop_mlflow_span_metrics()
        _attached = weakref.ref(provider)
