"""The real Gemini client (langchain-google-genai → google-genai → HTTP) against the
loopback server, materialized by Dagster, tracked in a real MLflow SQLite store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient

from agents_pipelines.errors import LlmCallError, OutputValidationError
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, Reply
from agents_pipelines.tracking import drain_trace_export
from conftest import EXAMPLES, FAKE_KEY, LINEAR, metadata_of, write

# Bundled MLflow prices (USD per million tokens), written out so the test is not circular.
FLASH = {"input": 0.30, "output": 2.50, "cached": 0.03}
PRO = {"input": 1.25, "output": 10.0, "cached": 0.125}
# The loopback server's default usage: 120 prompt (20 cached), 60 candidates + 25 thoughts.
PROMPT, CACHED, COMPLETION, REASONING = 120, 20, 85, 25


def call_cost(price: dict[str, float]) -> float:
    return (
        (PROMPT - CACHED) * price["input"] + CACHED * price["cached"] + COMPLETION * price["output"]
    ) / 1e6


def materialize(asset: str, run_config: dict[str, Any] | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_workflow_asset(load_workflow(EXAMPLES / f"{asset}.yaml"))],
        resources={"workflow_runner": WorkflowRunner()},
        run_config=run_config,
        raise_on_error=False,
    )


def test_one_truth_for_usage_and_cost(mlflow_uri: str, gemini: GeminiLoopbackServer) -> None:
    result = materialize("article_writer")
    assert result.success
    meta = metadata_of(result, "article_writer")
    expected_cost = round(3 * call_cost(FLASH) + call_cost(PRO), 9)
    figures = {
        "total_tokens": 4 * (PROMPT + COMPLETION),
        "prompt_tokens": 4 * PROMPT,
        "completion_tokens": 4 * COMPLETION,
        "total_cost_usd": pytest.approx(expected_cost, abs=1e-12),
        "llm_calls": 4,
        "node_count": 4,
    }
    assert {k: meta[k] for k in figures} == figures
    assert meta["reasoning_tokens"] == 4 * REASONING and meta["cached_tokens"] == 4 * CACHED
    assert meta["llm_backend"] == "gemini"
    rows = {row.data["node"]: row.data for row in meta["node_calls"].records}
    assert rows["write"] | {"latency_s": 0} == {
        "node": "write",
        "item": None,  # only a map node's calls have an item index
        "model": "gemini-2.5-pro",
        "tier": "standard",
        "tools_called": "",
        "status": "ok",
        "prompt_tokens": 120,
        "completion_tokens": 85,
        "reasoning_tokens": 25,
        "cached_tokens": 20,
        "cost_usd": round(call_cost(PRO), 9),
        "latency_s": 0,
        "cache_hit": False,
        "saved_cost_usd": None,
    }
    # The asset's value is the final state; the loop ended on approved == true.
    state = result.asset_value("article_writer")
    assert state["approved"] is True and state["topic"] == "Dagster"
    assert isinstance(state["facts"], list) and isinstance(state["word_count"], int)

    # MLflow metrics, cost_summary.json and the trace agree with the metadata exactly.
    client = MlflowClient()
    run = client.get_run(meta["mlflow_run_id"])
    for key in (
        "total_tokens",
        "prompt_tokens",
        "completion_tokens",
        "total_cost_usd",
        "llm_calls",
        "node_count",
    ):
        assert run.data.metrics[key] == meta[key], key
    summary = json.loads(
        Path(client.download_artifacts(run.info.run_id, "cost_summary.json")).read_text()
    )
    assert summary["currency"] == "USD" and summary["status"] == "succeeded"
    assert summary["totals"]["total_cost_usd"] == meta["total_cost_usd"]
    assert summary["totals"]["total_tokens"] == meta["total_tokens"]
    assert summary["by_model"]["gemini-2.5-pro"]["cost_usd"] == round(call_cost(PRO), 9)
    assert summary["by_model"]["gemini-2.5-flash"]["llm_calls"] == 3
    assert {c["price_source"] for c in summary["calls"]} == {
        f"mlflow bundled price table (mlflow {mlflow.__version__})"
    }

    drain_trace_export()
    trace = mlflow.get_trace(meta["mlflow_trace_id"])
    assert trace.info.trace_metadata["mlflow.sourceRun"] == run.info.run_id
    assert trace.info.token_usage == {
        "input_tokens": 480,
        "output_tokens": 340,
        "total_tokens": 820,
        "cache_read_input_tokens": 80,
    }
    trace_cost = json.loads(trace.info.trace_metadata["mlflow.trace.cost"])
    assert trace_cost["total_cost"] == meta["total_cost_usd"]
    llm_spans = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert len(llm_spans) == 4
    assert (
        round(sum(s.attributes["mlflow.llm.cost"]["total_cost"] for s in llm_spans), 9)
        == (meta["total_cost_usd"])
    )
    node_spans = {s.name for s in trace.data.spans if s.span_type == "CHAIN"}
    assert {"research", "outline", "write", "review"} <= node_spans

    # Tags, params, and the requests Gemini received.
    assert run.data.tags["dagster.run_id"] == result.run_id
    assert run.data.tags["dagster.asset_key"] == "article_writer"
    assert run.data.tags["agents_pipelines.workflow"] == "article_writer"
    assert run.data.params["models"] == "gemini-2.5-flash,gemini-2.5-pro"
    assert len(run.data.params["workflow_sha256"]) == 64
    requests = gemini.requests
    assert sorted(r.model for r in requests) == ["gemini-2.5-flash"] * 3 + ["gemini-2.5-pro"]
    assert all(r.api_key == FAKE_KEY for r in requests)
    assert sum(r.wants_json for r in requests) == 3  # research, write, review; outline is text


def test_api_key_reaches_no_metadata_param_tag_artifact_or_trace(
    mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    result = materialize("support_triage")
    assert result.success
    meta = metadata_of(result, "support_triage")
    client = MlflowClient()
    run = client.get_run(meta["mlflow_run_id"])
    artifacts = Path(client.download_artifacts(run.info.run_id, ""))
    texts = [repr(meta), repr(run.data.params), repr(run.data.tags)]
    texts += [p.read_text() for p in artifacts.rglob("*") if p.is_file()]
    drain_trace_export()
    texts.append(mlflow.get_trace(meta["mlflow_trace_id"]).to_json())
    texts += [str(event) for event in result.all_events]
    assert all(FAKE_KEY not in text for text in texts)


def test_rate_limit_waits_for_retry_after_then_succeeds(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    gemini.plan(Fault.rate_limit(retry_after_s=1.0))
    started = time.monotonic()
    result = run_workflow(load_workflow(write(tmp_path, LINEAR)))
    assert time.monotonic() - started >= 1.0  # waited at least the server's Retry-After
    assert len(gemini.requests) == 2
    assert [c.status for c in result.usage.calls] == ["error", "ok"]
    assert result.usage.llm_calls == 2 and result.usage.tokens.total == 205


def test_server_error_is_retried_but_bad_request_fails_at_once(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    workflow = load_workflow(write(tmp_path, LINEAR))
    gemini.plan(Fault.server_error(500))
    assert run_workflow(workflow).state["summary"].startswith("Loopback reply")
    assert len(gemini.requests) == 2

    gemini.reset()
    gemini.plan(Fault.bad_request("Invalid model setting"))
    with pytest.raises(LlmCallError, match=r"Gemini 400: the request was invalid"):
        run_workflow(workflow)
    assert len(gemini.requests) == 1  # a 400 is never retried


def test_hang_is_cut_at_timeout(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    text = LINEAR + "config:\n  llm: {timeout_s: 0.5, max_retries: 0}\n"
    gemini.plan(Fault.hang(30))
    started = time.monotonic()
    with pytest.raises(LlmCallError, match="ReadTimeout"):
        run_workflow(load_workflow(write(tmp_path, text)))
    assert time.monotonic() - started < 10  # far below the 30 s hang


def test_a_hang_is_retried_and_then_succeeds(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    # The time-out surfaces as the SDK's own transport error (httpx or httpx2, by major):
    # it must count as transient, so the node's RetryPolicy tries again.
    text = LINEAR + "config:\n  llm: {timeout_s: 0.5, max_retries: 1}\n"
    gemini.plan(Fault.hang(30))
    result = run_workflow(load_workflow(write(tmp_path, text)))
    assert result.state["summary"].startswith("Loopback reply")
    assert len(gemini.requests) == 2
    # The hung attempt is recorded (it may be billed), then the retry's answer.
    assert [(c.status, c.usage.total) for c in result.usage.calls] == [("error", 0), ("ok", 205)]
    assert "ReadTimeout" in str(result.usage.calls[0].error)


def test_missing_key_fails_the_materialization_saying_what_to_set(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "gemini")
    result = materialize("release_notes")
    assert not result.success
    failure = result.failure_data_for_node("release_notes")
    assert failure is not None
    assert "set GOOGLE_API_KEY" in failure.error.message
    assert "AGENTS_PIPELINES_LLM_BACKEND=simulated" in failure.error.message


def test_structured_reply_that_does_not_fit_fails_naming_the_node(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    text = LINEAR.replace("summary: {type: str}", "summary: {type: str}\n    score: {type: int}")
    text = text.replace("outputs: [summary]", "outputs: [summary, score]")
    gemini.plan(Reply.json_reply({"summary": "ok", "score": "very high"}))
    with pytest.raises(
        OutputValidationError,
        match=r"Node `summarize` of workflow linear: "
        r"the model's structured reply does not fit .*score",
    ):
        run_workflow(load_workflow(write(tmp_path, text)))


def test_model_replies_are_data_never_templates(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    text = LINEAR.replace(
        "    summary: {type: str}", "    summary: {type: str}\n    echo: {type: str}"
    )
    text = text.replace("  - {from: summarize, to: END}", "  - {from: summarize, to: echo}")
    text = text.replace(
        "edges:", '  - id: echo\n    prompt: "Repeat: {summary}"\n    outputs: [echo]\nedges:'
    )
    gemini.plan(Reply.text_reply("see {topic} and {summary.__class__} and {{x}}"))
    run_workflow(load_workflow(write(tmp_path, text)))
    assert gemini.requests[1].prompt_text == (
        "Repeat: see {topic} and {summary.__class__} and {{x}}"
    )


def test_config_base_url_points_the_client_at_a_gateway(
    tmp_path: Path,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL")
    text = LINEAR + f"config:\n  llm: {{base_url: '{gemini.base_url}'}}\n"
    result = run_workflow(load_workflow(write(tmp_path, text)))
    assert result.state["summary"].startswith("Loopback reply")
    assert len(gemini.requests) == 1


MAPPED_TEXT = """\
schema_version: "1"
flow: {name: mapped_text}
state:
  fields:
    topics: {type: "list[str]", required: true}
    notes: {type: "list[str]"}
nodes:
  - id: note
    map: {over: topics, as: topic}
    prompt: "A note on {topic}."
    outputs: [notes]
edges:
  - {from: START, to: note}
  - {from: note, to: END}
config:
  observability: {mlflow: {enabled: false}}
orchestration:
  inputs: {topics: [cats, dogs]}
"""


def test_text_outputs_are_plain_str_in_the_asset_value(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    # langchain-core's `message.text` is a TextAccessor (a str subclass): the state, the
    # checkpoints and the pickled asset value must hold the str a `str` field declares.
    result = dg.materialize(
        [build_workflow_asset(load_workflow(write(tmp_path, LINEAR)))],
        resources={"workflow_runner": WorkflowRunner()},
    )
    summary = result.asset_value("linear")["summary"]
    assert summary.startswith("Loopback reply") and type(summary) is str
    notes = run_workflow(load_workflow(write(tmp_path, MAPPED_TEXT, "map.yaml"))).state["notes"]
    assert len(notes) == 2 and {type(note) for note in notes} == {str}
