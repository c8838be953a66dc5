"""One map run in a fresh process, for benchmark 7's growth rows (benchmarks/memory.py).

``python -m benchmarks._map_memory_child WORKDIR ITEMS tracked|untracked new|old`` runs a
16-item warm-up, then a map of ITEMS items (simulated backend, zero latency, 16 at once)
under tracemalloc, and prints ``{"peak_mb": ...}``: the most memory Python held during the
run above what it held before it. ``old`` keeps every span of the trace in MLflow's trace
manager until the root span ends (MLflow's own behaviour: spans are not released once
stored, tracking/span_release.py), for a side-by-side figure.
"""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

from benchmarks.workflows import write_workflow


def workflow(name: str, items: int, tracked: bool) -> str:
    reviews = json.dumps([f"review {i}" for i in range(items)])
    mlflow = "" if tracked else "\n  observability: {mlflow: {enabled: false}}"
    return f"""\
schema_version: "1"
flow: {{name: {name}}}
state:
  fields:
    reviews: {{type: "list[str]", required: true}}
    labels:  {{type: "list[str]", default: []}}
nodes:
  - id: classify
    map: {{over: reviews, as: review, max_concurrency: 16, max_items: 100000}}
    prompt: "Classify the sentiment of this review: {{review}}"
    outputs: [labels]
edges:
  - {{from: START, to: classify}}
  - {{from: classify, to: END}}
config:
  llm: {{max_retries: 0}}{mlflow}
orchestration:
  inputs: {{reviews: {reviews}}}
"""


def main() -> None:
    work, items, tracked, variant = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    from agents_pipelines.runner import run_workflow
    from agents_pipelines.spec import load_workflow
    from agents_pipelines.tracking import drain_trace_export, span_release

    if variant == "old":
        span_release.track = lambda trace_id: None  # type: ignore[assignment]
    on = tracked == "tracked"
    warm = write_workflow(work / "warm", "warm", workflow("warm", 16, on))
    run_workflow(load_workflow(warm))
    drain_trace_export()
    path = write_workflow(work / "main", "main", workflow("main", items, on))
    spec = load_workflow(path)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    run_workflow(spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    drain_trace_export()
    print(json.dumps({"peak_mb": (peak - before) / 1e6}))


if __name__ == "__main__":
    main()
