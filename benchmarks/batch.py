"""6. Batch throughput: a 40-partition backfill at 200 ms per call, 8 at a time.

The workflow has 40 static partitions. Each partition is one ``dg.materialize`` of the
workflow's asset (the WorkflowRunner resource, tracing on, its own MLflow run), 8 at a time
in one process, as the in-process executor runs them; 8 is the pool limit. Dagster's own
backfill daemon would start one process per run, and each re-imports the code location
(seconds of CPU per run on this 2-core machine): the README's performance section says how
to run large backfills. Ideal wall = 40 x (calls per run x 200 ms) / 8.
"""

from __future__ import annotations

from benchmarks.core import BenchResult, Context, Worker, median, spread
from benchmarks.workflows import linear, partitioned, write_workflow

NAME = "batch"
RUNS, THREADS, LATENCY_S, CALLS = 40, 8, 0.2, 3
TARGET = 0.80


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    env = ctx.env(ctx.mlflow_store(work))
    text = partitioned(linear("batch_chain", CALLS), RUNS)
    path = write_workflow(work / "workflows", "batch_chain", text)
    params = {"path": str(path), "latency": LATENCY_S, "runs": RUNS, "threads": THREADS}
    params["short_warmup"] = ctx.quick  # --quick warms up with one wave of 8 runs
    worker = Worker("batch", params, env, work, work / "batch.log")
    runs, drains = [], []
    try:
        worker.call()  # warm-up batch
        worker.call("drain")
        for _ in range(ctx.reps(5, 1)):
            reply = worker.call()
            if reply["llm_calls"] != RUNS * CALLS:
                raise RuntimeError(f"expected {RUNS * CALLS} LLM calls, got {reply['llm_calls']}")
            runs.append(reply["elapsed_s"])
            drains.append(worker.call("drain")["elapsed_s"])
    finally:
        worker.close()
    ideal = RUNS * CALLS * LATENCY_S / THREADS
    wall = median(runs)
    efficiency = ideal / wall
    result.gate(
        "throughput vs ideal",
        efficiency * 100,
        "%",
        f">= {TARGET * 100:.0f} %",
        efficiency >= TARGET,
    )
    result.info("batch wall time", wall, "s")
    result.info("ideal wall time", ideal, "s")
    result.note(
        f"backfill: {RUNS} partitions, one dg.materialize each, {THREADS} at a time, "
        f"{CALLS} calls x {LATENCY_S * 1000:.0f} ms each, tracing on; ideal {ideal:.2f} s"
    )
    result.note(f"batch: {spread(runs)}; drain after each batch (untimed): {spread(drains)}")
    return result
