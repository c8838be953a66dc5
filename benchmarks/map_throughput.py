"""8. Map throughput: one run maps over 500 items, 2 calls per item, 1 s per call, 32 at once.

Two map nodes in a row (``summarize`` over 500 documents, then ``label`` over the 500
summaries), each ``max_concurrency: 32``; ideal wall = 500 x 2 x 1 s / 32 = 31.25 s.
``run_workflow`` in a fresh worker process (tracing on, one MLflow run), after an untimed
warm-up run of 32 items. Two backends:

- ``simulated``: the simulated model awaits its 1 s latency (``simulated_latency_s``);
- ``gemini``: the real ``ChatGoogleGenerativeAI`` (its async client) against the Gemini
  loopback server, which runs in this process (not the worker's) and answers each call
  after 1 s. The worker's CPU time per call is the client's own cost, with ours and
  MLflow's.

Gated: wall time, peak RSS, every call in cost_summary.json and in the stored trace
(distinct node and item pairs: 1,000), and the time from the graph's end to the run's end
(the MLflow run closed, cost_summary.json written, the trace handed to the export). The
drain of the export after the run is an info row.

Info rows, A/B of the frozen heap (agents_pipelines.process_heap): a 160-item two-map
run with the real client, in fresh workers that alternate old (``gc.freeze`` a no-op: the
collector walks the imports' objects at every full collection) and new (the set-up's
objects frozen at the first run's start), ``reps`` pairs; the worker's CPU per call of
each, and new / old (the median of the pairs' ratios), and the CPU time spent in the
collector per call (``gc.callbacks``).

Info rows, A/B of the run's own LangChain tracer (tracking/client.py): the same two maps of
160 items, at 0.5 s per call and 16 at once (ideal 10 s), in fresh workers that alternate
old (MLflow's LangChain autolog on: its patch wraps every callback manager LangChain makes)
and new (only the tracer the run passes in its callbacks); the worker's CPU per call of
each, new / old (the median of the pairs' ratios), and each one's wall / ideal.
"""

from __future__ import annotations

from typing import Any

from benchmarks.core import BenchResult, Context, Worker, median
from benchmarks.workflows import two_maps, write_workflow

NAME = "map_throughput"
ITEMS, CALLS_PER_ITEM, LATENCY_S, LIMIT = 500, 2, 1.0, 32
IDEAL_S = ITEMS * CALLS_PER_ITEM * LATENCY_S / LIMIT
WALL_RATIO, RSS_MB, TAIL_S = 1.15, 600.0, 1.0
AB_ITEMS = 160  # the A/Bs' maps: 320 calls per run
TRACER_LATENCY_S, TRACER_LIMIT = 0.5, 16  # the tracer A/B's map, as in the issue that asked
FAKE_KEY = "AIzaSy" + "B" * 33  # the loopback server takes any key


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    path = write_workflow(work / "workflows", "map_500", two_maps("map_500", ITEMS, LIMIT))
    warm = write_workflow(work / "workflows", "map_warm", two_maps("map_warm", LIMIT, LIMIT))
    params = {"path": str(path), "warm_path": str(warm)}
    latency = {"AGENTS_PIPELINES_SIMULATED_LATENCY_S": str(LATENCY_S)}
    simulated = _samples(ctx, work, "simulated", params, latency)
    _gate(result, "simulated", simulated)
    from agents_pipelines.testing import GeminiLoopbackServer
    from agents_pipelines.testing.gemini_server import default_reply

    with GeminiLoopbackServer() as server:
        server.set_default(lambda r: _delayed(default_reply(r)))
        env = {
            "AGENTS_PIPELINES_LLM_BACKEND": "gemini",
            "GOOGLE_API_KEY": FAKE_KEY,
            "GOOGLE_GEMINI_BASE_URL": server.base_url,
        }
        gemini = _samples(ctx, work, "gemini", params, env)
        in_flight = server.max_in_flight
        heap = _heap_ab(ctx, work, env)
        server.set_default(lambda r: _delayed(default_reply(r), TRACER_LATENCY_S))
        tracer = _tracer_ab(ctx, work, env)
    _gate(result, "gemini client", gemini)
    result.info("gemini client: most calls in flight (server)", in_flight, "calls")
    _report_heap_ab(result, heap)
    _report_tracer_ab(result, tracer)
    return result


def _heap_ab(ctx: Context, work: Any, env: dict[str, str]) -> dict[str, list[float]]:
    """CPU per call of old and new (heap frozen or not), pairs interleaved in this run."""
    path = write_workflow(work / "workflows", "map_ab", two_maps("map_ab", AB_ITEMS, LIMIT))
    old, new = {"freeze_heap": False}, {"freeze_heap": True}
    return _ab(ctx, work, env, "heap", path, old, new)


def _tracer_ab(ctx: Context, work: Any, env: dict[str, str]) -> dict[str, list[float]]:
    """CPU per call and wall of old (autolog's patch on every LangChain callback manager)
    and new (the run's own tracer only), pairs interleaved in this run, on the issue's map:
    160 items of two calls, 0.5 s each, 16 at once."""
    flow = two_maps("map_tracer", AB_ITEMS, TRACER_LIMIT)
    path = write_workflow(work / "workflows", "map_tracer", flow)
    old, new = {"langchain_autolog": True}, {"langchain_autolog": False}
    return _ab(ctx, work, env, "tracer", path, old, new)


def _ab(
    ctx: Context,
    work: Any,
    env: dict[str, str],
    name: str,
    path: Any,
    old: dict[str, Any],
    new: dict[str, Any],
) -> dict[str, list[float]]:
    """Old and new worker params alternating in fresh workers, ``reps`` pairs: the worker's
    CPU and the collector's CPU per call (ms), and each run's wall time (s)."""
    warm = work / "workflows" / "map_warm.yaml"
    keys = ("old", "new", "old gc", "new gc", "old wall", "new wall")
    per_call: dict[str, list[float]] = {key: [] for key in keys}
    for i in range(ctx.reps(3, 1)):
        for label, variant in (("old", old), ("new", new)):
            params = {"path": str(path), "warm_path": str(warm), **variant}
            store = ctx.workdir(f"{NAME}/{name}-{label}-{i}")
            full_env = ctx.env(ctx.mlflow_store(store), **env)
            worker = Worker("map_throughput", params, full_env, work, store / "worker.log")
            try:
                reply = worker.call()
            finally:
                worker.close()
            calls = AB_ITEMS * CALLS_PER_ITEM
            assert min(reply["summary_calls"], reply["traced_calls"]) == calls, reply
            per_call[label].append(reply["cpu_s"] / calls * 1000)
            per_call[f"{label} gc"].append(reply["gc_s"] / calls * 1000)
            per_call[f"{label} wall"].append(reply["elapsed_s"])
    return per_call


def _report_heap_ab(result: BenchResult, per_call: dict[str, list[float]]) -> None:
    old, new = per_call["old"], per_call["new"]
    label = f"gemini client, {AB_ITEMS} items: worker CPU per call"
    result.info(f"{label}, heap not frozen (old)", median(old), "ms")
    result.info(f"{label}, set-up frozen (new)", median(new), "ms")
    ratio = median(n / o for n, o in zip(new, old, strict=True))
    result.info("gemini client: CPU per call new / old (frozen heap, pairs)", ratio, "x")
    collector = f"gemini client, {AB_ITEMS} items: collector CPU per call"
    result.info(f"{collector}, old", median(per_call["old gc"]), "ms")
    result.info(f"{collector}, new", median(per_call["new gc"]), "ms")
    pairs = ", ".join(f"{o:.1f}/{n:.1f}" for o, n in zip(old, new, strict=True))
    result.note(f"heap A/B: CPU per call old/new by pair {pairs} ms")


def _report_tracer_ab(result: BenchResult, per_call: dict[str, list[float]]) -> None:
    old, new = per_call["old"], per_call["new"]
    label = f"gemini client, {AB_ITEMS} items, {TRACER_LATENCY_S} s, {TRACER_LIMIT} at once"
    result.info(f"{label}: worker CPU per call, autolog patch (old)", median(old), "ms")
    result.info(f"{label}: worker CPU per call, run's own tracer (new)", median(new), "ms")
    ratio = median(n / o for n, o in zip(new, old, strict=True))
    result.info("gemini client: CPU per call new / old (run's own tracer, pairs)", ratio, "x")
    ideal = AB_ITEMS * CALLS_PER_ITEM * TRACER_LATENCY_S / TRACER_LIMIT
    for which in ("old", "new"):
        wall = median(per_call[f"{which} wall"]) / ideal
        result.info(f"{label}: wall / ideal ({ideal:.0f} s), {which}", wall, "x")
    pairs = ", ".join(f"{o:.1f}/{n:.1f}" for o, n in zip(old, new, strict=True))
    walls = ", ".join(
        f"{o:.2f}/{n:.2f}" for o, n in zip(per_call["old wall"], per_call["new wall"], strict=True)
    )
    result.note(f"tracer A/B: CPU per call old/new by pair {pairs} ms; wall {walls} s")


def _delayed(reply: Any, delay_s: float = LATENCY_S) -> Any:
    from dataclasses import replace

    return replace(reply, delay_s=delay_s)


def _samples(
    ctx: Context, work: Any, backend: str, params: dict[str, Any], extra: dict[str, str]
) -> list[dict[str, Any]]:
    """One run per fresh worker (so that peak RSS is one run's), ``reps`` times."""
    samples = []
    for i in range(ctx.reps(2, 1)):
        env = ctx.env(ctx.mlflow_store(work), **extra)
        worker = Worker("map_throughput", params, env, work, work / f"{backend}-{i}.log")
        try:
            reply = worker.call()
            reply["maxrss_mb"] = worker.call("rss")["maxrss_kb"] / 1024
        finally:
            worker.close()
        samples.append(reply)
    return samples


def _gate(result: BenchResult, label: str, samples: list[dict[str, Any]]) -> None:
    calls = ITEMS * CALLS_PER_ITEM
    wall = median(s["elapsed_s"] for s in samples)
    ratio = wall / IDEAL_S
    ok = ratio <= WALL_RATIO
    result.gate(f"{label}: wall / ideal ({IDEAL_S:.2f} s)", ratio, "x", f"<= {WALL_RATIO}x", ok)
    rss = max(s["maxrss_mb"] for s in samples)
    result.gate(f"{label}: peak RSS", rss, "MB", f"<= {RSS_MB:.0f} MB", rss <= RSS_MB)
    found = min(min(s["summary_calls"], s["traced_calls"], s["llm_calls"]) for s in samples)
    where = f"{label}: calls in cost_summary.json and trace"
    result.gate(where, found, "calls", f"= {calls}", found == calls)
    tail = max(s["tail_s"] for s in samples)
    result.gate(f"{label}: graph end -> run end", tail, "s", f"<= {TAIL_S:.1f} s", tail <= TAIL_S)
    cpu_ms = median(s["cpu_s"] for s in samples) / calls * 1000
    result.info(f"{label}: worker CPU per call", cpu_ms, "ms")
    drain = median(s["drain_s"] for s in samples)
    result.info(f"{label}: trace export drain after the run", drain, "s")
    walls = ", ".join(f"{s['elapsed_s']:.2f}" for s in samples)
    cpus = ", ".join(f"{s['cpu_s']:.1f}" for s in samples)
    rsss = ", ".join(f"{s['maxrss_mb']:.0f}" for s in samples)
    counts = ", ".join(
        f"{s['llm_calls']}/{s['summary_calls']}/{s['traced_calls']}" for s in samples
    )
    result.note(
        f"{label}: wall {walls} s; worker CPU {cpus} s; peak RSS {rsss} MB; "
        f"calls (ledger/cost_summary/trace) {counts}"
    )
