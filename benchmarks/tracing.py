"""3. Tracing cost per LLM call: tracing on (async export) against tracing off.

``run_workflow`` of a chain of 1 and of 11 text calls, each with ``observability.mlflow``
enabled and disabled, in four worker processes (a process that never traces never has
autolog installed). Per-call cost = slope between the two chain lengths, so the fixed
per-run cost (MLflow run, params, metrics, artifacts) is reported apart.
"""

from __future__ import annotations

from benchmarks.core import BenchResult, Context, Worker, interleave, median, spread
from benchmarks.workflows import linear, write_workflow

NAME = "tracing"
SHORT, LONG = 1, 11
TARGET_MS = 3.0


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    env = ctx.env(ctx.mlflow_store(work))
    workers: dict[str, Worker] = {}
    try:
        for tracing in (True, False):
            for calls in (SHORT, LONG):
                key = f"{'on' if tracing else 'off'}_{calls}"
                path = write_workflow(
                    work / "workflows",
                    f"chain_{key}",
                    linear(f"chain_{key}", calls, tracing=tracing),
                )
                params = {"path": str(path), "latency": 0.0}
                workers[key] = Worker("runner", params, env, work, work / f"{key}.log")
        drains: list[float] = []

        def drain(name: str, worker: Worker) -> None:
            if name.startswith("on"):
                drains.append(worker.call("drain")["elapsed_s"])

        runs = interleave(workers, rounds=ctx.reps(21, 4), warmup=ctx.reps(3, 1), after=drain)
    finally:
        for worker in workers.values():
            worker.close()
    med = {k: median(r["elapsed_s"] for r in rs) * 1000 for k, rs in runs.items()}
    per_call_on = (med[f"on_{LONG}"] - med[f"on_{SHORT}"]) / (LONG - SHORT)
    per_call_off = (med[f"off_{LONG}"] - med[f"off_{SHORT}"]) / (LONG - SHORT)
    added = per_call_on - per_call_off
    fixed = (med[f"on_{SHORT}"] - med[f"off_{SHORT}"]) - added
    result.gate("added latency per LLM call", added, "ms", f"<= {TARGET_MS:.0f} ms", added <= 3)
    result.info("per call, tracing on", per_call_on, "ms")
    result.info("per call, tracing off", per_call_off, "ms")
    result.info("fixed tracing cost per run", fixed, "ms")
    for key, rs in runs.items():
        result.note(
            f"{key:>6} ({key.split('_')[1]:>2} calls): {spread([r['elapsed_s'] for r in rs])}"
        )
    result.note(f"drain after traced runs (untimed): {spread(drains)}")
    return result
