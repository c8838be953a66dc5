"""Span batches that grow with their trace, so storing a long trace takes linear time.

MLflow's SQL store (``SqlAlchemyStore._log_spans_once``, MLflow 3.17.2 checked), for each
span batch of a trace it already holds and has not finalized, reads back every span stored
so far and parses its JSON to recompute the trace's tokens and cost, inside its write
transaction. With batches of a fixed size (100 spans, or what ended in 0.5 s) an N-span
trace reads O(N²) rows: a 10,000-item map spent minutes in those transactions, and the
run's end waited behind them past its tracking deadline (TrackingTimeoutError).

Here a trace's first ``FIRST_SPANS`` spans go out as MLflow batches them; after that, its
spans are held back until they are as many as the spans already sent, or until its root
span ends (then all go, with the root). Each recompute then reads at most as many rows as
its batch writes: about 2N rows in all. A run killed mid-trace has still stored its first
100 spans and at least half of the rest that had ended (its tokens remain a floor).
The spans held are the ones MLflow's trace manager holds until the root span ends anyway.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

FIRST_SPANS = 100  # MLflow's batch size here (mlflow_env.py): small traces are unchanged


@dataclass
class _Trace:
    location: str  # the experiment the spans go to
    sent: int = 0  # spans handed to the store
    held: list[Any] = field(default_factory=list)


class GrowingBatches:
    """Decides, per call of the exporter's ``log_spans``, which spans to write now."""

    def __init__(self, first_spans: int = FIRST_SPANS):
        self._first_spans = first_spans
        self._lock = threading.Lock()
        self._traces: dict[str, _Trace] = {}

    def take(self, location: str, spans: list[Any]) -> list[tuple[str, list[Any]]]:
        """The ``(location, spans)`` batches to write now; the other spans wait for later."""
        by_trace: dict[str, list[Any]] = defaultdict(list)
        for span in spans:
            by_trace[span.trace_id].append(span)
        due: dict[str, list[Any]] = defaultdict(list)
        with self._lock:
            for trace_id, trace_spans in by_trace.items():
                trace = self._traces.setdefault(trace_id, _Trace(location))
                trace.held.extend(trace_spans)
                root_ended = any(span.parent_id is None for span in trace_spans)
                if root_ended or self._is_due(trace):
                    due[trace.location].extend(trace.held)
                    trace.sent += len(trace.held)
                    trace.held = []
                if root_ended:  # the trace is complete: nothing more to hold for it
                    del self._traces[trace_id]
        return list(due.items())

    def _is_due(self, trace: _Trace) -> bool:
        return trace.sent < self._first_spans or len(trace.held) >= trace.sent


BATCHES = GrowingBatches()  # the process's one span exporter (MLflow's) goes through this
