"""1. Materialization overhead: ``dg.materialize`` of a 3-node workflow at zero LLM latency.

Four worker processes, run in turn: the bare ``graph.invoke``, a plain Dagster asset invoking
that graph (Dagster's floor), agents_pipelines' asset, and the hand-written MLflow peer.
Overhead = median(materialize) - median(bare invoke). Our async trace export is drained
after each run, untimed, so runs do not overlap; its time is reported below the table.
For information, the peer also runs with MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false
("peer_sync"): its flush then has no queue to wait for.
"""

from __future__ import annotations

from benchmarks.core import BenchResult, Context, Worker, interleave, median, spread
from benchmarks.workflows import three_node, write_workflow

NAME = "materialization"
TARGET_MS = 50.0
TARGET_RATIO = 10.0


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    env = ctx.env(ctx.mlflow_store(work))
    path = write_workflow(work / "workflows", "three_nodes", three_node("three_nodes"))
    params = {"path": str(path), "latency": 0.0}
    variants: tuple[str, ...] = ("bare", "dagster_plain", "ours", "peer", "peer_sync")
    if ctx.quick:
        variants = variants[:-1]
    sync = {**env, "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false"}
    workers = {
        v: Worker(
            v.removesuffix("_sync"),
            params,
            sync if v.endswith("_sync") else env,
            work,
            work / f"{v}.log",
        )
        for v in variants
    }
    drains: list[float] = []

    def drain(name: str, worker: Worker) -> None:
        if name == "ours":
            drains.append(worker.call("drain")["elapsed_s"])

    try:
        runs = interleave(workers, rounds=ctx.reps(25, 4), warmup=ctx.reps(4, 1), after=drain)
    finally:
        for worker in workers.values():
            worker.close()
    times = {v: [r["elapsed_s"] for r in runs[v]] for v in variants}
    med = {v: median(t) for v, t in times.items()}
    ours = (med["ours"] - med["bare"]) * 1000
    peer = (med["peer"] - med["bare"]) * 1000
    floor = (med["dagster_plain"] - med["bare"]) * 1000
    result.gate("overhead per materialization", ours, "ms", f"<= {TARGET_MS:.0f} ms", ours <= 50)
    ratio = peer / ours if ours > 0 else float("inf")
    result.gate("peer overhead / our overhead", ratio, "x", f">= {TARGET_RATIO:.0f}x", ratio >= 10)
    result.info("Dagster's own floor (plain asset - bare)", floor, "ms")
    result.info("our tracking (ours - plain asset)", ours - floor, "ms")
    result.info("peer tracking (peer - plain asset)", peer - floor, "ms")
    if "peer_sync" in med:
        peer_sync = (med["peer_sync"] - med["bare"]) * 1000
        result.info("peer overhead, sync trace export (info)", peer_sync, "ms")
    for v in variants:
        result.note(f"{v:>13}: {spread(times[v])}")
    result.note(f"   ours drain: {spread(drains)} (async trace export, untimed, after each run)")
    return result
