"""MLflow's process-wide set-up: the tracking URI, span export batching and autolog.

LangChain's spans come from ``mlflow.langchain.autolog``, enabled once per process; they
nest under a run's root span because it is the active span while the graph runs.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agents_pipelines.tracking.mlflow_env import set_mlflow_env_defaults
from agents_pipelines.tracking.sqlite_store import prepare_sqlite_store

# Module-level, not in the registry: mirrors MLflow's autolog switch, which is process-wide.
_configure_lock = threading.Lock()
_autolog_enabled = False


def configured_client(tracking_uri: str) -> Any:
    """The client for ``tracking_uri``, with MLflow's process-wide state pointed at it.

    Traces are exported to the process-wide tracking URI, so it is set here as well.
    """
    global _autolog_enabled
    import mlflow

    with _configure_lock:
        prepare_sqlite_store(tracking_uri)
        set_mlflow_env_defaults(tracking_uri)
        # A no-op when unchanged; when changed it also re-points MLflow's trace exporter
        # (comparing with get_tracking_uri() would not do: it prefers the environment).
        mlflow.set_tracking_uri(tracking_uri)
        if not _autolog_enabled:
            # Inline: on LangGraph's async path (map items) MLflow would otherwise hand each
            # span's start and end to a thread pool, two thread hops per span.
            mlflow.langchain.autolog(log_traces=True, silent=True, run_tracer_inline=True)
            _autolog_enabled = True
    return mlflow.MlflowClient(tracking_uri)


def import_autolog() -> None:
    """Import MLflow and its LangChain autolog ahead of a run: about 1 s of CPU, paid
    otherwise as the first traced run of a process starts."""
    import mlflow.langchain  # noqa: F401


def autolog_changed() -> None:
    """MLflow's autolog configuration was changed by someone else (``mlflow.genai.evaluate``
    overrides it during an evaluation and restores it without our settings, after which
    runs in this process were not traced): the next run configures it again."""
    global _autolog_enabled
    with _configure_lock:
        _autolog_enabled = False


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
