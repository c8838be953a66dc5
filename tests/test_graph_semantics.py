"""Graph semantics on the real Gemini path: parallel branches, joins, routes, step limits,
input validation before any call, and spend kept when a run fails."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from agents_pipelines.errors import InvalidInputsError, LlmCallError, StepLimitError
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, Reply
from agents_pipelines.testing.gemini_server import RecordedRequest, default_reply
from agents_pipelines.tracking import drain_trace_export
from conftest import EXAMPLES, write

FAN_OUT = """\
schema_version: "1"
flow: {name: fan_out}
state:
  fields:
    topic: {type: str, required: true}
    a: {type: str}
    b: {type: str}
    joined: {type: str}
nodes:
  - {id: left, prompt: "Left on {topic}", outputs: [a]}
  - {id: right, prompt: "Right on {topic}", outputs: [b]}
  - {id: join, prompt: "Join [{a}] and [{b}]", outputs: [joined]}
edges:
  - {from: START, to: left}
  - {from: START, to: right}
  - {from: [left, right], to: join}
orchestration:
  inputs: {topic: t}
"""


def test_parallel_branches_run_concurrently_and_the_join_waits(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    arrivals: dict[str, float] = {}
    lock = threading.Lock()

    def slow_reply(request: RecordedRequest) -> Reply:
        with lock:
            arrivals[request.prompt_text.split()[0]] = time.monotonic()
        return Reply.text_reply(f"<{request.prompt_text}>", delay_s=0.4)

    gemini.set_default(slow_reply)
    result = run_workflow(load_workflow(write(tmp_path, FAN_OUT)))
    # Both branches were in flight together: the second arrived before the first answered.
    assert abs(arrivals["Left"] - arrivals["Right"]) < 0.4
    # The join ran once, after both branches, and saw both outputs.
    assert arrivals["Join"] - max(arrivals["Left"], arrivals["Right"]) >= 0.4
    assert result.state["joined"] == "<Join [<Left on t>] and [<Right on t>]>"
    assert sorted(result.node_runs[:2]) == ["left", "right"] and result.node_runs[2] == "join"


def test_a_loop_stops_at_max_steps_with_a_clear_error(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    text = (EXAMPLES / "article_writer.yaml").read_text().replace("max_steps: 25", "max_steps: 6")
    gemini.set_default(lambda request: _never_approved(request))
    with pytest.raises(
        StepLimitError,
        match=r"Workflow article_writer \(.*article_writer\.yaml\) "
        r"ran 6 steps without reaching END \(config\.execution\.max_steps\)\. "
        r"A route probably loops",
    ) as info:
        run_workflow(load_workflow(write(tmp_path, text, "article_writer.yaml")))
    assert info.value.usage is not None and info.value.usage.llm_calls >= 4
    assert "Spent before failing: $" in str(info.value)


def _never_approved(request: RecordedRequest) -> Reply:
    reply = default_reply(request)
    if isinstance(reply.json, dict) and "approved" in reply.json:
        return Reply.json_reply({"approved": False})
    return reply


def test_bad_inputs_are_refused_before_any_call_and_cost_nothing(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    workflow = load_workflow(EXAMPLES / "support_triage.yaml")
    with pytest.raises(
        InvalidInputsError,
        match=r"`urgency` is not an input of this workflow \(a node writes it\); `ticket` must be "
        r"str: Input should be a valid string \(got \['not', 'text'\]\)\. Inputs: ticket\.",
    ):
        run_workflow(workflow, {"ticket": ["not", "text"], "urgency": 3})
    assert gemini.requests == []
    assert MlflowClient().search_experiments(filter_string="name = 'my_workflows'") == []


def test_a_failed_run_keeps_its_spend_in_mlflow(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    workflow = load_workflow(EXAMPLES / "release_notes.yaml")
    gemini.plan(Reply.text_reply("summary"), Fault.unauthenticated("API key not valid"))
    with pytest.raises(
        LlmCallError,
        match=r"Gemini 401: the API key was refused; check "
        r"GOOGLE_API_KEY.*Spent before failing: \$0\.0000\d+ over 2 LLM call",
    ):
        run_workflow(workflow)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("my_workflows").experiment_id])
    assert run.info.status == "FAILED"
    summary = json.loads(
        Path(client.download_artifacts(run.info.run_id, "cost_summary.json")).read_text()
    )
    assert summary["status"] == "failed" and "Gemini 401" in summary["error"]
    assert [c["status"] for c in summary["calls"]] == ["ok", "error"]
    assert summary["totals"]["total_tokens"] == 205
    assert run.data.metrics["total_tokens"] == 205
    drain_trace_export()
    (trace,) = mlflow.search_traces(locations=[run.info.experiment_id], return_type="list")
    assert trace.info.state.value == "ERROR"
    assert any(
        s.status.status_code.value == "ERROR" for s in trace.data.spans if s.name == "write_notes"
    )
