"""A run's GenAI metrics, through OpenTelemetry's MeterProvider and OTLP metric exporter.

- ``gen_ai.client.token.usage`` (histogram, ``{token}``): one point per call and token type,
  ``gen_ai.token.type`` ``input`` (the prompt, cached tokens included) or ``output`` (the
  reply, thinking included: Gemini bills it as output);
- ``gen_ai.client.operation.duration`` (histogram, seconds): each call's latency;
- ``agents_pipelines.cost`` (counter, ``USD``): each priced call's cost.

All three have the conventions' ``gen_ai.operation.name``, ``gen_ai.system`` and
``gen_ai.request.model``, plus ``workflow``, ``node``, ``model`` and ``partition``
(empty when the asset has none). They are recorded from the run's UsageSummary as it
ends, the very calls its Dagster metadata and cost_summary.json sum, so the totals agree.
The run then flushes: a Dagster step's process may end right after it.

Each run's process is short-lived (Dagster runs each in a process of its own), so the
exporter sends deltas, each run's own calls, unless
OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE says otherwise: a cumulative series that
starts anew in each process and is seen once would show Prometheus no increase at all. The
collector adds the deltas up (deploy/otel/collector.yaml, its deltatocumulative processor).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import Counter, Histogram
from opentelemetry.sdk.metrics import Counter as SdkCounter
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from agents_pipelines.redaction import redacting_logger
from agents_pipelines.settings import settings
from agents_pipelines.telemetry.genai_spans import GEMINI
from agents_pipelines.telemetry.otlp_target import HTTP, OtlpSignal
from agents_pipelines.usage import CallRecord, UsageSummary

logger = redacting_logger(__name__)
TOKEN_USAGE = "gen_ai.client.token.usage"
OPERATION_DURATION = "gen_ai.client.operation.duration"
COST = "agents_pipelines.cost"
FLUSH_TIMEOUT_MS = 5_000  # at a run's end, after the spans' 5 s at most
# The conventions' advisory bucket boundaries.
_TOKEN_BUCKETS = [4.0**i for i in range(14)]  # 1, 4, 16, ... 67108864
_DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01, 0.02, ... 81.92 s


@dataclass(frozen=True)
class _Meters:
    provider: MeterProvider
    tokens: Histogram
    duration: Histogram
    cost: Counter


# Module-level, not in the registry: one MeterProvider per collector for the process's
# life, whose cumulative totals Prometheus needs; a registry reset would restart them.
_lock = threading.Lock()
_meters: dict[OtlpSignal, _Meters] = {}


def record_run(
    signal: OtlpSignal, workflow: str, partition: str | None, usage: UsageSummary
) -> None:
    """Record each LLM call of ``usage`` and send the metrics now."""
    meters = _meters_for(signal)
    for call in usage.calls:
        if call.is_llm:
            _record_call(meters, call, workflow, partition or "")
    if not meters.provider.force_flush(FLUSH_TIMEOUT_MS):
        logger.warning("The OpenTelemetry collector did not take the run's metrics in time")


def _record_call(meters: _Meters, call: CallRecord, workflow: str, partition: str) -> None:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": GEMINI,
        "gen_ai.request.model": call.model,
        "workflow": workflow,
        "node": call.node,
        "model": call.model,
        "partition": partition,
    }
    meters.tokens.record(call.usage.prompt, {**attributes, "gen_ai.token.type": "input"})
    meters.tokens.record(call.usage.completion, {**attributes, "gen_ai.token.type": "output"})
    failed = {"error.type": "error"} if call.status != "ok" else {}
    meters.duration.record(call.latency_s, {**attributes, **failed})
    if call.cost_usd is not None:
        meters.cost.add(call.cost_usd, attributes)


def _meters_for(signal: OtlpSignal) -> _Meters:
    with _lock:
        if signal not in _meters:
            _meters[signal] = _make_meters(signal)
        return _meters[signal]


def _make_meters(signal: OtlpSignal) -> _Meters:
    # No periodic export (the runs flush), and no flush at exit: a collector gone by then
    # would hold the process's exit for the exporter's retries.
    reader = PeriodicExportingMetricReader(_exporter(signal), export_interval_millis=math.inf)
    provider = MeterProvider(metric_readers=[reader], resource=_resource(), shutdown_on_exit=False)
    meter = provider.get_meter("agents_pipelines")
    return _Meters(
        provider,
        meter.create_histogram(
            TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        ),
        meter.create_histogram(
            OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        ),
        meter.create_counter(COST, unit="USD", description="What the LLM calls cost, in USD"),
    )


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, as any SDK reads them; the service
    is agents-pipelines unless they name one."""
    detected = Resource.create()
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        detected = detected.merge(Resource({"service.name": "agents-pipelines"}))
    return detected


def _exporter(signal: OtlpSignal) -> MetricExporter:
    if signal.protocol == HTTP:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # type: ignore[assignment]
            OTLPMetricExporter,
        )
    if settings().otlp_metrics_temporality is not None:  # the exporter reads it itself
        return OTLPMetricExporter(endpoint=signal.endpoint)
    delta: dict[type, AggregationTemporality] = {
        SdkCounter: AggregationTemporality.DELTA,
        SdkHistogram: AggregationTemporality.DELTA,
    }
    return OTLPMetricExporter(endpoint=signal.endpoint, preferred_temporality=delta)


def forget_meters() -> None:
    """Shut every MeterProvider down (tests that point at a collector of their own)."""
    with _lock:
        meters = list(_meters.values())
        _meters.clear()
    for each in meters:
        each.provider.shutdown(timeout_millis=1_000)
