"""One run lifecycle (workflow_run.WorkflowRun): its spend read as data however it ends,
and the process registry that its runs reuse and a test resets with one call.

The real Gemini client calls the loopback server; Dagster materializes in-process."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from agents_pipelines.errors import LlmCallError, SpendLimitError
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.registry import ProcessRegistry
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.usage import SpendLimit, SpendLimits, UsageSummary
from agents_pipelines.workflow_run import RunOptions, WorkflowRun
from conftest import workflow_yaml, write

UNTRACKED = "observability: {mlflow: {enabled: false}}"
TWO_CALLS = workflow_yaml(
    "two_calls",
    ("outline", "Outline {topic}.", "outline"),
    ("summarize", "Summarize {outline}.", "summary"),
    config=f"{UNTRACKED}\nllm: {{max_retries: 0}}\nexecution: {{cache: {{ttl_s: 3600}}}}",
)


def test_a_failed_run_hands_its_spend_back_as_data(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    def second_call_fails(request: RecordedRequest) -> Reply | Fault:
        if request.prompt_text.startswith("Summarize"):
            return Fault.bad_request("the request is malformed")
        return Reply.text_reply("an outline")

    gemini.set_default(second_call_fails)
    run = WorkflowRun(load_workflow(write(tmp_path, TWO_CALLS)), RunOptions(cache_dir=tmp_path))
    with pytest.raises(LlmCallError) as failed:
        run.execute({"topic": "cats"})

    assert run.ending is not None and run.ending.status == "failed"
    assert run.ending.error is failed.value
    # The first call's spend (the server's default usage), on the ending and on the error.
    spent = run.ending.usage
    assert (spent.llm_calls, spent.tokens.total, spent.total_cost_usd) == (2, 205, 0.0002431)
    assert failed.value.usage == spent
    assert "Spent before failing: $0.000243 over 2 LLM call(s), 205 tokens." in str(failed.value)


def test_a_run_refused_before_it_starts_ends_with_nothing_spent(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    # Earlier runs spent $0.5 today, over the workflow's $0.001 a day.
    limit = SpendLimit("workflow", "two_calls", "day", 0.001)
    limits = SpendLimits((limit,), spent_since=lambda limit, start: 0.5)
    run = WorkflowRun(load_workflow(write(tmp_path, TWO_CALLS)), RunOptions(spend_limits=limits))
    with pytest.raises(SpendLimitError):
        run.execute({"topic": "cats"})
    assert run.ending is not None
    assert (run.ending.status, run.ending.usage) == ("failed", UsageSummary())
    assert gemini.requests == []


def test_run_options_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunOptions().evals = False  # type: ignore[misc]


def test_a_run_reuses_what_its_registry_keeps_and_a_reset_forgets_it(
    tmp_path: Path, gemini: GeminiLoopbackServer, fresh_registry: ProcessRegistry
) -> None:
    workflow = load_workflow(write(tmp_path, TWO_CALLS))
    first = WorkflowRun(workflow, RunOptions(cache_dir=tmp_path)).execute({"topic": "cats"})
    (graph,) = [entry[2] for entry in fresh_registry.compiled_graphs.values()]
    assert len(fresh_registry.response_caches) == 1 and first.usage.cache_hits == 0

    again = WorkflowRun(workflow, RunOptions(cache_dir=tmp_path)).execute({"topic": "cats"})
    assert again.usage.cache_hits == 2 and len(gemini.requests) == 2  # from the file
    assert [entry[2] for entry in fresh_registry.compiled_graphs.values()] == [graph]

    fresh_registry.reset()
    assert not fresh_registry.compiled_graphs and not fresh_registry.response_caches
    WorkflowRun(workflow, RunOptions(cache_dir=tmp_path)).execute({"topic": "cats"})
    (recompiled,) = [entry[2] for entry in fresh_registry.compiled_graphs.values()]
    assert recompiled is not graph  # compiled anew, as a new process would


def test_a_run_given_its_own_registry_leaves_the_process_registry_alone(
    tmp_path: Path, gemini: GeminiLoopbackServer, fresh_registry: ProcessRegistry
) -> None:
    own = ProcessRegistry()
    options = RunOptions(cache_dir=tmp_path, registry=own)
    WorkflowRun(load_workflow(write(tmp_path, TWO_CALLS)), options).execute({"topic": "cats"})
    assert len(own.compiled_graphs) == 1 and len(own.response_caches) == 1
    assert not fresh_registry.compiled_graphs and not fresh_registry.response_caches


def test_the_resource_keeps_its_stores_in_the_registry_and_a_reset_closes_them(
    tmp_path: Path, gemini: GeminiLoopbackServer, fresh_registry: ProcessRegistry
) -> None:
    asset = build_workflow_asset(load_workflow(write(tmp_path, TWO_CALLS)))
    (tmp_path / "home").mkdir()

    def materialize() -> None:
        with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
            result = dg.materialize(
                [asset], instance=instance, resources={"workflow_runner": WorkflowRunner()}
            )
        assert result.success

    materialize()
    stores = fresh_registry.sqlite_connections
    assert {path.name for path in stores} == {"checkpoints.sqlite"}
    (connection,) = stores.values()
    assert set(fresh_registry.checkpoint_savers) == set(stores)

    fresh_registry.reset()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        connection.execute("SELECT 1")
    assert not fresh_registry.checkpoint_savers and not fresh_registry.sqlite_connections
    materialize()  # the store opened again, as by a new process
    assert list(fresh_registry.sqlite_connections.values()) != [connection]
