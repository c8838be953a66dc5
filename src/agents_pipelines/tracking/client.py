"""MLflow's process-wide set-up (the tracking URI, span export batching), and the tracer
that turns a run's LangChain callbacks into spans.

LangChain's spans come from MLflow's LangChain tracer, one per traced run, passed in the
run's config callbacks (``run_tracer``); they nest under the run's root span because it is
the active span while the graph runs. ``mlflow.langchain.autolog`` is not switched on: it
adds the same tracer by patching every LangChain callback manager of the process, about 11
per map item call, and that patch was a fifth of the event loop's CPU in a map.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agents_pipelines.tracking.mlflow_env import set_mlflow_env_defaults
from agents_pipelines.tracking.sqlite_store import prepare_sqlite_store

_configure_lock = threading.Lock()


def configured_client(tracking_uri: str) -> Any:
    """The client for ``tracking_uri``, with MLflow's process-wide state pointed at it.

    Traces are exported to the process-wide tracking URI, so it is set here as well.
    """
    import mlflow

    with _configure_lock:
        prepare_sqlite_store(tracking_uri)
        set_mlflow_env_defaults(tracking_uri)
        # A no-op when unchanged; when changed it also re-points MLflow's trace exporter
        # (comparing with get_tracking_uri() would not do: it prefers the environment).
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri)


def run_tracer(keep_content: bool) -> Any:
    """A new MLflow LangChain tracer for one run's config callbacks: every chain, node,
    chat model and tool run below it becomes a span of the active trace. Without
    ``keep_content`` (artifact_level below full) its spans get the placeholder in place of
    their content before MLflow serializes it, not after (span_policy drops it again)."""
    from agents_pipelines._compat.mlflow import langchain_tracer
    from agents_pipelines.tracking.span_policy import REDACTED

    return langchain_tracer(None if keep_content else REDACTED)


def import_tracer() -> None:
    """Import MLflow and its LangChain tracer ahead of a run: about 1 s of CPU, paid
    otherwise as the first traced run of a process starts."""
    from agents_pipelines._compat.mlflow import import_langchain_tracer

    import_langchain_tracer()


@contextmanager
def untraced() -> Iterator[None]:
    """Keep a run out of MLflow even where LangChain is traced in this process.

    A run with tracking disabled gets no tracer of ours, but ``mlflow.langchain.autolog``
    may be on (the user's, or ``mlflow.genai.evaluate``'s while it evaluates): the run
    would then be traced, its content unredacted, into MLflow's default experiment.
    Without MLflow imported, nothing can trace, and nothing is imported here.
    """
    if "mlflow" not in sys.modules:
        yield
        return
    import mlflow

    with mlflow.tracing.context(enabled=False):
        yield
