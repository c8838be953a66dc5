"""Every use of a private or undocumented upstream API, in one place: one module per library.

Each hook is a small function or class whose docstring says why it is needed, which upstream
releases were checked (the ones uv.lock pins), and which public API would replace it.
tests/test_compat.py exercises every hook against the installed releases and names the hook
that an upstream release broke; it also fails when a module outside this package touches a
private upstream name. ``make test-latest`` runs those tests against the newest releases that
pyproject.toml allows.

- ``dagster``: config validation, the stop flag, the pool slot claim of the event log storages.
- ``mlflow``: the trace exporter's client and queue, the raw span below MLflow's, the span
  processors in use, the bundled model catalog and its price lookup, span aggregates.
- ``langgraph``: the run config around a call, the streamed channels, the savers' internals.
- ``genai``: the HTTP library google-genai speaks, and its loggers.
"""

__all__: list[str] = []  # private: the hooks are imported from the modules
