"""Whether MLflow stored a trace. Its exporter logs a failed write and moves on.

MLflow's span exporter catches every error from the store (a server that refuses
``/traces``, a trace it cannot encode) and only logs a warning, so a run would report a
trace id that names no trace. For the traces a run waits for (async_logging: false), the
exporter's store client is wrapped to record, per trace, whether the trace was written
and the first error. Only watched traces are recorded: nothing is kept for the others.

The same wrapper streams a run's trace: once the store holds a batch of its spans, they
leave memory, and the trace info written at the end counts them (span_release.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from agents_pipelines._compat.mlflow import ExporterClientProxy, wrap_exporter_client
from agents_pipelines.tracking import span_release


@dataclass
class TraceOutcome:
    stored: bool = False  # the store accepted the trace
    error: Exception | None = None  # the first error writing it


# Module-level, not in the registry: fed by MLflow's process-wide trace export; an entry
# lives as long as its trace is being written.
_lock = threading.Lock()
_watched: dict[str, TraceOutcome] = {}


def watch(trace_id: str) -> bool:
    """Record what becomes of ``trace_id``; False if MLflow's exporter cannot be watched."""
    if not install():
        return False
    with _lock:
        _watched[trace_id] = TraceOutcome()
    return True


def outcome(trace_id: str) -> TraceOutcome | None:
    """What became of a watched trace (and stop watching it)."""
    with _lock:
        return _watched.pop(trace_id, None)


def install() -> bool:
    """Wrap the current exporter's client; False if it cannot be. Checked on every run:
    MLflow makes a new exporter whenever the tracking URI changes."""
    return wrap_exporter_client(_RecordingClient)


def _record(trace_id: str, error: Exception | None) -> None:
    with _lock:
        if (entry := _watched.get(trace_id)) is None:
            return
        if error is None:
            entry.stored = True
        elif entry.error is None:
            entry.error = error


class _RecordingClient(ExporterClientProxy):
    """MLflow's TracingClient, with the two calls that write a whole trace recorded, and
    a run's stored spans released (span_release.py)."""

    def start_trace(self, trace_info: Any) -> Any:
        span_release.complete(trace_info)  # the root span ended: the trace's last info
        try:
            stored = self.inner.start_trace(trace_info)
        except Exception as exc:
            _record(trace_info.trace_id, exc)
            raise
        _record(trace_info.trace_id, None)
        return stored

    def log_spans(self, location: str, spans: list[Any]) -> list[Any]:
        span_release.before_stored(self.inner, spans)
        try:
            logged: list[Any] = self.inner.log_spans(location, spans)
        except BaseException as exc:
            span_release.not_stored(spans, unsupported=isinstance(exc, NotImplementedError))
            raise
        span_release.after_stored(self.inner, spans)  # only once the store holds them
        return logged

    def upload_trace_data(self, trace_info: Any, trace_data: Any) -> None:
        # Spans go here, as an artifact, when the store cannot keep them itself.
        try:
            super().upload_trace_data(trace_info, trace_data)
        except Exception as exc:
            _record(trace_info.trace_id, exc)
            raise
