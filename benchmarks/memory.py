"""7. Memory: peak RSS of a fresh process that materializes one workflow once, and how a
map's memory grows with its items.

Each RSS sample is a new worker process: imports, builds the asset, runs ``dg.materialize``
once (tracing on), drains the trace export, then reports ``ru_maxrss`` (RUSAGE_SELF).

Growth: a fresh process per sample (benchmarks/_map_memory_child.py) maps over 2,000 and
over 6,000 items (zero latency, so the calls outrun the store: a map waits before a wave
while more than span_release.BACKLOG_SPANS spans wait for it, and both sizes fill that
backlog, 2 spans an item, so the slope is growth, not the bounded backlog filling up),
untracked and tracked, and reports the most memory Python held during the run
(tracemalloc); MB per 1,000 items = the slope between the two. ``old`` keeps every span of
the trace in MLflow's trace manager until the root span ends (spans not released once
stored). Gated: the tracked slope (new) at most 1 MB per 1,000 items above the untracked
one. What remains untracked is the run's outputs and per-call records (each item's reply
text); tracked, also a few bytes per stored span (its size, for the trace's size stats).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.core import REPO, BenchResult, Context, Worker, median
from benchmarks.workflows import three_node, write_workflow

NAME = "memory"
TARGET_MB = 400.0
SMALL, LARGE = 2000, 6000  # both past the spans a map lets wait for the store (span_release)
TRACKED_EXTRA_MB = 1.0  # tracked growth above untracked, MB per 1,000 items


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
    _growth(ctx, result)
    return result


def _growth(ctx: Context, result: BenchResult) -> None:
    work = ctx.workdir(f"{NAME}-growth")
    slopes = {}
    # Untracked, old and new are the same run: measured once.
    for tracked, variant in (("untracked", "new"), ("tracked", "old"), ("tracked", "new")):
        # The median of a few samples: at zero latency, how many spans wait for the
        # exporter at the peak depends on the machine's load (measured 7 to 13 MB tracked).
        # Old (about 2 minutes a sample) only once: a figure to compare, not gated.
        samples = range(ctx.reps(3, 1) if variant == "new" else 1)
        peaks = {
            n: median([_peak_mb(ctx, work, n, tracked, variant, i) for i in samples])
            for n in (SMALL, LARGE)
        }
        slopes[tracked, variant] = (peaks[LARGE] - peaks[SMALL]) / (LARGE - SMALL) * 1000
        label = f"map memory per 1,000 items, {tracked}" + (", old" if variant == "old" else "")
        result.info(label, slopes[tracked, variant], "MB")
        result.note(
            f"{label}: peak {peaks[SMALL]:.1f} MB ({SMALL} items), "
            f"{peaks[LARGE]:.1f} MB ({LARGE} items)"
        )
    extra = slopes["tracked", "new"] - slopes["untracked", "new"]
    target = f"<= {TRACKED_EXTRA_MB:.0f} MB"
    label = "tracked map growth above untracked, per 1,000 items"
    result.gate(label, extra, "MB", target, extra <= TRACKED_EXTRA_MB)


def _peak_mb(
    ctx: Context, work: Path, items: int, tracked: str, variant: str, sample: int
) -> float:
    folder = work / f"{tracked}-{variant}-{items}-{sample}"
    folder.mkdir(parents=True, exist_ok=True)
    env = ctx.env(ctx.mlflow_store(folder))
    child = [sys.executable, "-m", "benchmarks._map_memory_child", str(folder), str(items)]
    done = subprocess.run(
        [*child, tracked, variant],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])
