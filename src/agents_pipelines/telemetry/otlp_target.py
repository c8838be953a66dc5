"""Where a run's telemetry goes: OpenTelemetry's standard variables, else the workflow's
``config.observability.otlp``.

The environment wins, as MLFLOW_TRACKING_URI beats a workflow's tracking_uri: a platform
that runs an OpenTelemetry operator sets OTEL_EXPORTER_OTLP_ENDPOINT for every pod. Each
signal goes out when its endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` covers both) and
its ``OTEL_*_EXPORTER`` is not ``none``. The protocol is OpenTelemetry's default,
``http/protobuf``, unless ``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_PROTOCOL`` says ``grpc``.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents_pipelines.settings import OtlpProtocol, Settings, settings
from agents_pipelines.spec.models import OtlpConfig

HTTP: OtlpProtocol = "http/protobuf"


@dataclass(frozen=True)
class OtlpSignal:
    """One signal's exporter settings: the full URL (OTLP/HTTP) or address (gRPC). The
    exporter reads the other standard variables itself (headers, timeout, compression)."""

    endpoint: str
    protocol: OtlpProtocol


@dataclass(frozen=True)
class OtlpTarget:
    traces: OtlpSignal | None
    metrics: OtlpSignal | None
    source: str  # "environment" or "workflow": said in logs and errors


def resolve_target(config: OtlpConfig | None) -> OtlpTarget | None:
    """The run's target; None when neither the environment nor the workflow names one."""
    env = settings()
    if env.otlp_endpoint or env.otlp_traces_endpoint or env.otlp_metrics_endpoint:
        return _from_environment(env)
    if config is None:
        return None
    traces = _signal(None, config.endpoint, config.protocol, "traces")
    metrics = _signal(None, config.endpoint, config.protocol, "metrics")
    return OtlpTarget(traces, metrics, "workflow")


def _from_environment(env: Settings) -> OtlpTarget:
    protocol = env.otlp_protocol or HTTP
    traces = metrics = None
    if env.otel_traces_exporter != "none":
        traces_protocol = env.otlp_traces_protocol or protocol
        traces = _signal(env.otlp_traces_endpoint, env.otlp_endpoint, traces_protocol, "traces")
    if env.otel_metrics_exporter != "none":
        metrics_protocol = env.otlp_metrics_protocol or protocol
        metrics = _signal(env.otlp_metrics_endpoint, env.otlp_endpoint, metrics_protocol, "metrics")
    return OtlpTarget(traces, metrics, "environment")


def _signal(
    own: str | None, base: str | None, protocol: OtlpProtocol, path: str
) -> OtlpSignal | None:
    """As OpenTelemetry's specification reads them: a signal's own endpoint is used as is;
    the base endpoint gets /v1/<signal> over HTTP, and is the address itself over gRPC."""
    if own:
        return OtlpSignal(own, protocol)
    if not base:
        return None
    if protocol == HTTP:
        return OtlpSignal(f"{base.rstrip('/')}/v1/{path}", protocol)
    return OtlpSignal(base, protocol)
