"""A map's memory is flat in its number of items (issue 19, item 6).

LangGraph keeps each task of a super-step (its config, callbacks, ``Send`` payload and
checkpoint write) until the super-step ends: a map that sent all its items at once held
about 9 KB per item until its last call ended (10,000 items: ~90 MB). Items now go in
waves of 16 x ``max_concurrency``. The census counts live objects as the items run (every
25th item, after a full collection), so what is measured is what a run holds, not RSS."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import live_objects
from agents_pipelines.graph.map_node import wave_size
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from conftest import write


def census_workflow(items: int, *, tracked: bool, concurrency: int = 2) -> str:
    mlflow_config = "" if tracked else "\n  observability: {mlflow: {enabled: false}}"
    reviews = json.dumps([f"review {i}" for i in range(items)])
    return f"""\
schema_version: "1"
flow: {{name: census}}
state:
  fields:
    reviews: {{type: "list[str]", required: true}}
    labels:  {{type: "list[str]", default: []}}
nodes:
  - id: classify
    map: {{over: reviews, as: review, max_concurrency: {concurrency}, max_items: 5000}}
    function: live_objects:census
    outputs: [labels]
edges:
  - {{from: START, to: classify}}
  - {{from: classify, to: END}}
config:
  execution: {{max_steps: 5}}{mlflow_config}
orchestration:
  inputs: {{reviews: {reviews}}}
"""


def peaks(tmp_path: Path, items: int, *, tracked: bool) -> dict[str, int]:
    """The most objects of each kind alive at once while ``items`` items ran."""
    folder = tmp_path / f"{items}-{tracked}"
    folder.mkdir()
    live_objects.reset()
    # What earlier tests of this worker process left alive (a run still winding down in a
    # thread holds its tasks) is not this map's: counted before the run, then taken away.
    before = live_objects.alive_now()
    result = run_workflow(load_workflow(write(folder, census_workflow(items, tracked=tracked))))
    # Every item ran, in order, across the waves; max_steps counts the workflow's steps.
    assert result.state["labels"] == [f"review {i}" for i in range(items)]
    return {kind: peak - before[kind] for kind, peak in live_objects.PEAKS.items()}


def test_a_maps_live_tasks_do_not_grow_with_its_items(tmp_path: Path) -> None:
    spec = load_workflow(write(tmp_path, census_workflow(1, tracked=False))).spec
    wave = wave_size(spec, spec.nodes[0])
    assert wave == 32  # 16 rounds of max_concurrency 2
    small, large = peaks(tmp_path, 50, tracked=False), peaks(tmp_path, 400, tracked=False)
    # Sent all at once, 400 items held 400 tasks and 400 Sends (measured on the old code).
    for kind in ("PregelExecutableTask", "Send"):
        assert 0 < small[kind] <= wave + 2, (kind, small, large)
        assert large[kind] <= small[kind] + 2, (kind, small, large)


@pytest.mark.usefixtures("mlflow_uri")
def test_a_tracked_maps_spans_in_memory_do_not_grow_with_its_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's trace manager kept every span of a trace until its root span ended, whole
    (400 items: 779 live spans) or, later, compact (about 1.5 KB each): 600 items kept 581
    compact spans (measured on the old code). Stored spans now leave it
    (tracking/span_release.py), but for a stub of ids for each ended span that a span may
    still start below: the chain of the map's wave and send nodes, two per wave of 32 items
    here. Counted: the ended spans kept once stored (compact ones, stubs); the live ones
    are those in flight or waiting for the store, as many as it lags behind."""
    monkeypatch.setattr(live_objects, "EVERY", 100)
    small, large = peaks(tmp_path, 200, tracked=True), peaks(tmp_path, 600, tracked=True)
    kept = {n: p["CompactSpan"] + p["ReleasedSpan"] for n, p in ((200, small), (600, large))}
    assert kept[200] <= 200 and kept[600] <= 200, (kept, small, large)
    assert small["LiveSpan"] > 0 and large["ReleasedSpan"] > 0, (small, large)


@pytest.mark.usefixtures("mlflow_uri")
@pytest.mark.parametrize("paced", [True, False])
def test_a_map_waits_for_its_trace_export_before_each_wave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paced: bool
) -> None:
    """Calls that come back faster than the store writes made spans faster than the
    exporter stored them: the spans waiting for the store grew with the items. A map now
    waits before each wave until at most BACKLOG_SPANS of them wait (20 here; off: as
    before). The store is made slow: 0.25 s per batch of spans."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from agents_pipelines.tracking import span_release

    slow_store = SqlAlchemyStore.log_spans

    def log_spans(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.25)
        return slow_store(self, *args, **kwargs)

    monkeypatch.setattr(SqlAlchemyStore, "log_spans", log_spans)
    monkeypatch.setattr(span_release, "BACKLOG_SPANS", 20 if paced else 10**9)
    text = census_workflow(320, tracked=True, concurrency=1).replace("census", "export_backlog")
    live_objects.reset()
    result = run_workflow(load_workflow(write(tmp_path, text)))
    assert len(result.state["labels"]) == 320
    backlog = live_objects.PEAKS["backlog"]
    # 20, and what one wave of 16 items adds before the next one waits.
    bound = 20 + 4 * 16
    assert (backlog <= bound) if paced else (backlog > 2 * bound), backlog
