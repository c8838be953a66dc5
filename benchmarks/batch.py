"""6. Batch throughput: a 40-partition backfill at 200 ms per call, 8 at a time, in one process.

The workflow has 40 static partitions. Two ways, interleaved, each in its own worker process:

- ``one run per partition``: one ``dg.materialize`` of the workflow's asset per partition (the
  WorkflowRunner resource, tracing on, its own MLflow run), 8 at a time on threads, as the
  in-process executor runs them; 8 is the pool limit.
- ``one range run``: the same workflow with ``orchestration.backfill: {max_partitions_per_run:
  40, max_concurrency: 8}``, materialized once over the whole range (the range tags the
  backfill daemon sets): each partition is still its own workflow run, MLflow run and
  materialization, 8 at once, but Dagster's run and step are paid once.

Dagster's own backfill daemon would start one process per run, and each re-imports the code
location (seconds of CPU per run on this 2-core machine): row 9 measures that. Ideal wall =
40 x (calls per run x 200 ms) / 8.
"""

from __future__ import annotations

from benchmarks.core import BenchResult, Context, Worker, median, spread
from benchmarks.workflows import linear, partitioned, write_workflow

NAME = "batch"
RUNS, THREADS, LATENCY_S, CALLS = 40, 8, 0.2, 3
TARGET = 0.80
# scenario -> label
VARIANTS = {"batch_ranges": "one range run", "batch": "one run per partition"}


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    env = ctx.env(ctx.mlflow_store(work))
    text = partitioned(linear("batch_chain", CALLS), RUNS)
    ranges = text + f"  backfill: {{max_partitions_per_run: {RUNS}, max_concurrency: {THREADS}}}\n"
    paths = {
        "batch": write_workflow(work / "workflows", "batch_chain", text),
        "batch_ranges": write_workflow(work / "ranges", "batch_chain", ranges),
    }
    workers = {}
    walls: dict[str, list[float]] = {name: [] for name in VARIANTS}
    drains: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        for name in VARIANTS:
            params = {"path": str(paths[name]), "latency": LATENCY_S, "threads": THREADS}
            params["short_warmup"] = ctx.quick  # --quick warms up with one wave of 8 runs
            workers[name] = Worker(name, params, env, work, work / f"{name}.log")
        for worker in workers.values():
            worker.call()  # warm-up batch
            worker.call("drain")
        for _ in range(ctx.reps(5, 1)):
            for name, worker in workers.items():
                reply = worker.call()
                if reply["llm_calls"] != RUNS * CALLS or reply["runs"] != RUNS:
                    raise RuntimeError(
                        f"{name}: expected {RUNS} materializations of {CALLS} LLM calls, "
                        f"got {reply['runs']} with {reply['llm_calls']}"
                    )
                walls[name].append(reply["elapsed_s"])
                drains[name].append(worker.call("drain")["elapsed_s"])
    finally:
        for worker in workers.values():
            worker.close()
    ideal = RUNS * CALLS * LATENCY_S / THREADS
    for name, label in VARIANTS.items():
        efficiency = ideal / median(walls[name])
        result.gate(
            f"throughput vs ideal, {label}",
            efficiency * 100,
            "%",
            f">= {TARGET * 100:.0f} %",
            efficiency >= TARGET,
        )
    for name, label in VARIANTS.items():
        result.info(f"wall time, {label}", median(walls[name]), "s")
    result.info("ideal wall time", ideal, "s")
    result.note(
        f"backfill: {RUNS} partitions, {CALLS} calls x {LATENCY_S * 1000:.0f} ms each, "
        f"{THREADS} at a time, tracing on; ideal {ideal:.2f} s"
    )
    for name, label in VARIANTS.items():
        result.note(
            f"{label}: {spread(walls[name])}; drain after each (untimed): {spread(drains[name])}"
        )
    return result
