"""redact_pii's added latency per LLM call: masking on against off, tracing on in both.

``run_workflow`` of a chain of 1 and of 11 text calls on the simulated backend, each with
``redact_pii: true`` and without, in four worker processes; the topic of both is a
600-character ticket with an email address and a phone number, so every prompt, span and
record holds personal data to find (and the two variants do the same work but the masking). Per-call cost = slope between the two chain lengths (as tracing.py),
so the fixed per-run cost (Presidio's recognizers are built once per process, in warmup)
is apart.
"""

from __future__ import annotations

from benchmarks.core import BenchResult, Context, Worker, interleave, median, spread
from benchmarks.workflows import linear, write_workflow

NAME = "redaction"
SHORT, LONG = 1, 11
TARGET_MS = 2.0


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    env = ctx.env(ctx.mlflow_store(work))
    workers: dict[str, Worker] = {}
    try:
        for masked in (True, False):
            for calls in (SHORT, LONG):
                key = f"{'on' if masked else 'off'}_{calls}"
                text = linear(f"pii_{key}", calls, redact_pii=masked, ticket=True)
                path = write_workflow(work / "workflows", f"pii_{key}", text)
                params = {"path": str(path), "latency": 0.0}
                workers[key] = Worker("runner", params, env, work, work / f"{key}.log")
        runs = interleave(workers, rounds=ctx.reps(21, 4), warmup=ctx.reps(3, 1))
    finally:
        for worker in workers.values():
            worker.close()
    med = {k: median(r["elapsed_s"] for r in rs) * 1000 for k, rs in runs.items()}
    per_call_on = (med[f"on_{LONG}"] - med[f"on_{SHORT}"]) / (LONG - SHORT)
    per_call_off = (med[f"off_{LONG}"] - med[f"off_{SHORT}"]) / (LONG - SHORT)
    added = per_call_on - per_call_off
    target = f"<= {TARGET_MS:.0f} ms"
    result.gate("added latency per LLM call", added, "ms", target, added <= TARGET_MS)
    result.info("per call, redact_pii on", per_call_on, "ms")
    result.info("per call, redact_pii off", per_call_off, "ms")
    for key, rs in runs.items():
        result.note(
            f"{key:>6} ({key.split('_')[1]:>2} calls): {spread([r['elapsed_s'] for r in rs])}"
        )
    return result
