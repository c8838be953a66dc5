"""A long map's trace: stored whole, in time linear in its spans (issue 19, item 6).

MLflow's SQL store re-reads every stored span of an unfinished trace on each span batch it
writes (to recompute the trace's tokens and cost): with fixed-size batches, O(N²) rows for
an N-span trace. The exporter's batches grow with the trace instead (span_batches.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.spec import load_workflow
from agents_pipelines.tracking.span_batches import GrowingBatches
from conftest import assert_usage_agrees, metadata_of, write
from test_map_nodes import map_workflow, reviews

ITEMS = 300


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


def test_a_long_maps_trace_is_stored_whole_reading_each_span_back_about_once(
    tmp_path: Path,
    mlflow_uri: str,
    simulated: None,
    monkeypatch: pytest.MonkeyPatch,
    stored_span_reads: list[int],
) -> None:
    # Small MLflow batches, so a few hundred items make the many batches of a big map.
    monkeypatch.setenv("MLFLOW_ASYNC_TRACE_LOGGING_MAX_SPAN_BATCH_SIZE", "10")
    text = map_workflow(reviews(ITEMS)).replace("max_concurrency: 3", "max_concurrency: 32")
    result = dg.materialize(
        [build_workflow_asset(load_workflow(write(tmp_path, text)))],
        resources={"workflow_runner": WorkflowRunner()},
    )
    meta = metadata_of(result, "reviews")
    assert meta["llm_calls"] == ITEMS
    trace = assert_usage_agrees(meta, meta["mlflow_run_id"])  # whole, its cost the run's
    spans = len(trace.data.spans)
    assert spans > ITEMS
    # Each batch re-reads what is stored, itself included. Fixed batches of 10 spans read
    # ~spans²/20 rows: 11,860 for these 605 spans, measured on the unchanged code.
    # Growing batches: ~550 rows for the first 100 spans (batches of 10), then 2 x spans
    # at most for the doubling batches (1,705 in all, measured).
    assert sum(stored_span_reads) < 3 * spans, (sum(stored_span_reads), spans)
    assert mlflow.get_trace(trace.info.trace_id) is not None


class _Span:
    def __init__(self, trace_id: str, span_id: int, parent_id: int | None = 0):
        self.trace_id, self.span_id, self.parent_id = trace_id, span_id, parent_id


def test_batches_double_after_the_first_spans_and_all_go_with_the_root() -> None:
    batches = GrowingBatches(first_spans=4)
    sent: list[int] = []
    for start in range(0, 40, 2):
        for _, batch in batches.take("1", [_Span("t", start), _Span("t", start + 1)]):
            sent.append(len(batch))
    assert sent == [2, 2, 4, 8, 16]  # 32 sent, 8 held
    (root_batch,) = batches.take("1", [_Span("t", 99, parent_id=None)])
    assert root_batch == ("1", root_batch[1]) and len(root_batch[1]) == 9
    # A trace whose root has ended starts afresh: a late span goes out at once.
    assert [len(b) for _, b in batches.take("1", [_Span("t", 100)])] == [1]
