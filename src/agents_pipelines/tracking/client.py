"""MLflow's process-wide set-up: the tracking URI, span export batching and autolog.

LangChain's spans come from ``mlflow.langchain.autolog``, enabled once per process; they
nest under a run's root span because it is the active span while the graph runs.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agents_pipelines.tracking.sqlite_store import prepare_sqlite_store

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


def configured_client(tracking_uri: str) -> Any:
    """The client for ``tracking_uri``, with MLflow's process-wide state pointed at it.

    Traces are exported to the process-wide tracking URI, so it is set here as well.
    """
    global _autolog_enabled
    import mlflow

    with _configure_lock:
        prepare_sqlite_store(tracking_uri)
        for name, value in _SPAN_EXPORT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        # A no-op when unchanged; when changed it also re-points MLflow's trace exporter
        # (comparing with get_tracking_uri() would not do: it prefers the environment).
        mlflow.set_tracking_uri(tracking_uri)
        if not _autolog_enabled:
            mlflow.langchain.autolog(log_traces=True, silent=True)
            _autolog_enabled = True
    return mlflow.MlflowClient(tracking_uri)


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
