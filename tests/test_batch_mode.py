"""Gemini Batch Mode (llm.batch): the real google-genai client against the loopback server's
Batch API, materialized by Dagster, tracked in a real MLflow SQLite store."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from langchain_core.messages import HumanMessage
from mlflow import MlflowClient

from agents_pipelines._compat import genai as _genai_compat
from agents_pipelines.errors import WorkflowConfigError
from agents_pipelines.llm import batch
from agents_pipelines.llm.gemini import gemini_chat_model
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.spec import load_workflow
from agents_pipelines.spec.models import BatchConfig, LlmConfig, LlmOverride
from agents_pipelines.testing import BatchScript, Fault, GeminiLoopbackServer, Reply
from agents_pipelines.tracking import drain_trace_export
from conftest import dagster_materialize, metadata_of, metadata_values, write

# gemini-2.5-flash in MLflow's bundled catalog, USD per million tokens, written out so the
# test is not circular: standard 0.30 in / 2.50 out / 0.03 cached; the batch tier halves
# input and output (the catalog keeps cached reads at 0.03).
STANDARD = {"input": 0.30, "output": 2.50, "cached": 0.03}
BATCH = {"input": 0.15, "output": 1.25, "cached": 0.03}
# The loopback server's default usage: 120 prompt (20 cached), 60 candidates + 25 thoughts.
PROMPT, CACHED, COMPLETION = 120, 20, 85


def call_cost(price: dict[str, float]) -> float:
    fresh = PROMPT - CACHED
    return (fresh * price["input"] + CACHED * price["cached"] + COMPLETION * price["output"]) / 1e6


LABELS = """\
schema_version: "1"
flow: {name: labels}
state:
  fields:
    reviews: {type: "list[str]", required: true}
    labels: {type: "list[str]", choices: [good, bad]}
    summary: {type: str}
nodes:
  - id: label
    map: {over: reviews, as: review, on_item_error: ON_ITEM_ERROR}
    prompt: "Label this review: {review}"
    outputs: [labels]
  - id: sum
    prompt: "Summarize {labels}"
    outputs: [summary]
edges:
  - {from: START, to: label}
  - {from: label, to: sum}
  - {from: sum, to: END}
config:
  llm: {batch: {poll_s: 0.05, timeout_s: TIMEOUT}, max_retries: 1}
orchestration:
  inputs: {reviews: [great, awful, fine]}
"""


def labels_workflow(tmp_path: Path, on_item_error: str = "fail", timeout: float = 60) -> Path:
    text = LABELS.replace("ON_ITEM_ERROR", on_item_error).replace("TIMEOUT", str(timeout))
    return write(tmp_path, text)


def materialize(path: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_workflow_asset(load_workflow(path))],
        resources={"workflow_runner": WorkflowRunner()},
        raise_on_error=False,
    )


def test_map_items_go_in_one_job_at_the_batch_price_and_a_failed_item_in_a_follow_up(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path
) -> None:
    # Item 1 fails inside the job with a 503: the node's retry policy sends it again, in a
    # follow-up job of one. The plain node `sum` is a job of one.
    gemini.plan(Reply.json_reply({"labels": "good"}), Fault.server_error(503))
    gemini.plan(Reply.json_reply({"labels": "bad"}), Reply.json_reply({"labels": "bad"}))
    result = materialize(labels_workflow(tmp_path))
    assert result.success
    assert result.asset_value("labels")["labels"] == ["good", "bad", "bad"]
    jobs = gemini.batch_jobs
    assert [(job.keys, job.state, job.source) for job in jobs] == [
        (("0", "1", "2"), "SUCCEEDED", "inline"),
        (("0",), "SUCCEEDED", "inline"),
        (("0",), "SUCCEEDED", "inline"),
    ]
    assert [r.prompt_text for r in gemini.requests][-2] == "Label this review: awful"
    assert all(r.batch is not None for r in gemini.requests)  # no interactive call at all
    meta = metadata_of(result, "labels")
    assert [row.data for row in meta["batch_jobs"].records] == [
        {
            "name": jobs[0].name,
            "state": "SUCCEEDED",
            "requests": 3,
            "failures": 1,
            "attached": False,
        },
        {
            "name": jobs[1].name,
            "state": "SUCCEEDED",
            "requests": 1,
            "failures": 0,
            "attached": False,
        },
        {
            "name": jobs[2].name,
            "state": "SUCCEEDED",
            "requests": 1,
            "failures": 0,
            "attached": False,
        },
    ]
    calls = [row.data for row in meta["node_calls"].records]
    assert {call["tier"] for call in calls} == {"batch"}
    assert sorted(call["status"] for call in calls) == ["error", "ok", "ok", "ok", "ok"]
    assert meta["llm_calls"] == 5
    assert meta["total_cost_usd"] == pytest.approx(4 * call_cost(BATCH), abs=1e-12)
    saved = 4 * (call_cost(STANDARD) - call_cost(BATCH))
    assert meta["saved_vs_interactive_usd"] == pytest.approx(saved, abs=1e-12)
    # Each call is an LLM span priced at the batch tier: the trace's cost is the metadata's
    # (the failed attempt's span has no usage, so no cost, as an interactive one).
    drain_trace_export()
    run = MlflowClient().get_run(meta["mlflow_run_id"])
    trace = mlflow.get_trace(run.data.tags["agents_pipelines.trace_id"])
    spans = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert len(spans) == meta["llm_calls"] == run.data.metrics["llm_calls"]
    assert {s.attributes.get("agents_pipelines.service_tier") for s in spans} == {"batch"}
    span_cost = sum(s.attributes.get("mlflow.llm.cost", {}).get("total_cost", 0) for s in spans)
    assert round(span_cost, 9) == meta["total_cost_usd"] == run.data.metrics["total_cost_usd"]
    summary = json.loads(
        Path(MlflowClient().download_artifacts(run.info.run_id, "cost_summary.json")).read_text()
    )
    assert summary["saved_vs_interactive_usd"] == meta["saved_vs_interactive_usd"]
    assert [job["name"] for job in summary["batch_jobs"]] == [job.name for job in jobs]


def test_a_per_item_error_is_skipped_with_on_item_error_skip(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path
) -> None:
    gemini.plan(Reply.json_reply({"labels": "bad"}), Fault.bad_request("unsafe"))
    result = materialize(labels_workflow(tmp_path, on_item_error="skip"))
    assert result.success
    assert result.asset_value("labels")["labels"] == ["bad", "", "good"]
    meta = metadata_of(result, "labels")
    (failed,) = meta["failed_items"].records
    assert failed.data["item"] == 1 and "unsafe" in failed.data["error"]
    # A 400 is permanent: no follow-up job for it; `sum` is the second job.
    assert [job.keys for job in gemini.batch_jobs] == [("0", "1", "2"), ("0",)]


def test_a_job_past_timeout_s_is_cancelled_and_fails_the_node(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path
) -> None:
    gemini.plan_batches(BatchScript.never_done())
    result = materialize(labels_workflow(tmp_path, timeout=0.3))
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "did not finish within timeout_s (0.3 s)" in failure.message
    # A time-out is not retried (the job was given timeout_s): one job, cancelled once.
    assert [(job.state, job.cancel_requests) for job in gemini.batch_jobs] == [("CANCELLED", 1)]
    assert gemini.requests == []  # nothing answered, nothing paid


def test_requests_past_the_inline_limit_go_in_a_jsonl_file(
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batch, "INLINE_LIMIT_BYTES", 100)
    gemini.plan(*(Reply.json_reply({"labels": label}) for label in ("bad", "good", "bad")))
    result = materialize(labels_workflow(tmp_path))
    assert result.success
    assert result.asset_value("labels")["labels"] == ["bad", "good", "bad"]
    assert gemini.batch_jobs[0].source == "file"
    assert gemini.requests[0].response_schema is not None  # JSON mode went in the file


def test_simulated_dry_run_prices_batch_nodes_at_the_batch_tier(
    mlflow_uri: str, simulated: None, tmp_path: Path
) -> None:
    result = materialize(labels_workflow(tmp_path))
    assert result.success
    calls = [row.data for row in metadata_of(result, "labels")["node_calls"].records]
    assert {call["tier"] for call in calls} == {"batch"}


def batch_llm(server: GeminiLoopbackServer) -> Any:
    config = LlmConfig(base_url=server.base_url, batch=BatchConfig(poll_s=0.05))
    return gemini_chat_model(config)


def test_the_same_requests_of_the_same_run_attach_to_its_job_and_pay_once(
    gemini: GeminiLoopbackServer,
) -> None:
    """A retry or re-execution of a run (the same checkpoint thread) asks the same requests:
    it finds the earlier attempt's job by its display name instead of submitting one."""
    model = batch_llm(gemini)
    gemini.plan(Reply.text_reply("paid once"))
    run = {"metadata": {"thread_id": "run-1|labels|", "langgraph_node": "label"}}
    first = asyncio.run(model.ainvoke([HumanMessage("Label: great")], config=run))
    again = asyncio.run(model.ainvoke([HumanMessage("Label: great")], config=run))
    assert first.text == again.text == "paid once"
    assert len(gemini.batch_jobs) == 1 and len(gemini.requests) == 1
    other_run = {"metadata": {"thread_id": "run-2|labels|", "langgraph_node": "label"}}
    asyncio.run(model.ainvoke([HumanMessage("Label: great")], config=other_run))
    assert len(gemini.batch_jobs) == 2  # a new materialization pays for its own calls


def test_a_cancelled_call_cancels_its_job(gemini: GeminiLoopbackServer) -> None:
    """A stop (SIGTERM, Ctrl-C, Dagster's Terminate) cancels the run's task, and so the
    calls awaiting a job: the job is cancelled at Gemini."""
    gemini.plan_batches(BatchScript.never_done())
    model = batch_llm(gemini)

    async def stopped() -> None:
        call = asyncio.create_task(model.ainvoke([HumanMessage("Label: great")]))
        while not gemini.batch_jobs or gemini.batch_jobs[0].polls < 2:
            await asyncio.sleep(0.02)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.1)  # the job task's cancel request

    asyncio.run(stopped())
    (job,) = gemini.batch_jobs
    assert (job.state, job.cancel_requests) == ("CANCELLED", 1)


def test_a_batch_node_with_tools_is_refused_at_load(tmp_path: Path) -> None:
    text = LABELS.replace("ON_ITEM_ERROR", "fail").replace("TIMEOUT", "60")
    text = text.replace(
        '    prompt: "Summarize {labels}"\n',
        '    prompt: "Summarize {labels}"\n    tools: ["shop.orders:lookup_order"]\n',
    )
    with pytest.raises(WorkflowConfigError) as info:
        load_workflow(write(tmp_path, text))
    issue = next(i for i in info.value.issues if "batch" in str(i))
    assert (issue.line, issue.path) == (15, "nodes[1].tools")
    assert "wf.yaml:15:5: nodes[1].tools: node `sum` has `tools` and runs in batch mode" in str(
        issue
    )
    assert "set `llm: {batch: false}` on this node" in str(issue)
    # Called interactively, the same node loads.
    fixed = text.replace(
        'tools: ["shop.orders:lookup_order"]',
        'tools: ["shop.orders:lookup_order"]\n    llm: {batch: false}',
    )
    assert load_workflow(write(tmp_path, fixed, "fixed.yaml")).spec.nodes[1].tools


def test_node_batch_true_keeps_config_timings_and_false_turns_it_off() -> None:
    config = LlmConfig(batch=BatchConfig(poll_s=5, timeout_s=60))
    assert config.merged(LlmOverride(batch=True)).batch_mode == BatchConfig(poll_s=5, timeout_s=60)
    assert config.merged(LlmOverride(batch=False)).batch_mode is None
    assert LlmConfig().merged(LlmOverride(batch=True)).batch_mode == BatchConfig()
    assert LlmConfig(batch=True).batch_mode == BatchConfig(poll_s=30, timeout_s=86_400)


def test_estimate_prices_batch_nodes_at_the_batch_tier(tmp_path: Path) -> None:
    from agents_pipelines.tracking import MlflowPriceTable
    from agents_pipelines.usage.estimate import estimate_run

    spec = load_workflow(labels_workflow(tmp_path)).spec
    interactive = spec.model_copy(
        update={"config": spec.config.model_copy(update={"llm": LlmConfig()})}
    )

    def counter(llm: Any, texts: Any) -> int:
        return 100

    def cost(workflow: Any) -> float:
        return estimate_run(
            workflow, {"reviews": ["a", "b"]}, counter, MlflowPriceTable(), counted_by="t"
        ).cost_usd

    assert cost(spec) == pytest.approx(cost(interactive) / 2, rel=1e-9)


def test_compat_hooks_exist() -> None:
    """The private upstream names batch mode uses (_compat/genai.py) are still there."""
    for hook in _genai_compat.BATCH_HOOKS:
        module_name, _, attribute = hook.rpartition(".")
        owner: Any = None
        for split in range(module_name.count(".") + 1, 0, -1):
            parts = module_name.split(".")
            try:
                owner = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            for name in parts[split:]:
                owner = getattr(owner, name)
            break
        if attribute == "_api_client":  # an instance attribute
            from google import genai

            owner = genai.Client(api_key="unused")
        assert hasattr(owner, attribute), f"upstream moved {hook}: update _compat/genai.py"
    assert json.dumps(list(_genai_compat.BATCH_HOOKS))


def test_the_dagster_cli_materializes_a_batch_map_through_one_job(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path
) -> None:
    """`dagster asset materialize`, as a user runs it: the real client in a process of its
    own, against the loopback server's Batch API."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    labels_workflow(workflows)
    gemini.plan(*(Reply.json_reply({"labels": label}) for label in ("bad", "good", "good")))
    done, home = dagster_materialize(tmp_path, workflows, "labels")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [(job.keys, job.state) for job in gemini.batch_jobs] == [
        (("0", "1", "2"), "SUCCEEDED"),
        (("0",), "SUCCEEDED"),
    ]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.fetch_materializations(dg.AssetKey("labels"), limit=5).records
    meta = metadata_values(record.asset_materialization.metadata)
    assert [row.data["requests"] for row in meta["batch_jobs"].records] == [3, 1]
    assert meta["total_cost_usd"] == pytest.approx(4 * call_cost(BATCH), abs=1e-12)


def test_a_sync_call_is_a_job_of_one_polled_on_its_thread(gemini: GeminiLoopbackServer) -> None:
    """LangGraph's sync path (``invoke``, no event loop): the same job, polled in place."""
    gemini.plan(Reply.text_reply("sync answer"))
    reply = batch_llm(gemini).invoke([HumanMessage("Label: fine")])
    assert reply.text == "sync answer"
    assert reply.usage_metadata is not None and reply.usage_metadata["input_tokens"] == 120
    (job,) = gemini.batch_jobs
    assert (job.keys, job.state, job.polls) == (("0",), "SUCCEEDED", 2)
