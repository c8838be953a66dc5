"""Waiting for MLflow's asynchronous trace export, and asking whether a trace was stored.

The trace export stays asynchronous unless the workflow turns async_logging off; MLflow's
atexit hook drains the queue when the process ends, so no trace is lost.
"""

from __future__ import annotations

from agents_pipelines.tracking import trace_outcome
from agents_pipelines.tracking.client import configured_client


def drain_trace_export() -> None:
    """Block until every trace handed to MLflow is stored.

    ``mlflow.flush_trace_async_logging()`` stops and restarts the export thread, which
    wakes from a one-second queue poll: about 1 s per call, measured. Flushing the span
    batchers and joining the export queue returns once the last write is done (about the
    time of the write itself). Falls back to MLflow's public flush if its internals move.
    """
    import mlflow

    from agents_pipelines._compat.mlflow import drain_export_queue

    if not drain_export_queue():
        mlflow.flush_trace_async_logging()


def wait_for_trace(tracking_uri: str, trace_id: str) -> trace_outcome.TraceOutcome:
    """Wait for the trace's export; then whether, and how fully, MLflow stored it."""
    drain_trace_export()
    result = trace_outcome.outcome(trace_id)
    if result is None:  # MLflow's exporter could not be watched: ask the store
        result = _look_up_trace(tracking_uri, trace_id)
    return result


def _look_up_trace(tracking_uri: str, trace_id: str) -> trace_outcome.TraceOutcome:
    try:
        configured_client(tracking_uri).get_trace(trace_id, display=False)
    except Exception as exc:
        return trace_outcome.TraceOutcome(stored=False, error=exc)
    return trace_outcome.TraceOutcome(stored=True)
