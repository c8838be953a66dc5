"""A run's usage figures grow linearly with its calls (issue 19, item 6).

Before each LLM call a budget is checked against the run's spend so far, and after each
priced call the spend journal is written. Both read the ledger's summary: when it copied
and re-added every call so far, a map of N items did O(N²) work (10,000 items: 10^8
records visited, and a copy of all of them per call). The ledger now keeps running totals.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.usage import UsageSummary, cost_summary
from agents_pipelines.usage.records import CallRecord, Figures
from conftest import write
from test_map_nodes import map_workflow, reviews


def records_read_by_a_run(tmp_path: Path, items: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many times the run read a call record's cost: every sum over the calls reads
    each record once."""
    reads = [0]
    cost = CallRecord.cost_usd

    def counted(record: CallRecord) -> float | None:
        reads[0] += 1
        return cost.fget(record)  # type: ignore[attr-defined]

    text = map_workflow(reviews(items), tracked=False).replace(
        "max_concurrency: 3", "max_concurrency: 16, max_items: 10000"
    )
    budgeted = text.replace("orchestration:", "orchestration:\n  budget: {max_cost_usd: 1000.0}")
    (tmp_path / str(items)).mkdir()
    path = write(tmp_path / str(items), budgeted)
    with monkeypatch.context() as patch:
        patch.setattr(CallRecord, "cost_usd", property(counted))
        result = run_workflow(load_workflow(path), backend="simulated")
    assert result.usage.llm_calls == items
    return reads[0]


def test_a_budgeted_maps_figures_cost_linear_work_in_its_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small, large = (
        records_read_by_a_run(tmp_path, 50, monkeypatch),
        records_read_by_a_run(tmp_path, 200, monkeypatch),
    )
    # Linear: 4x the items, 4x the reads (100 and 400 here, measured: each record is read
    # for its running total and once by the end of run reports). Re-adding every call before
    # and after each call read 1,840 and 37,504 records (20x), measured on the old ledger.
    assert large <= 4.5 * small, (small, large)
    assert large <= 4 * 200, (small, large)


def test_running_figures_are_the_sums_over_the_calls(tmp_path: Path) -> None:
    """The figures a report shows are the same floats, summed in call order, whether they
    were added up call by call or from the list of calls."""
    from agents_pipelines.usage import Price, TokenUsage

    calls = [
        CallRecord(
            node="n",
            model="m" if i % 5 else "unpriced",
            usage=TokenUsage(i, 2 * i, 3 * i),
            price=None if i % 5 == 0 else Price(i * 1.1e-7, i * 3.3e-7, "s"),
            latency_s=0.1,
            eval="judge" if i % 7 == 0 else None,
            cache_hit=i % 11 == 0,
            saved=Price(1e-7, 1e-7, "s") if i % 11 == 0 else None,
            status="cancelled" if i % 13 == 0 else "ok",
        )
        for i in range(1, 400)
    ]
    running = Figures()
    for call in calls:
        running = running.plus(call)
    added = UsageSummary(tuple(calls), figures=running)
    summed = UsageSummary(tuple(calls))
    assert added.totals() == summed.totals()
    assert summed.total_cost_usd == round(sum(c.cost_usd or 0.0 for c in calls), 9)
    assert summed.eval_tokens == sum(c.usage.total for c in calls if c.eval)
    assert summed.unpriced_models == ["unpriced"]
    assert summed.cancelled_calls == len([i for i in range(1, 400) if i % 13 == 0])
    report = cost_summary(added, workflow="w", backend="simulated", status="succeeded")
    assert report == cost_summary(summed, workflow="w", backend="simulated", status="succeeded")
