"""Tool calls: the real Gemini client against the loopback server, which answers with
``functionCall`` parts until it has seen the function responses; materialized by Dagster,
tracked in a real MLflow store."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow import MlflowClient

from agents_pipelines.errors import PythonTimeoutError
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import GeminiLoopbackServer, RecordedRequest, Reply
from conftest import EXAMPLES, assert_usage_agrees, metadata_of, metadata_values, write

# Bundled MLflow price of gemini-2.5-flash and the loopback server's default usage:
# 120 prompt tokens (20 cached), 60 candidates + 25 thoughts.
CALL_COST = ((120 - 20) * 0.30 + 20 * 0.03 + 85 * 2.50) / 1e6
CALL_TOKENS = 205


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader puts the working directory (each test's own) on sys.path: undo it."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def materialize(path: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_workflow_asset(load_workflow(path))],
        resources={"workflow_runner": WorkflowRunner()},
        raise_on_error=False,
    )


def calls_then_answer(
    *calls: tuple[str, dict[str, Any]], answer: str = "Your refund is on its way."
):
    """A responder: the i-th function call while the request holds i function responses,
    then ``answer``."""

    def respond(request: RecordedRequest) -> Reply:
        done = len(request.function_responses)
        if done < len(calls):
            return Reply.function_call_reply(*calls[done])
        return Reply.text_reply(answer)

    return respond


def test_a_tool_round_trip_is_priced_traced_and_listed(
    mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    gemini.set_default(
        calls_then_answer(
            ("lookup_order", {"order_id": "A1001"}), ("refund_status", {"order_id": "A1001"})
        )
    )
    result = materialize(EXAMPLES / "support_reply.yaml")
    assert result.success
    assert result.asset_value("support_reply")["reply"] == "Your refund is on its way."
    meta = metadata_of(result, "support_reply")
    assert meta["llm_calls"] == 3 and meta["total_tokens"] == 3 * CALL_TOKENS
    assert meta["total_cost_usd"] == pytest.approx(3 * CALL_COST, abs=1e-12)
    rows = [row.data for row in meta["node_calls"].records]
    assert [(r["node"], r["tools_called"], r["status"]) for r in rows] == [
        ("answer", "lookup_order", "ok"),
        ("answer", "refund_status", "ok"),
        ("answer", "", "ok"),
    ]
    assert all(r["cost_usd"] == round(CALL_COST, 9) for r in rows)

    # The tools' results reached Gemini as function responses, the tools declared each time.
    first, second, third = gemini.requests
    assert first.declared_tools == ["lookup_order", "refund_status"] == third.declared_tools
    assert second.function_responses[0]["name"] == "lookup_order"
    assert "delivered" in str(second.function_responses[0]["response"])
    assert [r["name"] for r in third.function_responses] == ["lookup_order", "refund_status"]
    assert "39.90 EUR approved" in str(third.function_responses[1]["response"])

    trace = assert_usage_agrees(meta, meta["mlflow_run_id"])
    tools = [span for span in trace.data.spans if span.span_type == "TOOL"]
    assert [span.name for span in tools] == ["lookup_order", "refund_status"]
    # Content stays out below artifact_level: full.
    assert all("A1001" not in str(span.inputs) + str(span.outputs) for span in tools)


LOOPING = """\
schema_version: "1"
flow: {{name: {name}}}
state:
  fields:
    ticket: {{type: str, required: true}}
    reply: {{type: str}}
    refund_due: {{type: bool}}
nodes:
  - id: answer
    prompt: "Answer: {{ticket}}"
    tools: [{tools}]
    max_tool_calls: 2
    outputs: [{outputs}]
edges:
  - {{from: START, to: answer}}
  - {{from: answer, to: END}}
config:
  observability:
    mlflow: {{artifact_level: full}}
orchestration:
  inputs: {{ticket: "Where is order A1001?"}}
"""


def looping(name: str, tools: str, outputs: str = "reply") -> str:
    return LOOPING.format(name=name, tools=tools, outputs=outputs)


def test_the_loop_cap_fails_the_node_and_keeps_the_spend(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    gemini.set_default(lambda _: Reply.function_call_reply("lookup_order", {"order_id": "A1"}))
    path = write(tmp_path, looping("capped", "shop.orders:lookup_order"))
    result = materialize(path)
    assert not result.success
    failure = result.failure_data_for_node("capped")
    assert failure is not None and failure.user_failure_data is not None
    description = failure.user_failure_data.description or ""
    assert (
        "Node `answer` of workflow capped: the model asked for 3 tool calls, over "
        "max_tool_calls 2. Fix: say in the prompt when to stop calling tools" in description
    )
    meta = metadata_values(failure.user_failure_data.metadata)
    assert meta["llm_calls"] == 3 and meta["total_tokens"] == 3 * CALL_TOKENS
    assert meta["total_cost_usd"] == pytest.approx(3 * CALL_COST, abs=1e-12)
    assert len(gemini.requests) == 3  # the third reply's calls were never run
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("capped").experiment_id])
    assert run.info.status == "FAILED"
    trace = assert_usage_agrees(meta, run.info.run_id)
    assert [s.name for s in trace.data.spans if s.span_type == "TOOL"] == ["lookup_order"] * 2


def test_a_raising_tool_tells_the_model_and_marks_its_span(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    module = f"tools_{uuid.uuid4().hex[:8]}"  # in the working directory: importable
    (tmp_path / f"{module}.py").write_text(
        "def lookup_order(order_id: str) -> dict:\n"
        '    """Look an order up."""\n'
        '    raise ConnectionError(f"order database unreachable for {order_id}")\n'
    )
    gemini.set_default(calls_then_answer(("lookup_order", {"order_id": "A7"}), answer="Sorry."))
    result = materialize(write(tmp_path, looping("flaky_tool", f"{module}:lookup_order")))
    assert result.success
    assert result.asset_value("flaky_tool")["reply"] == "Sorry."
    (response,) = gemini.requests[1].function_responses
    assert "ConnectionError: order database unreachable for A7" in str(response["response"])
    meta = metadata_of(result, "flaky_tool")
    trace = assert_usage_agrees(meta, meta["mlflow_run_id"])
    (span,) = [s for s in trace.data.spans if s.span_type == "TOOL"]
    assert span.status.status_code == "ERROR"
    assert "order database unreachable for A7" in span.status.description
    assert span.inputs == {"order_id": "A7"}  # artifact_level: full records content


def test_structured_outputs_end_with_one_json_call_without_tools(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    def respond(request: RecordedRequest) -> Reply:
        if request.wants_json:
            return Reply.json_reply({"reply": "Refund approved.", "refund_due": True})
        return calls_then_answer(("refund_status", {"order_id": "A1001"}))(request)

    gemini.set_default(respond)
    text = looping("structured_tools", "shop.orders:refund_status", outputs="reply, refund_due")
    result = materialize(write(tmp_path, text))
    assert result.success
    state = result.asset_value("structured_tools")
    assert state["reply"] == "Refund approved." and state["refund_due"] is True
    requests = gemini.requests
    assert [(r.wants_json, bool(r.declared_tools)) for r in requests] == [
        (False, True),
        (False, True),
        (True, False),  # Gemini 2.5 takes no tools in JSON mode
    ]
    assert "Your refund is on its way." in requests[2].prompt_text
    meta = metadata_of(result, "structured_tools")
    assert [row.data["tools_called"] for row in meta["node_calls"].records] == [
        "refund_status",
        "",
        "",
    ]
    assert_usage_agrees(meta, meta["mlflow_run_id"])


def test_the_example_runs_its_tools_under_the_simulated_backend(
    mlflow_uri: str, simulated: None
) -> None:
    result = materialize(EXAMPLES / "support_reply.yaml")
    assert result.success
    meta = metadata_of(result, "support_reply")
    assert meta["llm_backend"] == "simulated"
    assert [row.data["tools_called"] for row in meta["node_calls"].records] == [
        "lookup_order",
        "refund_status",
        "",
    ]
    assert result.asset_value("support_reply")["reply"].startswith("[simulated")


def test_a_langchain_tool_is_bound_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    module = f"lc_tools_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from langchain_core.tools import tool\n\n"
        "@tool\n"
        "def stock_level(sku: str) -> int:\n"
        '    """Units of `sku` in stock."""\n'
        "    return 7\n"
    )
    text = looping("lc_tool", f"{module}:stock_level").replace(
        "{artifact_level: full}", "{enabled: false}"
    )
    result = run_workflow(load_workflow(write(tmp_path, text)), backend="simulated")
    assert [call.tools for call in result.usage.calls] == [("stock_level",), ()]
    assert result.usage.llm_calls == 2


def test_a_tool_node_text_answer_is_a_plain_str(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    gemini.set_default(calls_then_answer(("lookup_order", {"order_id": "A1"})))
    text = looping("typed_reply", "shop.orders:lookup_order").replace(
        "mlflow: {artifact_level: full}", "mlflow: {enabled: false}"
    )
    reply = run_workflow(load_workflow(write(tmp_path, text))).state["reply"]
    assert reply == "Your refund is on its way." and type(reply) is str


HANGING_TOOL = '''
import threading

RELEASE = threading.Event()  # the test sets it: the hung calls then return


def lookup_order(order_id: str) -> dict:
    """Look an order up."""
    RELEASE.wait(60)
    return {"order_id": order_id}
'''

MAPPED_TOOLS = """\
schema_version: "1"
flow: {{name: {name}}}
state:
  fields:
    tickets: {{type: "list[str]", required: true}}
    replies: {{type: "list[str]"}}
nodes:
  - id: answer
    map: {{over: tickets, as: ticket}}
    prompt: "Answer: {{ticket}}"
    tools: [{tools}]
    timeout_s: 0.3
    outputs: [replies]
edges:
  - {{from: START, to: answer}}
  - {{from: answer, to: END}}
config:
  llm: {{max_retries: 0}}
  observability: {{mlflow: {{enabled: false}}}}
orchestration:
  inputs: {{tickets: ["Where is order A1?"]}}
"""


@pytest.fixture
def hanging_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A tool that hangs until the test ends: its `module:name`."""
    module = f"tools_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(HANGING_TOOL, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    yield f"{module}:lookup_order"
    if module in sys.modules:
        sys.modules[module].RELEASE.set()


def test_a_hung_tool_fails_the_node_at_its_timeout(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer, hanging_tool: str
) -> None:
    gemini.set_default(calls_then_answer(("lookup_order", {"order_id": "A1"})))
    text = looping("hung_tool", hanging_tool).replace(
        "max_tool_calls: 2", "max_tool_calls: 2\n    timeout_s: 0.3"
    )
    text = text.replace("config:\n", "config:\n  llm: {max_retries: 0}\n")
    text += "  retry: {max_retries: 0}\n"
    result = materialize(write(tmp_path, text))
    assert not result.success
    failure = result.failure_data_for_node("hung_tool")
    assert failure is not None and failure.user_failure_data is not None
    assert "Tool `lookup_order` called by node `answer` did not return within timeout_s 0.3 s" in (
        failure.user_failure_data.description or ""
    )
    meta = metadata_values(failure.user_failure_data.metadata)
    assert meta["llm_calls"] == 1 and len(gemini.requests) == 1  # no answer was asked for
    assert "tracking_warning" not in meta


def test_a_hung_tool_in_a_map_item_fails_the_node_at_its_timeout(
    tmp_path: Path, gemini: GeminiLoopbackServer, hanging_tool: str
) -> None:
    gemini.set_default(calls_then_answer(("lookup_order", {"order_id": "A1"})))
    text = MAPPED_TOOLS.format(name="hung_mapped_tool", tools=hanging_tool)
    with pytest.raises(PythonTimeoutError, match=r"did not return within timeout_s 0.3 s"):
        run_workflow(load_workflow(write(tmp_path, text)))
    assert len(gemini.requests) == 1
