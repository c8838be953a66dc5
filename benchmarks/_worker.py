"""A benchmark worker: ``python -m benchmarks._worker SCENARIO PARAMS_JSON``.

Reads one command per line on stdin and answers one JSON line per command:
``run`` (time one run), ``drain`` (wait for MLflow's async trace export), ``rss`` (peak RSS),
``profile PATH`` (one run under cProfile, stats dumped to PATH), ``exit``.
"""

from __future__ import annotations

import cProfile
import json
import os
import resource
import sys
import time
import traceback
from typing import Any, TextIO


def _protocol_stream() -> TextIO:
    # Libraries may print; keep our replies on a private copy of stdout and send fd 1 to stderr.
    stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def _drain() -> dict[str, Any]:
    """Wait until every finished span is stored.

    ``mlflow.flush_trace_async_logging()`` takes about 1 s even with nothing to do: it stops
    the queue's consumer thread, which polls with ``Queue.get(timeout=1)``. Between runs we
    only need the pending work done, so we flush the span processors and join the queues
    (agents_pipelines._compat.mlflow.drain_export_queue; the public flush if they change).
    """
    started = time.perf_counter()
    if "mlflow" in sys.modules:
        from agents_pipelines._compat.mlflow import drain_export_queue

        if not drain_export_queue():  # MLflow's internals moved: the public, slower flush
            import mlflow

            mlflow.flush_trace_async_logging()
    return {"elapsed_s": time.perf_counter() - started}


def _rss() -> dict[str, Any]:
    return {"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def main() -> None:
    out = _protocol_stream()
    scenario, params = sys.argv[1], json.loads(sys.argv[2])
    started = time.perf_counter()
    try:
        from benchmarks.scenarios import SCENARIOS

        run = SCENARIOS[scenario](params)
    except Exception:
        out.write(json.dumps({"error": traceback.format_exc()}) + "\n")
        return
    out.write(json.dumps({"setup_s": time.perf_counter() - started, **_rss()}) + "\n")
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        try:
            if command == "exit":
                break
            if command == "run":
                reply = run()
            elif command == "drain":
                reply = _drain()
            elif command == "rss":
                reply = _rss()
            elif command == "profile":
                profiler = cProfile.Profile()
                reply = profiler.runcall(run)
                profiler.dump_stats(arg)
            else:
                reply = {"error": f"unknown command {command!r}"}
        except Exception:
            reply = {"error": traceback.format_exc()}
        out.write(json.dumps(reply, default=str) + "\n")
    _drain()


if __name__ == "__main__":
    main()
