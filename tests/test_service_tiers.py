"""Gemini's service tiers (config.llm.service_tier, nodes[].llm.service_tier): each call is
sent at its node's tier and priced at the tier that served it, and the Dagster metadata,
MLflow's cost_summary.json and the trace agree. The real client against the loopback
server, materialized by Dagster."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from mlflow import MlflowClient

from agents_pipelines.errors import WorkflowConfigError
from agents_pipelines.estimate_command import estimate_workflow, no_key_estimate, render_estimate
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow, load_workflow_text
from agents_pipelines.testing import Fault, GeminiLoopbackServer, Reply, Usage
from agents_pipelines.tracking.span_policy import SERVICE_TIER
from conftest import (
    FAKE_KEY,
    assert_usage_agrees,
    dagster_materialize,
    metadata_of,
    metadata_values,
    write,
)

# gemini-2.5-flash in MLflow's bundled catalog, USD per million tokens, written out so the
# test is not circular: standard 0.30 / 2.50, flex 0.15 / 1.25 (half), priority 0.54 / 4.50.
# No cached tokens, so a flex call costs exactly half a standard one.
USAGE = Usage(prompt=1000, candidates=400, thoughts=0, cached=0)
STANDARD_USD = (1000 * 0.30 + 400 * 2.50) / 1e6  # 0.0013
FLEX_USD = (1000 * 0.15 + 400 * 1.25) / 1e6  # 0.00065
PRIORITY_USD = (1000 * 0.54 + 400 * 4.50) / 1e6  # 0.00234

TIERED = """\
schema_version: "1"
flow: {name: tiered}
state:
  fields:
    reviews: {type: "list[str]", default: ["Great kettle!", "Too loud."]}
    labels: {type: "list[str]"}
    summary: {type: str}
    answer: {type: str}
    verdict: {type: str}
nodes:
  - id: label
    map: {over: reviews, as: review}
    prompt: "Label this review: {review}"
    outputs: [labels]
  - id: summarize
    prompt: "Summarize {labels}."
    outputs: [summary]
    llm: {service_tier: standard}
  - id: answer
    prompt: "Answer {summary}."
    outputs: [answer]
    llm: {service_tier: priority}
  - id: judge
    prompt: "Judge {answer}."
    outputs: [verdict]
    llm: {service_tier: priority}
edges:
  - {from: START, to: label}
  - {from: label, to: summarize}
  - {from: summarize, to: answer}
  - {from: answer, to: judge}
  - {from: judge, to: END}
config:
  llm: {model: gemini-2.5-flash, service_tier: flex}
"""


def materialize(path: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_workflow_asset(load_workflow(path))],
        resources={"workflow_runner": WorkflowRunner()},
        raise_on_error=False,
    )


def cost_summary(run_id: str) -> dict[str, Any]:
    path = MlflowClient().download_artifacts(run_id, "cost_summary.json")
    return dict(json.loads(Path(path).read_text(encoding="utf-8")))


def test_each_call_is_sent_at_its_tier_and_priced_at_the_tier_that_served_it(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path
) -> None:
    # label (2 items) at flex from config.llm, summarize at standard, answer at priority,
    # and judge asks for priority but is served at standard (Gemini's downgrade past the
    # priority limits), so it is billed at standard.
    gemini.plan(
        Reply.text_reply("positive", usage=USAGE),
        Reply.text_reply("negative", usage=USAGE),
        Reply.text_reply("Mixed.", usage=USAGE),
        Reply.text_reply("Fine.", usage=USAGE),
        Reply(text="Good.", usage=USAGE, served_tier="standard"),
    )
    result = materialize(write(tmp_path, TIERED))
    assert result.success
    assert [r.body.get("serviceTier") for r in gemini.requests] == [
        "flex",
        "flex",
        None,  # standard is the default: not sent, so the request is what it always was
        "priority",
        "priority",
    ]

    meta = metadata_of(result, "tiered")
    records = meta["node_calls"].records
    rows = [(r.data["node"], r.data["tier"], r.data["cost_usd"]) for r in records]
    assert sorted(rows, key=lambda row: (row[0], row[2])) == [
        ("answer", "priority", round(PRIORITY_USD, 9)),
        ("judge", "standard", round(STANDARD_USD, 9)),
        ("label", "flex", round(FLEX_USD, 9)),
        ("label", "flex", round(FLEX_USD, 9)),
        ("summarize", "standard", round(STANDARD_USD, 9)),
    ]
    expected = round(2 * FLEX_USD + 2 * STANDARD_USD + PRIORITY_USD, 9)
    assert meta["total_cost_usd"] == expected
    assert 2 * round(FLEX_USD, 9) == round(STANDARD_USD, 9)  # flex is half the price

    # The MLflow metrics, cost_summary.json and the trace's span costs agree exactly.
    trace = assert_usage_agrees(meta, meta["mlflow_run_id"])
    spans = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    span_tiers = sorted(
        (s.attributes[SERVICE_TIER], s.attributes["mlflow.llm.cost"]["total_cost"]) for s in spans
    )
    assert span_tiers == sorted((tier, cost) for _, tier, cost in rows)
    summary = cost_summary(meta["mlflow_run_id"])
    assert sorted(c["service_tier"] for c in summary["calls"]) == [
        "flex",
        "flex",
        "priority",
        "standard",
        "standard",
    ]
    sources = {c["service_tier"]: c["price_source"] for c in summary["calls"]}
    assert sources["flex"].endswith(", flex tier")
    assert sources["priority"].endswith(", priority tier")
    assert "tier" not in sources["standard"]


def test_flex_429_and_503_go_through_the_nodes_retry_policy(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path
) -> None:
    text = TIERED.replace("llm: {service_tier: standard}", "llm: {service_tier: flex}")
    gemini.plan(
        Reply.text_reply("positive", usage=USAGE),
        Reply.text_reply("negative", usage=USAGE),
        Fault.rate_limit(retry_after_s=None, message="Flex capacity is busy"),
        Fault.server_error(503),
    )
    gemini.set_default(lambda request: Reply.text_reply("ok", usage=USAGE))
    result = materialize(write(tmp_path, text))
    assert result.success
    meta = metadata_of(result, "tiered")
    summarize = [r.data for r in meta["node_calls"].records if r.data["node"] == "summarize"]
    assert [(r["status"], r["tier"], r["cost_usd"]) for r in summarize] == [
        ("error", "flex", None),
        ("error", "flex", None),
        ("ok", "flex", round(FLEX_USD, 9)),
    ]
    assert [r.body.get("serviceTier") for r in gemini.requests[2:5]] == ["flex"] * 3
    expected = round(3 * FLEX_USD + 2 * PRIORITY_USD, 9)  # nothing for a refused call
    assert meta["total_cost_usd"] == expected
    assert cost_summary(meta["mlflow_run_id"])["totals"]["total_cost_usd"] == expected


def test_the_dagster_cli_sends_and_prices_each_call_at_its_tier(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path
) -> None:
    """`dagster asset materialize` of the code location, as a user runs it: the real client
    in a process of its own, each request carrying its node's tier, the materialization in
    the instance priced at the tier that served each call."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "tiered.yaml").write_text(TIERED)
    gemini.set_default(lambda request: Reply.text_reply("ok", usage=USAGE))
    done, home = dagster_materialize(tmp_path, workflows, "tiered")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(r.service_tier for r in gemini.requests) == [
        "flex",
        "flex",
        "priority",
        "priority",
        "standard",
    ]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.fetch_materializations(dg.AssetKey("tiered"), limit=5).records
    meta = metadata_values(record.asset_materialization.metadata)
    rows = sorted((r.data["node"], r.data["tier"]) for r in meta["node_calls"].records)
    assert rows == [
        ("answer", "priority"),
        ("judge", "priority"),
        ("label", "flex"),
        ("label", "flex"),
        ("summarize", "standard"),
    ]
    assert meta["total_cost_usd"] == round(2 * FLEX_USD + STANDARD_USD + 2 * PRIORITY_USD, 9)
    summary = cost_summary(meta["mlflow_run_id"])
    assert summary["totals"]["total_cost_usd"] == meta["total_cost_usd"]


def test_the_estimate_prices_each_node_at_its_tier(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    flex = load_workflow(write(tmp_path, TIERED))
    standard = load_workflow(
        write(
            tmp_path,
            TIERED.replace("service_tier: flex}", "service_tier: standard}"),
            "standard.yaml",
        )
    )
    for estimate in (estimate_workflow, lambda w, _: no_key_estimate(w)):
        tiered = {n.node: n for n in estimate(flex, {}).nodes}
        plain = {n.node: n for n in estimate(standard, {}).nodes}
        assert tiered["label"].tier == "flex" and plain["label"].tier == "standard"
        assert tiered["label"].cost_usd == pytest.approx(plain["label"].cost_usd / 2, abs=1e-9)
        assert tiered["answer"].cost_usd == plain["answer"].cost_usd  # priority in both
        assert tiered["answer"].cost_usd > tiered["summarize"].cost_usd
    table = render_estimate(estimate_workflow(flex, {}))
    assert re.search(r"label +gemini-2\.5-flash \(flex\) +2 ", table), table
    assert "price of gemini-2.5-flash (flex): mlflow bundled price table" in table


def test_a_dry_run_is_priced_at_the_tier(mlflow_uri: str, tmp_path: Path) -> None:
    result = run_workflow(load_workflow(write(tmp_path, TIERED)), backend="simulated")
    calls = {c.node: c for c in result.usage.calls}
    assert {node: call.tier for node, call in calls.items()} == {
        "label": "flex",
        "summarize": "standard",
        "answer": "priority",
        "judge": "priority",
    }
    label = calls["label"]
    flex_usd = (label.usage.prompt * 0.15 + label.usage.completion * 1.25) / 1e6
    assert label.cost_usd == pytest.approx(flex_usd, abs=1e-9)


def test_the_loopback_server_answers_the_tier_it_was_asked_for() -> None:
    with GeminiLoopbackServer() as server:
        served = {}
        for asked in (None, "flex", "priority"):
            body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
            if asked:
                body["serviceTier"] = asked
            response = httpx.post(
                f"{server.base_url}/v1beta/models/gemini-2.5-flash:generateContent",
                json=body,
                headers={"x-goog-api-key": FAKE_KEY},
            )
            usage = response.json()["usageMetadata"]
            served[asked] = (usage["serviceTier"], usage["trafficType"])
    assert served == {
        None: ("standard", "ON_DEMAND"),
        "flex": ("flex", "ON_DEMAND_FLEX"),
        "priority": ("priority", "ON_DEMAND_PRIORITY"),
    }


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "service_tier: flex}",
            "service_tier: cheap}",
            r"wf\.yaml:\d+:\d+: config\.llm\.service_tier: .*'standard', 'flex' or 'priority'",
        ),
        (
            "llm: {service_tier: standard}",
            "llm: {service_tier: batch}",
            r"wf\.yaml:\d+:\d+: nodes\[1\]\.llm\.service_tier: .*'standard', 'flex' or 'priority'",
        ),
    ],
)
def test_an_unknown_tier_is_refused_with_file_line_and_the_choices(
    old: str, new: str, expected: str
) -> None:
    with pytest.raises(WorkflowConfigError) as info:
        load_workflow_text(TIERED.replace(old, new), "wf.yaml")
    assert any(re.search(expected, str(issue)) for issue in info.value.issues), [
        str(issue) for issue in info.value.issues
    ]


def test_a_recorded_flex_run_replays_offline_at_the_tier_that_served_it(
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gemini.set_default(lambda request: Reply.text_reply("ok", usage=USAGE))
    gemini.plan(
        *[Reply.text_reply("ok", usage=USAGE)] * 4,
        Reply(text="ok", served_tier="standard", usage=USAGE),
    )
    workflow = load_workflow(write(tmp_path, TIERED))
    monkeypatch.setenv("AGENTS_PIPELINES_CASSETTE", str(tmp_path / "tiers.jsonl"))
    recorded = run_workflow(workflow, backend="record")
    gemini.stop()
    monkeypatch.delenv("GOOGLE_API_KEY")
    replayed = run_workflow(workflow, backend="replay")

    def calls(result: Any) -> list[tuple[str, str, float | None]]:
        return sorted((c.node, c.tier, c.cost_usd) for c in result.usage.calls)

    assert calls(replayed) == calls(recorded)
    assert [tier for _, tier, _ in calls(replayed)] == [
        "priority",
        "standard",  # judge: asked for priority, served at standard, as recorded
        "flex",
        "flex",
        "standard",
    ]


def test_a_standard_client_keys_the_development_cache_as_the_plain_client_did() -> None:
    from langchain_google_genai import ChatGoogleGenerativeAI
    from pydantic import SecretStr

    from agents_pipelines.llm.gemini import _chat_model

    def tiered(tier: str) -> Any:
        return _chat_model("gemini-2.5-flash", None, None, 30, "http://x", "k", None, tier)

    plain = ChatGoogleGenerativeAI(
        model="gemini-2.5-flash",
        google_api_key=SecretStr("k"),
        temperature=None,
        max_output_tokens=None,
        timeout=30,
        max_retries=1,
        base_url="http://x",
    )
    assert tiered("standard")._get_llm_string() == plain._get_llm_string()
    assert tiered("flex")._get_llm_string() != plain._get_llm_string()
    assert tiered("flex").get_name() == "ChatGoogleGenerativeAI"  # the trace's span name
