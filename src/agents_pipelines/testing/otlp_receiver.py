"""``OtlpLoopbackReceiver``: an OpenTelemetry collector's OTLP/HTTP receiver on 127.0.0.1.

It accepts what an OTLP/HTTP exporter sends (``POST /v1/traces`` and ``/v1/metrics``,
protobuf, gzip or not), decodes it with opentelemetry-proto, and keeps it: tests read the
spans with their attributes, and sum the metric points, as a collector would see them.

    with OtlpLoopbackReceiver() as receiver:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        ...
        receiver.spans()  # [ReceivedSpan(name=..., attributes={...}), ...]
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

__all__ = ["MetricPoint", "OtlpLoopbackReceiver", "ReceivedSpan"]

_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # hex, as OpenTelemetry prints it
    span_id: str
    parent_id: str | None
    name: str
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class MetricPoint:
    """One data point: a counter's value, or a histogram's sum and count."""

    metric: str
    unit: str
    kind: str  # "sum" or "histogram"
    value: float  # a sum's value, a histogram's sum
    count: int  # a histogram's count; 1 for a sum
    attributes: Mapping[str, Any]


class OtlpLoopbackReceiver:
    """A context manager: a real HTTP server while inside, stopped on exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._traces: list[ExportTraceServiceRequest] = []
        self._metrics: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []  # each request's headers, lower-case names
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL, for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter adds /v1/traces)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> OtlpLoopbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            requests = list(self._traces)
        return [
            _span(span)
            for request in requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def metric_points(self) -> list[MetricPoint]:
        """One point per metric and attribute set, totalled as a collector would: delta
        points added up, a cumulative point replacing the one before (it repeats the
        running total)."""
        with self._lock:
            requests = list(self._metrics)
        totals: dict[tuple[str, tuple[tuple[str, str], ...]], MetricPoint] = {}
        for request in requests:
            for point, delta in _request_points(request):
                key = (point.metric, tuple(sorted(map(_str_pair, point.attributes.items()))))
                totals[key] = _add(totals.get(key), point) if delta else point
        return list(totals.values())

    def total(self, metric: str, **attributes: Any) -> float:
        """The sum over ``metric``'s points whose attributes include ``attributes``."""
        return sum(
            point.value
            for point in self.metric_points()
            if point.metric == metric
            and all(point.attributes.get(k) == v for k, v in attributes.items())
        )

    def _receive(self, path: str, body: bytes, headers: dict[str, str]) -> bytes | None:
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        with self._lock:
            self.headers.append(headers)
            if path == "/v1/traces":
                self._traces.append(ExportTraceServiceRequest.FromString(body))
                return ExportTraceServiceResponse().SerializeToString()
            if path == "/v1/metrics":
                self._metrics.append(ExportMetricsServiceRequest.FromString(body))
                return ExportMetricsServiceResponse().SerializeToString()
        return None


def _request_points(request: ExportMetricsServiceRequest) -> list[tuple[MetricPoint, bool]]:
    return [
        point
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in _points(metric)
    ]


def _add(before: MetricPoint | None, point: MetricPoint) -> MetricPoint:
    if before is None:
        return point
    return replace(point, value=before.value + point.value, count=before.count + point.count)


def _str_pair(item: tuple[str, Any]) -> tuple[str, str]:
    return item[0], repr(item[1])


def _span(span: Any) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex() or None,
        name=span.name,
        attributes=_attributes(span.attributes),
    )


def _points(metric: Any) -> list[tuple[MetricPoint, bool]]:
    """Each point of ``metric``, and whether it is a delta."""
    kind = metric.WhichOneof("data")
    if kind == "histogram":
        delta = metric.histogram.aggregation_temporality == _DELTA
        return [
            (
                MetricPoint(
                    metric.name, metric.unit, kind, p.sum, p.count, _attributes(p.attributes)
                ),
                delta,
            )
            for p in metric.histogram.data_points
        ]
    if kind == "sum":
        delta = metric.sum.aggregation_temporality == _DELTA
        return [
            (
                MetricPoint(
                    metric.name,
                    metric.unit,
                    kind,
                    p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int),
                    1,
                    _attributes(p.attributes),
                ),
                delta,
            )
            for p in metric.sum.data_points
        ]
    return []


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return None if kind is None else getattr(value, kind)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: OtlpLoopbackReceiver) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        """Quiet: headers may carry a collector's token."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = self.server.owner._receive(self.path, body, headers)
        self.send_response(200 if answer is not None else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer or b"")))
        self.end_headers()
        self.wfile.write(answer or b"")
