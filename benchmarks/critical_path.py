"""2. Critical path: 4 parallel nodes then a join, 300 ms per call: wall ~ 2 calls, not 5.

Times ``dg.materialize`` of agents_pipelines' asset (tracing on) against the 600 ms critical
path; the bare ``graph.invoke`` of the same graph is shown for reference.
"""

from __future__ import annotations

from benchmarks.core import BenchResult, Context, Worker, interleave, median, spread
from benchmarks.workflows import fan_out, write_workflow

NAME = "critical_path"
LATENCY_S = 0.3
CRITICAL_S = 2 * LATENCY_S
FACTOR = 1.10


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    env = ctx.env(ctx.mlflow_store(work))
    path = write_workflow(work / "workflows", "fan_out_4", fan_out("fan_out_4", 4))
    params = {"path": str(path), "latency": LATENCY_S}
    workers = {v: Worker(v, params, env, work, work / f"{v}.log") for v in ("bare", "ours")}

    def drain(name: str, worker: Worker) -> None:
        worker.call("drain")

    try:
        runs = interleave(workers, rounds=ctx.reps(9, 2), warmup=1, after=drain)
    finally:
        for worker in workers.values():
            worker.close()
    times = {v: [r["elapsed_s"] for r in rs] for v, rs in runs.items()}
    wall = median(times["ours"]) * 1000
    limit = FACTOR * CRITICAL_S * 1000
    result.gate("materialize wall time", wall, "ms", f"<= {limit:.0f} ms", wall <= limit)
    result.info("wall / critical path (600 ms)", wall / (CRITICAL_S * 1000), "x")
    result.info("bare graph.invoke wall time", median(times["bare"]) * 1000, "ms")
    graph = [r["runner_duration_s"] * 1000 for r in runs["ours"]]
    result.note(f"materialize: {spread(times['ours'])}")
    result.note(f"bare invoke: {spread(times['bare'])}")
    result.note(
        f"run_workflow's own duration_s (graph under tracing): median {median(graph):.0f} ms"
    )
    return result
