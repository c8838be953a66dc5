"""6. Batch throughput: a 40-partition backfill at 200 ms per call, 8 at a time.

Partitions are not implemented in agents_pipelines yet, so the backfill is emulated: 40
``run_workflow`` calls (tracing on, each its own MLflow run) through a thread pool of 8
threads, the pool limit, in one process. Ideal wall = 40 x (calls per run x 200 ms) / 8.
"""

from __future__ import annotations

from benchmarks.core import BenchResult, Context, Worker, median, spread
from benchmarks.workflows import linear, write_workflow

NAME = "batch"
RUNS, THREADS, LATENCY_S, CALLS = 40, 8, 0.2, 3
TARGET = 0.80


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    env = ctx.env(ctx.mlflow_store(work))
    path = write_workflow(work / "workflows", "batch_chain", linear("batch_chain", CALLS))
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
        f"emulated backfill: {RUNS} run_workflow calls in a ThreadPoolExecutor({THREADS}), "
        f"{CALLS} calls x {LATENCY_S * 1000:.0f} ms each, tracing on; ideal {ideal:.2f} s"
    )
    result.note(f"batch: {spread(runs)}; drain after each batch (untimed): {spread(drains)}")
    return result
