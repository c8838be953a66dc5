"""The development cache (``config.execution.cache``): a request seen within the TTL is
answered from a SQLite file in the Dagster instance's storage folder, at $0.

The real Gemini client against the loopback server; the server's request log says which
calls were made. Materialized by Dagster in-process, tracked in a real MLflow store."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient

from agents_pipelines.llm import cache as dev_cache
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.registry import process_registry
from agents_pipelines.runner import RunResult, run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.tracking import drain_trace_export
from conftest import assert_usage_agrees, metadata_of, write

CACHE = "cache: {ttl_s: 3600}"
UNTRACKED = "observability: {mlflow: {enabled: false}}"


def chain(second: str = "Outline {first}.", *, extra: str = "", config: str = "") -> str:
    """Three LLM nodes, each fed by the one before; ``extra`` is YAML added to `second`."""
    return f"""\
schema_version: "1"
flow: {{name: chain}}
state:
  fields:
    topic: {{type: str, required: true}}
    first: {{type: str}}
    second: {{type: str}}
    third: {{type: int}}
nodes:
  - {{id: research, prompt: "Research {{topic}}.", outputs: [first]}}
  - {{id: outline, prompt: "{second}", outputs: [second]{extra}}}
  - {{id: count, prompt: "Count the words of {{second}}.", outputs: [third]}}
edges:
  - {{from: START, to: research}}
  - {{from: research, to: outline}}
  - {{from: outline, to: count}}
  - {{from: count, to: END}}
config:
  execution: {{{CACHE}}}
{config}orchestration:
  inputs: {{topic: cats}}
"""


def materialize(path: Path, home: Path) -> dg.ExecuteInProcessResult:
    """A materialization by a fresh Dagster instance on ``home``, and a fresh cache object:
    what a second process sees is the file alone."""
    process_registry().reset()
    home.mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        return dg.materialize(
            [build_workflow_asset(load_workflow(path))],
            resources={"workflow_runner": WorkflowRunner()},
            instance=instance,
        )


def rows(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row.data["node"]: row.data for row in meta["node_calls"].records}


def test_a_second_materialization_is_answered_by_the_cache_at_no_cost(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    path, home = write(tmp_path, chain()), tmp_path / "dagster_home"
    first = metadata_of(materialize(path, home), "chain")
    assert len(gemini.requests) == 3
    assert first["cache_hits"] == 0 and first["saved_cost_usd"] == 0.0
    assert first["total_cost_usd"] > 0
    assert (home / "storage" / dev_cache.CACHE_FILE).is_file()  # beside the run storage
    assert_usage_agrees(first, first["mlflow_run_id"])

    second = metadata_of(materialize(path, home), "chain")
    assert len(gemini.requests) == 3  # no request at all
    assert second["llm_calls"] == 3 and second["cache_hits"] == 3
    assert second["total_cost_usd"] == 0.0 and second["total_tokens"] == 0
    assert second["saved_cost_usd"] == first["total_cost_usd"]
    for node, row in rows(second).items():
        assert row["cache_hit"] is True and row["cost_usd"] == 0.0, node
        assert row["saved_cost_usd"] == rows(first)[node]["cost_usd"], node
    assert {row["cache_hit"] for row in rows(first).values()} == {False}

    # Dagster, MLflow metrics, cost_summary.json and the trace agree, hits included.
    trace = assert_usage_agrees(second, second["mlflow_run_id"])
    client = MlflowClient()
    run = client.get_run(second["mlflow_run_id"])
    assert run.data.metrics["saved_cost_usd"] == second["saved_cost_usd"]
    assert run.data.metrics["cache_hits"] == 3
    summary = json.loads(
        Path(client.download_artifacts(run.info.run_id, "cost_summary.json")).read_text()
    )
    assert summary["totals"]["saved_cost_usd"] == second["saved_cost_usd"]
    assert [c["cache_hit"] for c in summary["calls"]] == [True] * 3
    assert sum(c["saved_cost_usd"] for c in summary["calls"]) == pytest.approx(
        second["saved_cost_usd"], abs=1e-12
    )
    spans = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert [s.attributes["agents_pipelines.cache_hit"] for s in spans] == [True] * 3
    saved = sum(s.attributes["agents_pipelines.saved_cost_usd"] for s in spans)
    assert round(saved, 9) == second["saved_cost_usd"]
    assert all(s.attributes["mlflow.llm.cost"]["total_cost"] == 0.0 for s in spans)
    first_trace = mlflow.get_trace(
        client.get_run(first["mlflow_run_id"]).data.tags["agents_pipelines.trace_id"]
    )
    assert not any("agents_pipelines.cache_hit" in s.attributes for s in first_trace.data.spans)


def test_a_changed_prompt_calls_that_node_and_the_nodes_after_it_only(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    home = tmp_path / "dagster_home"
    materialize(write(tmp_path, chain()), home)
    assert len(gemini.requests) == 3
    gemini.reset()

    changed = metadata_of(materialize(write(tmp_path, chain("Plan {first}.")), home), "chain")
    prompts = [r.prompt_text for r in gemini.requests]
    assert len(prompts) == 2
    assert prompts[0] == "Plan Loopback reply to: Research cats.."
    assert prompts[1].startswith("Count the words of Loopback reply to: Plan")
    assert {n: r["cache_hit"] for n, r in rows(changed).items()} == {
        "research": True,
        "outline": False,
        "count": False,
    }
    assert changed["total_cost_usd"] == round(
        rows(changed)["outline"]["cost_usd"] + rows(changed)["count"]["cost_usd"], 9
    )
    assert changed["saved_cost_usd"] == rows(changed)["research"]["saved_cost_usd"] > 0
    assert_usage_agrees(changed, changed["mlflow_run_id"])


def run(path: Path, cache_dir: Path, **inputs: Any) -> RunResult:
    return run_workflow(load_workflow(path), inputs or {"topic": "cats"}, cache_dir=cache_dir)


def test_a_node_with_cache_false_always_calls(tmp_path: Path, gemini: GeminiLoopbackServer) -> None:
    path = write(tmp_path, chain(extra=", cache: false", config=f"  {UNTRACKED}\n"))
    run(path, tmp_path)
    gemini.reset()
    again = run(path, tmp_path)
    (request,) = gemini.requests
    assert request.prompt_text == "Outline Loopback reply to: Research cats.."
    assert [(c.node, c.cache_hit) for c in again.usage.calls] == [
        ("research", True),
        ("outline", False),
        ("count", True),  # the same reply, so the same request
    ]
    assert again.usage.total_cost_usd == again.usage.calls[1].cost_usd


def test_inputs_model_and_settings_are_part_of_the_key(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    run(write(tmp_path, chain(config=f"  {UNTRACKED}\n")), tmp_path)
    run(write(tmp_path, chain(config=f"  {UNTRACKED}\n")), tmp_path, topic="dogs")
    assert len(gemini.requests) == 6  # every prompt differs
    for llm in ("{temperature: 0.5}", "{model: gemini-2.5-pro}", "{max_output_tokens: 99}"):
        gemini.reset()
        run(write(tmp_path, chain(config=f"  {UNTRACKED}\n  llm: {llm}\n")), tmp_path)
        assert len(gemini.requests) == 3, llm


def test_an_entry_expires_after_its_ttl_and_is_pruned(
    tmp_path: Path, gemini: GeminiLoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000.0]
    registry = process_registry()
    monkeypatch.setattr(registry, "cache_clock", lambda: now[0])
    path = write(tmp_path, chain(config=f"  {UNTRACKED}\n"))
    run(path, tmp_path)
    now[0] += 3599  # within ttl_s 3600
    assert run(path, tmp_path).usage.cache_hits == 3 and len(gemini.requests) == 3
    now[0] += 2  # past it
    registry.reset()  # a new process (with the same clock): opening the cache prunes it
    monkeypatch.setattr(registry, "cache_clock", lambda: now[0])
    assert rows_in(tmp_path / dev_cache.CACHE_FILE) == 0
    late = run(path, tmp_path)
    assert late.usage.cache_hits == 0 and len(gemini.requests) == 6
    assert rows_in(tmp_path / dev_cache.CACHE_FILE) == 3  # written again


def rows_in(path: Path) -> int:
    dev_cache.open_cache(path.parent, 3600)
    with sqlite3.connect(path) as db:
        count: int = db.execute("SELECT count(*) FROM responses").fetchone()[0]
    return count


MAP = """\
schema_version: "1"
flow: {name: labels}
state:
  fields:
    reviews: {type: "list[str]", required: true}
    labels: {type: "list[str]", default: []}
nodes:
  - id: classify
    map: {over: reviews, as: review}
    prompt: "Label this review: {review}"
    outputs: [labels]
edges:
  - {from: START, to: classify}
  - {from: classify, to: END}
config:
  execution: {cache: {ttl_s: 60}}
"""


def test_each_map_item_is_cached_on_its_own(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    path = write(tmp_path, MAP)
    run(path, tmp_path, reviews=["good", "bad", "fine", "meh"])
    gemini.reset()
    again = run(path, tmp_path, reviews=["good", "awful", "fine", "meh"])
    (request,) = gemini.requests
    assert request.prompt_text == "Label this review: awful"
    hits = sorted((c.item, c.cache_hit) for c in again.usage.calls)
    assert hits == [(0, True), (1, False), (2, True), (3, True)]
    assert again.state["labels"][1] == "Loopback reply to: Label this review: awful"
    # The items ran at once on worker threads: each span is marked as its own call was.
    assert again.tracking is not None and again.tracking.trace_id is not None
    drain_trace_export()
    spans = mlflow.get_trace(again.tracking.trace_id).data.spans
    marked = {
        s.attributes["agents_pipelines.item_index"]: s.attributes.get("agents_pipelines.cache_hit")
        for s in spans
        if s.span_type == "CHAT_MODEL"
    }
    assert marked == {0: True, 1: None, 2: True, 3: True}


def test_two_caches_on_one_file_write_and_read_at_once(tmp_path: Path) -> None:
    """Two processes' caches (separate objects, separate connections) on one file, each
    written from four threads at once: every reply is found by the other, whole."""
    from concurrent.futures import ThreadPoolExecutor

    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration

    path = tmp_path / dev_cache.CACHE_FILE
    caches = [dev_cache.ResponseCache(path, 60), dev_cache.ResponseCache(path, 60)]
    usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}

    def store(n: int) -> None:
        reply = ChatGeneration(message=AIMessage(f"reply {n}", usage_metadata=usage))
        caches[n % 2].update(f"prompt {n}", "model", [reply])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(store, range(80)))
    for n in range(80):
        (hit,) = caches[(n + 1) % 2].lookup(f"prompt {n}", "model") or []
        message: Any = getattr(hit, "message", None)
        assert message.text == f"reply {n}"
        assert message.usage_metadata["total_tokens"] == 0  # a hit bills nothing
        assert message.response_metadata["agents_pipelines_cache_hit"] == {"usage": usage}
    assert caches[0].lookup("prompt 1", "another model") is None


def test_the_cli_keeps_its_cache_in_the_current_directory(
    tmp_path: Path,
    gemini: GeminiLoopbackServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agents_pipelines.cli import main

    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, chain(config=f"  {UNTRACKED}\n"))
    assert main(["run", str(path), "--input", "topic=owls"]) == 0
    first = capsys.readouterr().out
    assert main(["run", str(path), "--input", "topic=owls"]) == 0
    second = capsys.readouterr().out
    assert len(gemini.requests) == 3
    assert (tmp_path / ".agents_pipelines" / dev_cache.CACHE_FILE).is_file()
    assert "development cache" not in first
    spent = first.split("cost: $")[1].split(" ")[0]
    assert f"  development cache: 3 call(s) answered, ${spent} saved\n" in second
    assert "cost: $0.000000 USD" in second


TOOLS = """\
schema_version: "1"
flow: {{name: tools}}
state:
  fields:
    ticket: {{type: str, required: true}}
    reply: {{type: {reply_type}}}
nodes:
  - id: answer
    prompt: "Answer: {{ticket}}"
    tools: [{tools}]
    outputs: [reply]
edges:
  - {{from: START, to: answer}}
  - {{from: answer, to: END}}
config:
  execution: {{cache: {{ttl_s: 60}}}}
  observability: {{mlflow: {{enabled: false}}}}
"""


def test_tools_and_the_output_schema_are_part_of_the_key(
    tmp_path: Path, gemini: GeminiLoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader adds the working directory

    def respond(request: RecordedRequest) -> Reply:
        if request.wants_json:
            return Reply.json_reply({"reply": 1})
        if request.function_responses:
            return Reply.text_reply("Refund approved.")
        return Reply.function_call_reply("refund_status", {"order_id": "A1001"})

    gemini.set_default(respond)

    def answer(tools: str, reply_type: str = "str") -> RunResult:
        text = TOOLS.format(tools=tools, reply_type=reply_type)
        return run(write(tmp_path, text), tmp_path, ticket="Where is A1001?")

    first = answer("shop.orders:refund_status")
    again = answer("shop.orders:refund_status")
    assert len(gemini.requests) == 2  # the call asking for the tool, then the answer
    assert [(c.tools, c.cache_hit) for c in again.usage.calls] == [
        (("refund_status",), True),  # the cached reply still asks for the tool, which runs
        ((), True),
    ]
    assert again.state == first.state == {"ticket": "Where is A1001?", "reply": "Refund approved."}
    answer("shop.orders:refund_status, shop.orders:lookup_order")
    assert len(gemini.requests) == 4  # other tools: other requests
    typed = answer("shop.orders:refund_status", reply_type="int")
    assert [r.wants_json for r in gemini.requests[4:]] == [True]  # the loop hit; the schema not
    assert typed.state["reply"] == 1
