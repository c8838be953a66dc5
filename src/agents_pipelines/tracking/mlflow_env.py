"""The one place agents_pipelines writes to the environment: defaults for MLflow's own
variables, which MLflow reads from ``os.environ`` and offers no other way to set.

Each default is ``setdefault``: a value the operator set in the environment wins. The
settings of MLflow's evaluation harness are the exception: set for one evaluation, then
restored (``evaluation_env``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# MLflow's HTTP client retries 7 times with exponential backoff by default: minutes per
# call when the tracking server is down, and a run makes several calls. The workflow's
# output is what the user paid for, so tracking gives up sooner.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
# MLflow's exporter writes spans in batches of 5 by default, one store transaction per
# batch: the larger share of tracing's cost per LLM call. CPU time per call, from chains of
# 1 and 11 calls on SQLite: 16 ms with batches of 5, 4.8 ms with batches of 100. A batch
# also goes out every 0.5 s instead of every 5 s, so a trace reaches the store soon after
# its run.
_SPAN_EXPORT_DEFAULTS = {
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_SPAN_BATCH_SIZE": "100",
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS": "500",
}
# SQLite takes one writer at a time, and MLflow's exporter writes span batches from up to
# 10 threads. Each batch of a trace already stored recomputes the trace's tokens and cost
# from every span stored so far (MLflow's log_spans), inside its write transaction, so the
# batches of a long trace queue on the lock past MLflow's 20 s busy timeout: a 4,000-item
# map logged 15 "database is locked" (spans lost) and peaked at 573 MB with 10 threads;
# with one, none and 451 MB (the simulated backend; 10,000 items logged 39).
_SQLITE_DEFAULTS = {"MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS": "1"}
# With OTEL_EXPORTER_OTLP_ENDPOINT set (an OpenTelemetry operator sets it for every pod),
# MLflow 3.17 sends traces to the collector instead of its store, and records a no-op trace
# when the exporter package is missing: the run's trace was lost. telemetry/span_export.py
# sends them to the collector beside MLflow's own copy instead.
_OTLP_DEFAULTS = {"MLFLOW_ENABLE_OTLP_EXPORTER": "false"}
# MLflow 3.17 refuses file stores unless this is set. Existing users keep working, and
# tracking/tracking_settings.py warns them to migrate.
_FILE_STORE_DEFAULTS = {"MLFLOW_ALLOW_FILE_STORE": "true"}


# mlflow.genai.evaluate's harness: no retry of a rate-limited predict call (a workflow
# retries its calls itself; re-running a case would pay for it twice), no rate limiter, and
# no trial call of predict on the first row to see whether it traces (a paid run; ours do).
_EVALUATION = {
    "MLFLOW_GENAI_EVAL_MAX_RETRIES": "0",
    "MLFLOW_GENAI_EVAL_PREDICT_RATE_LIMIT": "0",
    "MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT": "0",
    "MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION": "true",
}


def set_mlflow_env_defaults(tracking_uri: str) -> None:
    """Set MLflow's environment for tracking to ``tracking_uri``, before its first client.

    MLflow reads these variables when it makes a client, an HTTP request or its span
    exporter, so they must be in ``os.environ`` by then: the HTTP caps for an http(s)
    server; the span batch size, and MLflow's own OTLP export off, always; one span-export
    thread for SQLite; and the file-store opt-in for a file store.
    """
    defaults = _SPAN_EXPORT_DEFAULTS | _OTLP_DEFAULTS
    if tracking_uri.startswith(("http://", "https://")):
        defaults |= _HTTP_DEFAULTS
    if is_file_store(tracking_uri):
        defaults |= _FILE_STORE_DEFAULTS
    if tracking_uri.startswith("sqlite:"):
        defaults |= _SQLITE_DEFAULTS
    _withdraw_defaults_of_another_uri(defaults)
    for name, value in defaults.items():
        if name not in os.environ:
            os.environ[name] = value
            _ours[name] = value


# The defaults this module set (not the operator): a process that tracks to a SQLite store
# and then to a server must not keep SQLite's one export thread (whose exporter, retired as
# the URI changes, then drained a dead server's traces one at a time: a run's start waited
# past its 60 s deadline in the test suite, which switches stores). Module-level, not in
# the registry: it mirrors os.environ, which a registry reset would not undo.
_ours: dict[str, str] = {}


def _withdraw_defaults_of_another_uri(defaults: dict[str, str]) -> None:
    for name, value in list(_ours.items()):
        if name not in defaults and os.environ.get(name) == value:
            del os.environ[name]
            del _ours[name]


def is_file_store(tracking_uri: str) -> bool:
    """A file:// URI or a bare path, which MLflow treats as a file store."""
    return tracking_uri.startswith("file:") or (
        "://" not in tracking_uri and ":" not in tracking_uri
    )


@contextlib.contextmanager
def evaluation_env(workers: int) -> Iterator[None]:
    """MLflow's evaluation harness, for one call: ``workers`` rows at once (its predict and
    scorer thread pools), and the settings above. It reads them from the environment only."""
    wanted = {**_EVALUATION, "MLFLOW_GENAI_EVAL_MAX_WORKERS": str(workers)}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
