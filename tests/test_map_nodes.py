"""Map nodes (``nodes[].map``): one call per list item, as LangGraph ``Send`` tasks.

The real Gemini client against the loopback server; the 12-item run is materialized by
Dagster and tracked in a real MLflow store, and its figures must agree everywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient

from agents_pipelines.errors import WorkflowRunError
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import draw_mermaid, load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.tracking import drain_trace_export
from conftest import docs_text, metadata_of, metadata_values, write

ITEM_INDEX = "agents_pipelines.item_index"


def map_workflow(
    items: list[str],
    *,
    outputs: str = "[labels]",
    map_extra: str = "",
    llm: str = "max_retries: 0",
    tracked: bool = True,
) -> str:
    mlflow_config = "" if tracked else "\n  observability: {mlflow: {enabled: false}}"
    return f"""\
schema_version: "1"
flow: {{name: reviews}}
state:
  fields:
    reviews: {{type: "list[str]", required: true}}
    labels:  {{type: "list[str]", default: []}}
    scores:  {{type: "list[float]", default: []}}
nodes:
  - id: classify
    map: {{over: reviews, as: review, max_concurrency: 3{map_extra}}}
    system: "You label reviews, here {{review}}."
    prompt: "Classify the sentiment of this review: {{review}}"
    outputs: {outputs}
edges:
  - {{from: START, to: classify}}
  - {{from: classify, to: END}}
config:
  llm: {{{llm}}}{mlflow_config}
orchestration:
  inputs: {{reviews: {json.dumps(items)}}}
"""


def item_of(request: RecordedRequest) -> int:
    """The item a request is for: the prompts say "review N"."""
    found = re.search(r"review (\d+)", request.prompt_text)
    assert found is not None, request.prompt_text
    return int(found[1])


def reviews(count: int) -> list[str]:
    return [f"review {i}" for i in range(count)]


def materialize(path: Path, instance: dg.DagsterInstance | None = None) -> Any:
    return dg.materialize(
        [build_workflow_asset(load_workflow(path))],
        resources={"workflow_runner": WorkflowRunner()},
        raise_on_error=False,
        instance=instance,
    )


def cost_summary_of(run_id: str) -> dict[str, Any]:
    client = MlflowClient()
    return json.loads(Path(client.download_artifacts(run_id, "cost_summary.json")).read_text())


def test_twelve_items_bounded_ordered_and_agreeing(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    # Later items answer sooner, so calls finish out of list order.
    gemini.set_default(
        lambda r: Reply.text_reply(f"label {item_of(r)}", delay_s=0.1 + 0.04 * (11 - item_of(r)))
    )
    result = materialize(write(tmp_path, map_workflow(reviews(12))))
    assert result.success
    assert result.asset_value("reviews")["labels"] == [f"label {i}" for i in range(12)]
    assert gemini.max_in_flight == 3  # max_concurrency: concurrent, and never more
    assert sorted(item_of(r) for r in gemini.requests) == list(range(12))

    meta = metadata_of(result, "reviews")
    assert meta["llm_calls"] == 12 and meta["node_count"] == 1
    rows = [row.data for row in meta["node_calls"].records]
    assert {row["node"] for row in rows} == {"classify"}
    finished = [row["item"] for row in rows]
    assert sorted(finished) == list(range(12)) and finished != sorted(finished)
    assert "failed_items" not in meta and "tracking_warning" not in meta

    # Dagster metadata, MLflow metrics, cost_summary.json and the trace agree.
    run = MlflowClient().get_run(meta["mlflow_run_id"])
    for key in ("total_tokens", "prompt_tokens", "completion_tokens", "total_cost_usd"):
        assert run.data.metrics[key] == meta[key], key
    assert run.data.metrics["llm_calls"] == 12
    summary = cost_summary_of(run.info.run_id)
    assert summary["totals"]["total_tokens"] == meta["total_tokens"]
    assert summary["totals"]["total_cost_usd"] == meta["total_cost_usd"]
    assert sorted(c["item"] for c in summary["calls"]) == list(range(12))
    assert summary["failed_items"] == []

    drain_trace_export()
    trace = mlflow.get_trace(meta["mlflow_trace_id"])
    assert trace.info.token_usage["total_tokens"] == meta["total_tokens"]
    assert (
        json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"]
        == (meta["total_cost_usd"])
    )
    llm_spans = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert sorted(s.attributes[ITEM_INDEX] for s in llm_spans) == list(range(12))
    assert {s.attributes["agents_pipelines.node"] for s in llm_spans} == {"classify"}
    assert (
        round(sum(s.attributes["mlflow.llm.cost"]["total_cost"] for s in llm_spans), 9)
        == (meta["total_cost_usd"])
    )
    by_id = {s.span_id: s for s in trace.data.spans}
    assert {by_id[s.parent_id].name for s in llm_spans} == {"__classify__item"}


def test_skip_writes_the_empty_value_and_lists_the_item(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    def answer(request: RecordedRequest) -> Reply | Fault:
        if item_of(request) == 2:
            return Fault.server_error(500, "backend unavailable")
        return Reply.text_reply(f"label {item_of(request)}")

    gemini.set_default(answer)
    text = map_workflow(reviews(4), map_extra=", on_item_error: skip", llm="max_retries: 1")
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(write(tmp_path, text), instance)
    assert result.success
    assert result.asset_value("reviews")["labels"] == ["label 0", "label 1", "", "label 3"]
    assert [item_of(r) for r in gemini.requests].count(2) == 2  # retried once, then skipped

    meta = metadata_of(result, "reviews")
    (failed,) = [row.data for row in meta["failed_items"].records]
    assert failed["node"] == "classify" and failed["item"] == 2
    assert failed["error"].startswith("Gemini 500: the call failed")
    assert meta["llm_calls"] == 5  # every attempt is counted, the failed ones too
    summary = cost_summary_of(meta["mlflow_run_id"])
    assert summary["status"] == "succeeded"
    assert summary["failed_items"] == [failed]
    assert [c["status"] for c in summary["calls"] if c["item"] == 2] == ["error", "error"]
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if "were skipped" in entry.user_message
    ]
    assert len(warnings) == 1 and "node `classify`: 1 item(s), index 2" in warnings[0]


def test_fail_fails_the_node_and_keeps_the_spend(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    def answer(request: RecordedRequest) -> Reply | Fault:
        if item_of(request) == 1:
            return Fault.bad_request("Invalid argument")
        return Reply.text_reply("label")

    gemini.set_default(answer)
    result = materialize(write(tmp_path, map_workflow(reviews(6))))
    assert not result.success
    failure = result.failure_data_for_node("reviews")
    assert failure is not None
    assert "Gemini 400: the request was invalid" in failure.error.message
    meta = metadata_values(failure.user_failure_data.metadata)
    assert meta["llm_calls"] == len(gemini.requests) >= 1  # every call made is reported
    statuses = {row.data["item"]: row.data["status"] for row in meta["node_calls"].records}
    assert statuses[1] == "error"
    (run,) = mlflow.search_runs(experiment_names=["reviews"], output_format="list")
    summary = cost_summary_of(run.info.run_id)
    assert summary["status"] == "failed" and summary["totals"]["llm_calls"] == meta["llm_calls"]


def test_each_item_is_one_json_call_typed_by_the_element_types(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    gemini.set_default(
        lambda r: Reply.json_reply({"labels": f"label {item_of(r)}", "scores": item_of(r) / 4})
    )
    text = map_workflow(reviews(3), outputs="[labels, scores]", tracked=False)
    result = run_workflow(load_workflow(write(tmp_path, text)))
    assert result.state["labels"] == ["label 0", "label 1", "label 2"]
    assert result.state["scores"] == [0.0, 0.25, 0.5]
    schema = gemini.requests[0].response_schema
    assert schema is not None
    assert {k: v["type"] for k, v in schema["properties"].items()} == {
        "labels": "string",
        "scores": "number",
    }
    assert result.node_runs == ("classify",)
    system = gemini.requests[0].body["systemInstruction"]["parts"][0]["text"]
    assert system == f"You label reviews, here review {item_of(gemini.requests[0])}."


def test_empty_list_makes_no_call(tmp_path: Path, gemini: GeminiLoopbackServer) -> None:
    text = map_workflow([], tracked=False).replace("default: []}", "default: [stale]}", 1)
    result = run_workflow(load_workflow(write(tmp_path, text)))
    assert result.state["labels"] == []
    assert gemini.requests == [] and result.usage.llm_calls == 0
    assert result.node_runs == ("classify",)


def test_a_list_over_max_items_fails_before_any_call(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    text = map_workflow(reviews(4), map_extra=", max_items: 3", tracked=False)
    with pytest.raises(
        WorkflowRunError,
        match=r"Node `classify` of workflow reviews maps over `reviews`, which holds 4 items: "
        r"more than map.max_items \(3\)\. No item was called\.",
    ):
        run_workflow(load_workflow(write(tmp_path, text)))
    assert gemini.requests == []


def test_the_readme_map_example_loads(tmp_path: Path) -> None:
    readme = docs_text()
    (fragment,) = re.findall(r"```yaml\n(state:\n.*?)```", readme, re.S)
    text = f"""schema_version: "1"\nflow: {{name: readme_map}}\n{fragment}edges:
  - {{from: START, to: classify}}
  - {{from: classify, to: END}}
"""
    spec = load_workflow(write(tmp_path, text)).spec
    node = spec.node("classify")
    assert node.map is not None and (node.map.over, node.map.as_) == ("reviews", "review")
    assert node.map.on_item_error == "skip"
    # graph.mmd, the run's drawing, shows the node runs once per item.
    assert '  classify[["classify: each review of reviews"]]\n' in draw_mermaid(spec)


def test_a_route_back_runs_the_map_again_from_scratch(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    checks = iter([False, True])

    def answer(request: RecordedRequest) -> Reply:
        if request.wants_json:  # the check node
            return Reply.json_reply({"done": next(checks)})
        return Reply.text_reply(f"label {item_of(request)}")

    gemini.set_default(answer)
    text = map_workflow(reviews(3), tracked=False)
    text = text.replace("    scores:", "    done: {type: bool, default: false}\n    scores:")
    text = text.replace(
        "  - {from: classify, to: END}",
        """  - {from: classify, to: check}
  - from: check
    routes:
      - {when: {field: done, equals: true}, to: END}
      - {to: classify}""",
    )
    text = text.replace(
        "edges:", '  - {id: check, prompt: "Done with {labels}?", outputs: [done]}\nedges:'
    )
    result = run_workflow(load_workflow(write(tmp_path, text)))
    assert result.state["labels"] == ["label 0", "label 1", "label 2"]  # not six
    assert result.node_runs == ("classify", "check", "classify", "check")
    assert result.usage.llm_calls == 8


def test_a_failed_item_stops_the_items_still_waiting(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    gemini.set_default(lambda request: Fault.bad_request("Invalid argument"))
    text = map_workflow(reviews(6), tracked=False).replace(
        "max_concurrency: 3", "max_concurrency: 1"
    )
    with pytest.raises(WorkflowRunError, match="Gemini 400") as failed:
        run_workflow(load_workflow(write(tmp_path, text)))
    assert len(gemini.requests) == 1  # the five items waiting for the slot made no call
    assert failed.value.usage is not None and failed.value.usage.llm_calls == 1


def test_skip_fails_the_node_when_every_item_failed(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    gemini.set_default(lambda request: Fault.unauthenticated("API key not valid"))
    text = map_workflow(reviews(2), map_extra=", on_item_error: skip", tracked=False)
    with pytest.raises(
        WorkflowRunError, match=r"Node `classify` of workflow reviews: all 2 items failed"
    ) as failed:
        run_workflow(load_workflow(write(tmp_path, text)))
    assert failed.value.usage is not None
    assert [f.item for f in sorted(failed.value.usage.failed_items, key=lambda f: f.item)] == [0, 1]


def hang_once_on_item(item: int) -> Any:
    """A default answer that hangs the first request for ``item`` (longer than the client's
    time-out), and answers every other request at once."""
    hung: list[int] = []

    def answer(request: RecordedRequest) -> Reply | Fault:
        if item_of(request) == item and not hung:
            hung.append(item)
            return Fault.hang(30)
        return Reply.text_reply(f"label {item_of(request)}")

    return answer


@pytest.mark.parametrize("on_item_error", ["skip", "fail"])
def test_a_hung_item_call_is_retried_like_a_hung_node(
    tmp_path: Path, gemini: GeminiLoopbackServer, on_item_error: str
) -> None:
    # On the async path the client's time-out is the built-in TimeoutError: transient.
    gemini.set_default(hang_once_on_item(1))
    text = map_workflow(
        reviews(3),
        map_extra=f", on_item_error: {on_item_error}",
        llm="timeout_s: 0.5, max_retries: 1",
        tracked=False,
    )
    result = run_workflow(load_workflow(write(tmp_path, text)))
    assert result.state["labels"] == ["label 0", "label 1", "label 2"]
    assert [item_of(r) for r in gemini.requests].count(1) == 2  # hung, then retried
    assert result.usage.failed_items == ()
    statuses = [c.status for c in result.usage.calls if c.item == 1]
    assert statuses == ["error", "ok"]


def test_a_hung_item_fails_the_run_as_transient_once_its_retries_are_spent(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    # A step retry (Dagster's) follows only a failure marked transient.
    gemini.set_default(lambda request: Fault.hang(30))
    text = map_workflow(reviews(1), llm="timeout_s: 0.3, max_retries: 0", tracked=False)
    with pytest.raises(WorkflowRunError) as failed:
        run_workflow(load_workflow(write(tmp_path, text)))
    assert getattr(failed.value, "transient", None) is True
    assert "TimeoutError" in str(failed.value)
