"""7. Memory: peak RSS of a fresh process that materializes one workflow once.

Each sample is a new worker process: imports, builds the asset, runs ``dg.materialize`` once
(tracing on), drains the trace export, then reports ``ru_maxrss`` (RUSAGE_SELF).
"""

from __future__ import annotations

from benchmarks.core import BenchResult, Context, Worker, median
from benchmarks.workflows import three_node, write_workflow

NAME = "memory"
TARGET_MB = 400.0


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    env = ctx.env(ctx.mlflow_store(work))
    path = write_workflow(work / "workflows", "three_nodes", three_node("three_nodes"))
    params = {"path": str(path), "latency": 0.0}
    before, after = [], []
    for i in range(ctx.reps(3, 1)):
        worker = Worker("ours", params, env, work, work / f"memory-{i}.log")
        try:
            before.append(worker.ready["maxrss_kb"] / 1024)
            worker.call()
            worker.call("drain")
            after.append(worker.call("rss")["maxrss_kb"] / 1024)
        finally:
            worker.close()
    peak = median(after)
    result.gate("peak RSS, one materialization", peak, "MB", f"<= {TARGET_MB:.0f} MB", peak <= 400)
    result.info("peak RSS after imports and set-up", median(before), "MB")
    result.note(f"samples (MB): {', '.join(f'{m:.0f}' for m in after)}")
    return result
