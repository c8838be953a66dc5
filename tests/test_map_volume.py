"""A long map's trace: stored whole as it runs, in time linear in its spans (issue 19,
item 6).

MLflow's SQL store re-reads every stored span of an unfinished trace on each span batch it
writes (to recompute the trace's tokens and cost): O(N²) rows for an N-span trace. A run's
trace info is now written once its first stored spans carry usage, so the store takes the
later batches as they are; the spans leave memory once stored, and the info written at
the end counts them (tracking/span_release.py).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.spec import load_workflow
from agents_pipelines.tracking import trace_outcome
from agents_pipelines.tracking.span_policy import ITEM_INDEX
from conftest import assert_usage_agrees, metadata_of, write
from test_map_nodes import map_workflow, reviews


@pytest.fixture
def stored_span_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows each recompute of a trace's tokens and cost reads back (MLflow 3.17.2's
    private ``SqlAlchemyStore._stored_span_rows_query``, called by ``log_spans``)."""
    reads: list[int] = []
    original = SqlAlchemyStore._stored_span_rows_query

    def counted(self: SqlAlchemyStore, session: Any, trace_ids: list[str]) -> Any:
        query = original(self, session, trace_ids)
        reads.append(query.count())
        return query

    monkeypatch.setattr(SqlAlchemyStore, "_stored_span_rows_query", counted)
    return reads


def stored_map_trace(tmp_path: Path, items: int, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run a map of ``items`` items (simulated, 32 at once) and check its stored trace
    whole: every item's call span, tokens and cost those of the run, size stats counting
    every span. Returns the trace."""
    # Small MLflow batches, so a few hundred items make the many batches of a big map.
    monkeypatch.setenv("MLFLOW_ASYNC_TRACE_LOGGING_MAX_SPAN_BATCH_SIZE", "10")
    text = map_workflow(reviews(items)).replace("max_concurrency: 3", "max_concurrency: 32")
    result = dg.materialize(
        [build_workflow_asset(load_workflow(write(tmp_path, text)))],
        resources={"workflow_runner": WorkflowRunner()},
    )
    meta = metadata_of(result, "reviews")
    assert meta["llm_calls"] == items
    # Its call spans counted, their costs summed, its tokens and cost: the run's.
    trace = assert_usage_agrees(meta, meta["mlflow_run_id"])
    calls = [span for span in trace.data.spans if span.span_type == "CHAT_MODEL"]
    assert sorted(span.attributes[ITEM_INDEX] for span in calls) == list(range(items))
    usage = trace.info.token_usage
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        assert usage[key] == sum(s.attributes["mlflow.chat.tokenUsage"][key] for s in calls)
    sizes = json.loads(trace.info.trace_metadata["mlflow.trace.sizeStats"])
    assert sizes["num_spans"] == len(trace.data.spans)
    assert trace.info.state.value == "OK" and trace.info.execution_duration > 0
    return trace


def test_a_long_maps_trace_is_stored_whole_without_reading_it_back(
    tmp_path: Path,
    mlflow_uri: str,
    simulated: None,
    monkeypatch: pytest.MonkeyPatch,
    stored_span_reads: list[int],
) -> None:
    trace = stored_map_trace(tmp_path, 120, monkeypatch)
    spans = len(trace.data.spans)
    # Fixed batches of 10 spans re-read ~spans²/20 rows (11,860 for 605 spans); batches
    # that grew with the trace, 2 x spans at most (1,705 for 605, measured). The trace info
    # is now written before the first batch with usage: no batch recomputes.
    assert stored_span_reads == [], (stored_span_reads, spans)
    assert mlflow.get_trace(trace.info.trace_id) is not None


def test_a_trace_stored_after_its_run_ended_is_not_read_back_either(
    tmp_path: Path,
    mlflow_uri: str,
    simulated: None,
    monkeypatch: pytest.MonkeyPatch,
    stored_span_reads: list[int],
) -> None:
    """On a loaded machine the store takes a run's spans after the run ended (MLflow has
    dropped the trace from memory then): its info is still written before their batches
    (a loaded run read back span rows, seen once)."""
    original = trace_outcome._RecordingClient.log_spans
    stalled = threading.Event()

    def behind(self: Any, location: str, spans: list[Any]) -> Any:
        if not stalled.is_set():  # the first batch waits: the others queue behind it
            stalled.set()
            time.sleep(1.5)
        return original(self, location, spans)

    monkeypatch.setattr(trace_outcome._RecordingClient, "log_spans", behind)
    trace = stored_map_trace(tmp_path, 60, monkeypatch)
    assert stored_span_reads == [], (stored_span_reads, len(trace.data.spans))


@pytest.mark.postgres
def test_a_maps_trace_on_postgresql_is_stored_whole(
    tmp_path: Path,
    postgres_database_factory: Any,
    mlflow_postgres_template: str,
    simulated: None,
    monkeypatch: pytest.MonkeyPatch,
    stored_span_reads: list[int],
) -> None:
    """PostgreSQL: MLflow's exporter writes span batches from ten threads at once."""
    uri = postgres_database_factory(template=mlflow_postgres_template)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    monkeypatch.chdir(tmp_path)
    trace = stored_map_trace(tmp_path, 60, monkeypatch)
    spans = len(trace.data.spans)
    assert stored_span_reads == [], (stored_span_reads, spans)
