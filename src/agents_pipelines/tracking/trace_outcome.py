"""Whether MLflow stored a trace. Its exporter logs a failed write and moves on.

MLflow's span exporter catches every error from the store (a server that refuses
``/traces``, a trace it cannot encode) and only logs a warning, so a run would report a
trace id that names no trace. For the traces a run waits for (async_logging: false), the
exporter's store client is wrapped to record, per trace, whether the trace was written
and the first error. Only watched traces are recorded: nothing is kept for the others.

The same wrapper sends the exporter's span batches through span_batches.BATCHES, so a long
trace's batches grow with it (see span_batches.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from agents_pipelines._compat.mlflow import (
    CompactSpan,
    ExporterClientProxy,
    compact_ended_spans,
    wrap_exporter_client,
)
from agents_pipelines.tracking import span_batches


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
    its span batches grown (span_batches.py)."""

    def start_trace(self, trace_info: Any) -> Any:
        try:
            stored = self.inner.start_trace(trace_info)
        except Exception as exc:
            _record(trace_info.trace_id, exc)
            raise
        _record(trace_info.trace_id, None)
        return stored

    def log_spans(self, location: str, spans: list[Any]) -> list[Any]:
        # MLflow's exporter ignores what this returns (the spans the store logged).
        # Ended child spans are kept compact from here on, in MLflow's trace manager and
        # while held back for a later batch: a trace's span objects no longer grow with it.
        logged: list[Any] = []
        held = compact_ended_spans(spans)
        for batch_location, batch in span_batches.BATCHES.take(location, held):
            logged.extend(self.inner.log_spans(batch_location, [_whole(s) for s in batch]) or ())
        return logged

    def upload_trace_data(self, trace_info: Any, trace_data: Any) -> None:
        # Spans go here, as an artifact, when the store cannot keep them itself.
        try:
            super().upload_trace_data(trace_info, trace_data)
        except Exception as exc:
            _record(trace_info.trace_id, exc)
            raise


def _whole(span: Any) -> Any:
    """The span the store writes: a compact one made whole again."""
    return span.to_immutable_span() if isinstance(span, CompactSpan) else span
