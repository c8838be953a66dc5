"""Spend limits per day and month: every run of a workflow (or of a pool) in the window
counts, failed ones too, read back from the Dagster instance's records.

The real Gemini client calls the loopback server; each call costs CALL_USD (the server's
default usage at the bundled gemini-2.5-flash price), so the limits below are set between
one call's cost and two."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from agents_pipelines.errors import AgentsPipelinesError
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.orchestration.checks import BUDGET_CHECK
from agents_pipelines.orchestration.spend_windows import pool_limits
from agents_pipelines.orchestration.stores.spend_journal import (
    KEEP_S,
    SQLITE_FILE,
    AttemptKey,
    open_journal,
)
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer
from agents_pipelines.testing.gemini_server.replies import Reply, default_reply
from agents_pipelines.usage import SpendLimit
from conftest import assert_usage_agrees, metadata_of, metadata_values, workflow_yaml, write

# (120 - 20 cached) x $0.30 + 20 x $0.03 + 85 x $2.50 per million tokens (gemini-2.5-flash).
CALL_USD = 0.0002431
UNTRACKED = "observability: {mlflow: {enabled: false}}"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def asset(tmp_path: Path, name: str, orchestration: str, calls: int = 1) -> dg.AssetsDefinition:
    nodes = [(f"step_{i}", f"Step {i} on {{topic}}.", f"out_{i}") for i in range(calls)]
    text = workflow_yaml(
        name, *nodes, orchestration=f"inputs: {{topic: cats}}\n{orchestration}", config=UNTRACKED
    )
    return build_workflow_asset(load_workflow(write(tmp_path, text, f"{name}.yaml")))


def run(
    instance: dg.DagsterInstance,
    assets: list[dg.AssetsDefinition],
    select: str | None = None,
    now: datetime | None = None,
    **fields: Any,
) -> dg.ExecuteInProcessResult:
    runner = WorkflowRunner(spend_limits_now=now.isoformat() if now else None, **fields)
    return dg.materialize(
        assets,
        instance=instance,
        selection=[select] if select else None,
        resources={"workflow_runner": runner},
        raise_on_error=False,
    )


def failure_of(result: dg.ExecuteInProcessResult, node: str) -> tuple[str, dict[str, Any]]:
    failure = result.failure_data_for_node(node)
    assert failure is not None and failure.user_failure_data is not None
    return failure.error.message, metadata_values(failure.user_failure_data.metadata)


def budget_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == BUDGET_CHECK
    ]
    return evaluation


def next_midnight_utc() -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=1)


def test_the_third_run_of_a_day_fails_before_calling_the_model(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    text = workflow_yaml(
        "daily",
        ("summarize", "Summarize {topic}.", "summary"),
        orchestration="inputs: {topic: cats}\nspend_limits:\n  - {per: day, max_cost_usd: 0.00048}",
    )
    daily = build_workflow_asset(load_workflow(write(tmp_path, text)))
    first, second = run(instance, [daily]), run(instance, [daily])
    assert first.success and second.success
    # A run that passes reports the same figures everywhere, and its window's spend.
    meta = metadata_of(second, "daily")
    assert meta["total_cost_usd"] == CALL_USD and meta["llm_calls"] == 1
    assert_usage_agrees(meta, meta["mlflow_run_id"])
    assert metadata_values(budget_check(second).metadata) == {
        "total_cost_usd": CALL_USD,
        "total_tokens": 205,
        "spent_this_day_usd": 2 * CALL_USD,
        "spent_this_day_limit_usd": 0.00048,
        "spent_this_day_resets_at": next_midnight_utc().isoformat(),
    }
    assert budget_check(second).passed  # the window is reported, the budget judged

    third = run(instance, [daily])
    assert not third.success
    assert len(gemini.requests) == 2  # the third run never called the model
    message, metadata = failure_of(third, "daily")
    start = (next_midnight_utc() - timedelta(days=1)).isoformat()
    assert (
        "Workflow daily stopped before its next LLM call: the spend limit of workflow "
        f"daily's day (UTC) is reached: $0.000486 spent since {start} (this run "
        "$0.000000) of max_cost_usd $0.000480. The window resets at "
        f"{next_midnight_utc().isoformat()}. Wait until then, or raise "
        "orchestration.spend_limits."
    ) in message
    assert (metadata["llm_calls"], metadata["total_cost_usd"]) == (0, 0.0)
    assert [row.data["outcome"] for row in metadata["attempts"].records] == ["failed"]
    # Not transient: Dagster does not retry it.
    assert not third.filter_events(lambda e: e.event_type_value == "STEP_UP_FOR_RETRY")


def test_failed_runs_count_toward_the_window(
    tmp_path: Path, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    pair = asset(tmp_path, "pair", "spend_limits: [{per: day, max_cost_usd: 0.0004}]", calls=2)
    # The first call is answered; the second fails for good, after one call was paid.
    gemini.set_default(
        lambda request: Fault(400) if "Step 1" in request.prompt_text else default_reply(request)
    )
    failed = run(instance, [pair])
    assert not failed.success
    _, metadata = failure_of(failed, "pair")
    # Two calls made, the refused one at no cost.
    assert (metadata["llm_calls"], metadata["total_cost_usd"]) == (2, CALL_USD)

    gemini.set_default(None)
    stopped = run(instance, [pair])
    assert not stopped.success
    message, metadata = failure_of(stopped, "pair")
    # The failed run's call plus this run's first call reach the limit: no second call.
    assert "is reached: $0.000486 spent since" in message
    assert "(this run $0.000243)" in message
    assert (metadata["llm_calls"], metadata["total_cost_usd"]) == (1, CALL_USD)
    assert len(gemini.requests) == 3


def test_a_month_window_counts_the_month_and_resets_on_the_first(
    tmp_path: Path, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    monthly = asset(tmp_path, "monthly", "spend_limits: [{per: month, max_cost_usd: 0.0002}]")
    assert run(instance, [monthly]).success  # nothing spent yet this month
    refused = run(instance, [monthly])
    message, _ = failure_of(refused, "monthly")
    now = datetime.now(UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_first = (first + timedelta(days=32)).replace(day=1)
    assert f"monthly's month (UTC) is reached: $0.000243 spent since {first.isoformat()}" in message
    assert f"The window resets at {next_first.isoformat()}." in message
    # Next month, this month's spend no longer counts.
    assert run(instance, [monthly], now=next_first + timedelta(hours=1)).success
    assert len(gemini.requests) == 2


def zone_with_midnight_at(hour_utc: int) -> str:
    """An IANA zone (fixed offset) whose local midnight is ``hour_utc``:00 UTC."""
    offset = -hour_utc % 24
    offset = offset - 24 if offset > 14 else offset
    # Etc/GMT names invert the sign: Etc/GMT+5 is UTC-5.
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


@pytest.mark.parametrize("counted", [True, False], ids=["same-local-day", "next-local-day"])
def test_the_timezone_sets_where_a_day_begins(
    tmp_path: Path,
    gemini: GeminiLoopbackServer,
    instance: dg.DagsterInstance,
    counted: bool,
) -> None:
    # A clock fixed just after the hour B that follows the first run: in a zone whose
    # midnight falls at B, that run was yesterday; in one whose midnight falls 12 h
    # earlier, it was today.
    boundary = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    zone = zone_with_midnight_at((boundary.hour - 12 * counted) % 24)
    limit = f"spend_limits: [{{per: day, max_cost_usd: 0.0002, timezone: {zone}}}]"
    zoned = asset(tmp_path, "zoned", limit)
    assert run(instance, [zoned]).success
    later = run(instance, [zoned], now=boundary + timedelta(minutes=1))
    assert later.success is not counted
    assert len(gemini.requests) == 1 + (not counted)
    if counted:
        message, _ = failure_of(later, "zoned")
        start = (boundary - timedelta(hours=12)).astimezone(ZoneInfo(zone))
        assert (
            f"zoned's day ({zone}) is reached: $0.000243 spent since {start.isoformat()}" in message
        )


def test_a_pool_limit_from_the_environment_counts_every_workflow_in_the_pool(
    tmp_path: Path,
    gemini: GeminiLoopbackServer,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTS_PIPELINES_POOL_SPEND_LIMITS", '{"gemini": {"day": 0.0004}}')
    first, second = asset(tmp_path, "first", ""), asset(tmp_path, "second", "")
    elsewhere = asset(tmp_path, "elsewhere", "pool: batch")
    assets = [first, second, elsewhere]
    assert run(instance, assets, "first").success
    assert run(instance, assets, "second").success  # the pool had $0.000243 of $0.0004
    refused = run(instance, assets, "first")
    message, metadata = failure_of(refused, "first")
    assert "the spend limit of pool gemini's day (UTC) is reached: $0.000486 spent since" in message
    assert "Wait until then, or raise the pool's limit." in message
    assert metadata["llm_calls"] == 0
    assert run(instance, assets, "elsewhere").success  # another pool, another limit
    # The resource's limits replace the variable's.
    raised = {"gemini": {"day": 0.0006}}
    assert run(instance, assets, "first", pool_spend_limits=raised).success
    assert len(gemini.requests) == 4


def test_a_bad_pool_limit_variable_is_named_with_what_it_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTS_PIPELINES_POOL_SPEND_LIMITS", '{"gemini": {"day": 0}}')
    with pytest.raises(AgentsPipelinesError) as error:
        pool_limits(None)
    assert str(error.value) == (
        "Invalid environment: AGENTS_PIPELINES_POOL_SPEND_LIMITS is not valid at gemini.day: "
        "input should be greater than 0 (got 0). It maps pool names to their limits in USD "
        'per day and/or month, e.g. {"gemini": {"day": 20, "month": 300}}'
    )
    monkeypatch.setenv("AGENTS_PIPELINES_POOL_SPEND_LIMITS", "gemini=20")
    with pytest.raises(AgentsPipelinesError, match=r"'gemini=20' is not valid JSON\. Fix: write"):
        pool_limits(None)


def test_pool_limits_of_the_resource_are_checked_and_named() -> None:
    assert pool_limits({"gemini": {"month": 300}}) == {"gemini": {"month": 300.0}}
    with pytest.raises(
        AgentsPipelinesError, match=r"pool_spend_limits is not valid \(gemini\.week"
    ):
        pool_limits({"gemini": {"week": 20}})


# per, zone, now, where the window starts, when it resets
WINDOWS = [
    "day UTC 2026-11-26T23:59+00:00 2026-11-26T00:00+00:00 2026-11-27T00:00+00:00",
    "day Asia/Tokyo 2026-11-26T23:59+00:00 2026-11-27T00:00+09:00 2026-11-28T00:00+09:00",
    "month UTC 2026-12-31T12:00+00:00 2026-12-01T00:00+00:00 2027-01-01T00:00+00:00",
    # Paris leaves summer time on 25 October: that day is 25 hours long.
    "day Europe/Paris 2026-10-25T12:00+00:00 2026-10-25T00:00+02:00 2026-10-26T00:00+01:00",
    # 03:00 UTC on 1 March is still February in New York.
    "month America/New_York 2026-03-01T03:00+00:00 2026-02-01T00:00-05:00 2026-03-01T00:00-05:00",
]


@pytest.mark.parametrize("case", WINDOWS, ids=[" ".join(c.split()[:2]) for c in WINDOWS])
def test_a_window_is_the_calendar_day_or_month_in_its_zone(case: str) -> None:
    per, zone, now, start, resets = case.split()
    limit = SpendLimit("workflow", "w", per, 1.0, zone)  # type: ignore[arg-type]
    window = limit.window(datetime.fromisoformat(now))
    assert [moment.isoformat(timespec="minutes") for moment in window] == [start, resets]


# --- Runs in flight at once: the spend journal (orchestration/stores/spend_journal.py) ---


def two_step(tmp_path: Path, name: str) -> dg.AssetsDefinition:
    """Two calls whose prompts name the workflow, so the server can slow one down."""
    text = workflow_yaml(
        name,
        ("one", f"{name} one on {{topic}}.", "a"),
        ("two", f"{name} two on {{topic}}.", "b"),
        orchestration="inputs: {topic: cats}",
        config=UNTRACKED,
    )
    return build_workflow_asset(load_workflow(write(tmp_path, text, f"{name}.yaml")))


def three_step(tmp_path: Path, name: str) -> dg.AssetsDefinition:
    return asset(tmp_path, name, "", calls=3)


def journal_rows(instance: dg.DagsterInstance) -> list[tuple[Any, ...]]:
    path = Path(instance.storage_directory(), SQLITE_FILE)
    with closing(sqlite3.connect(path)) as conn:
        sql = "SELECT asset_key, attempt, cost_usd, recorded_at IS NOT NULL FROM "
        return sorted(conn.execute(sql + "agents_pipelines_spend_journal").fetchall())


def test_a_run_sees_the_spend_of_a_run_still_in_flight(
    tmp_path: Path, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    # Pool limit: 2.5 calls. "first" pays one call, then waits 3 s on its second; "second"
    # starts meanwhile. It sees first's call in flight: its own two calls bring the pool
    # to 3 calls, so it stops before a third. Without the journal it would see $0 before
    # its start and make all three.
    gemini.set_default(
        lambda r: (
            Reply.text_reply("slow", delay_s=3.0)
            if "first two" in r.prompt_text
            else default_reply(r)
        )
    )
    first, second = two_step(tmp_path, "first"), three_step(tmp_path, "second")
    assets = [first, second]
    limits = {"gemini": {"day": 2.5 * CALL_USD}}
    results: list[dg.ExecuteInProcessResult] = []
    worker = threading.Thread(
        target=lambda: results.append(run(instance, assets, "first", pool_spend_limits=limits))
    )
    worker.start()
    deadline = time.monotonic() + 30
    while not any("first two" in r.prompt_text for r in gemini.requests):
        assert time.monotonic() < deadline and worker.is_alive()
        time.sleep(0.02)
    stopped = run(instance, assets, "second", pool_spend_limits=limits)
    assert worker.is_alive()  # first's second call was in flight throughout
    worker.join()
    (finished,) = results
    assert finished.success and metadata_of(finished, "first")["llm_calls"] == 2
    message, metadata = failure_of(stopped, "second")
    assert "pool gemini's day (UTC) is reached: $0.000729 spent since" in message
    assert "(this run $0.000486, runs in flight $0.000243)" in message
    assert (metadata["llm_calls"], metadata["total_cost_usd"]) == (2, 2 * CALL_USD)
    # The pool spent 4 calls of a 2.5-call limit: over by the calls in flight as each run
    # crossed it (second's second call, first's second call), never more.
    assert len(gemini.requests) == 4
    # Each attempt's row is marked once its record is stored: later runs read the records.
    assert journal_rows(instance) == [
        ("first", 1, 2 * CALL_USD, True),
        ("second", 1, 2 * CALL_USD, True),
    ]
    refused = run(instance, assets, "first", pool_spend_limits=limits)
    assert "is reached: $0.000972 spent since" in failure_of(refused, "first")[0]
    assert len(gemini.requests) == 4


@pytest.fixture(params=["sqlite", "postgres"])
def any_instance(request: pytest.FixtureRequest) -> Iterator[dg.DagsterInstance]:
    """An instance on SQLite, and one on PostgreSQL (the team profile's storage)."""
    if request.param == "sqlite":
        with dg.instance_for_test() as instance:
            yield instance
        return
    # A database of its own: the session's shared one holds MLflow's tables, whose `runs`
    # would clash with Dagster's.
    url = request.getfixturevalue("postgres_database_factory")()
    # Dagster's NOTIFY needs SQLAlchemy's psycopg2 driver, as deploy/team/dagster.yaml names.
    url = url.replace("postgresql://", "postgresql+psycopg2://", 1)
    overrides = {"storage": {"postgres": {"postgres_url": url}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        yield instance


def test_a_dead_attempts_row_counts_until_a_month_and_a_day_old(
    tmp_path: Path, gemini: GeminiLoopbackServer, any_instance: dg.DagsterInstance
) -> None:
    daily = asset(tmp_path, "daily", "spend_limits: [{per: day, max_cost_usd: 0.0004}]")
    dead = AttemptKey("killed-run", 1, "daily", "", "gemini")
    with open_journal(any_instance) as journal:
        # A process killed mid-run: its row was written, its record never will be.
        journal.write(dead, 0.0003)
        gone = AttemptKey("killed-long-ago", 1, "daily", "", "gemini")
        journal.write(gone, 0.5, now=time.time() - KEEP_S - 60)
        journal.prune_now_and_then(now=time.time() + 3600)
        since = time.time() - 86_400
        assert journal.in_flight(dead, "workflow", since, time.time()) == 0.0  # its own
        other = AttemptKey("other", 1, "daily", "", "gemini")
        assert journal.in_flight(other, "pool", 0.0, time.time()) == 0.0003  # pruned: gone
    first = run(any_instance, [daily])
    assert first.success  # $0.0003 + one call: $0.000543, over from here
    refused = run(any_instance, [daily])
    message, _ = failure_of(refused, "daily")
    assert "is reached: $0.000543 spent since" in message
    assert "(this run $0.000000, runs in flight $0.000300)" in message
    assert len(gemini.requests) == 1
    with open_journal(any_instance) as journal:
        # first's row is recorded: counted by its materialization, not twice.
        counted = journal.in_flight(other, "workflow", 0.0, 0.0)
        assert round(counted, 7) == round(0.0003 + CALL_USD, 7)
        assert journal.in_flight(other, "workflow", 0.0, time.time()) == 0.0003
