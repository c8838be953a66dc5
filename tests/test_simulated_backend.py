"""The simulated backend's answers: the same for the same request, varied across requests,
within the fields' choices and the checks' bounds, so that dry runs take every route."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
from langchain_core.messages import HumanMessage, SystemMessage

from agents_pipelines.graph.state import output_model
from agents_pipelines.llm.simulated import SimulatedChatModel
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow, load_workflow_text
from agents_pipelines.spec.models import WorkflowSpec
from agents_pipelines.testing import GeminiLoopbackServer, Reply
from conftest import write

TRIAGE = """\
schema_version: "1"
flow: {name: triage}
state:
  fields:
    ticket: {type: str, required: true}
    category: {type: str, choices: [billing, bug, account, other]}
    urgency: {type: int}
    confidence: {type: float}
    tags: {type: "list[str]", choices: [urgent, refund, login]}
    reply: {type: str}
    approved: {type: bool}
    note: {type: str}
nodes:
  - id: classify
    prompt: "Classify this ticket: {ticket}"
    outputs: [category, urgency, confidence, tags]
  - {id: billing, prompt: "Answer this billing ticket: {ticket}", outputs: [reply]}
  - {id: tech, prompt: "Answer this bug report: {ticket}", outputs: [reply]}
  - {id: general, prompt: "Answer this ticket: {ticket}", outputs: [reply]}
  - {id: review, prompt: "May this reply go out? {reply}", outputs: [approved]}
  - {id: escalate, prompt: "Tell a manager about: {ticket}", outputs: [note]}
edges:
  - {from: START, to: classify}
  - from: classify
    routes:
      - {when: {field: category, equals: billing}, to: billing}
      - {when: {field: category, in: [bug, account]}, to: tech}
      - {to: general}
  - {from: billing, to: review}
  - {from: tech, to: review}
  - {from: general, to: review}
  - from: review
    routes:
      - {when: {field: approved, equals: true}, to: END}
      - {to: escalate}
  - {from: escalate, to: END}
config:
  observability: {mlflow: {enabled: false}}
orchestration:
  checks:
    - {field: urgency, min: 1}
    - {field: urgency, max: 5}
    - {field: confidence, min: 0.5}
    - {field: reply, max_length: 300}
    - {field: tags, min_length: 2}
"""
TICKETS = [f"Ticket {i}: my order #{1000 + i} has a problem" for i in range(20)]


def test_the_same_request_gets_the_same_answer_and_others_differ() -> None:
    model = SimulatedChatModel()
    schema = output_model(load_spec(), ["category", "urgency", "tags"], "out")
    json_mode: dict[str, Any] = {
        "response_json_schema": schema.model_json_schema(),
        "response_mime_type": "application/json",
    }
    asked = [SystemMessage("You sort tickets."), HumanMessage(TICKETS[0])]
    first = model.invoke(asked, **json_mode).text
    assert model.invoke(asked, **json_mode).text == first
    others = {model.invoke([HumanMessage(t)], **json_mode).text for t in TICKETS}
    assert len(others) == len(TICKETS)
    text = model.invoke(asked).text
    assert text == model.invoke(asked).text
    assert text.startswith("[simulated gemini-2.5-flash] Re: You sort tickets. Ticket 0:")
    assert 100 <= len(text.split()) <= 140  # about 120 words: the size drives the estimate
    assert text != model.invoke([HumanMessage(TICKETS[1])]).text


def test_dry_runs_stay_within_choices_and_bounds_and_take_every_route(
    tmp_path: Path, simulated: None
) -> None:
    workflow = load_workflow(write(tmp_path, TRIAGE))
    runs = [run_workflow(workflow, {"ticket": ticket}) for ticket in TICKETS]
    states = [run.state for run in runs]
    assert {s["category"] for s in states} == {"billing", "bug", "account", "other"}
    assert all(1 <= s["urgency"] <= 5 for s in states)
    assert len({s["urgency"] for s in states}) >= 4  # spread across the range
    assert all(0.5 <= s["confidence"] <= 1.0 for s in states)
    assert all(
        2 <= len(s["tags"]) == len(set(s["tags"]))
        and set(s["tags"]) <= {"urgent", "refund", "login"}
        for s in states
    )
    assert all(len(s["reply"]) <= 300 for s in states)
    routes = Counter(run.node_runs[1] for run in runs)
    assert set(routes) == {"billing", "tech", "general"}
    assert {s["approved"] for s in states} == {True, False}
    escalated = [run for run in runs if "escalate" in run.node_runs]
    assert 0 < len(escalated) < len(runs)
    again = run_workflow(workflow, {"ticket": TICKETS[3]})
    assert again.state == states[3] and again.node_runs == runs[3].node_runs


def test_a_review_loop_asking_the_same_question_ends(tmp_path: Path, simulated: None) -> None:
    # `write` gets the same prompt every round, and so does `review`: only the graph step
    # in the seed makes a later round answer otherwise, as a model with temperature would.
    text = """\
schema_version: "1"
flow: {name: loop}
state:
  fields:
    topic: {type: str, required: true}
    draft: {type: str}
    approved: {type: bool}
nodes:
  - {id: write, prompt: "Write about {topic}.", outputs: [draft]}
  - {id: review, prompt: "Is this publishable? {draft}", outputs: [approved]}
edges:
  - {from: START, to: write}
  - {from: write, to: review}
  - from: review
    routes:
      - {when: {field: approved, equals: true}, to: END}
      - {to: write}
config:
  execution: {max_steps: 25}
  observability: {mlflow: {enabled: false}}
"""
    workflow = load_workflow(write(tmp_path, text))
    rounds = [
        run_workflow(workflow, {"topic": f"topic {i}"}).node_runs.count("review") for i in range(10)
    ]
    assert all(run_rounds >= 1 for run_rounds in rounds)
    assert max(rounds) > 1  # some drafts were sent back, and the loop still ended


def test_a_dry_run_passes_the_checks(tmp_path: Path, simulated: None) -> None:
    result = materialize(tmp_path, TICKETS[0])
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "urgency_min_1_0": True,
        "urgency_max_5_0": True,
        "confidence_min_0_5": True,
        "reply_max_length_300": True,
        "tags_min_length_2": True,
    }


def test_gemini_gets_no_bounds_and_a_check_stays_a_check(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    # The bounds go to the simulated model only: Gemini's schema is the fields' types, and
    # a reply past a non-blocking check fails the check, not the run.
    gemini.plan(
        Reply.json_reply({"category": "other", "urgency": 9, "confidence": 0.9, "tags": ["login"]}),
        Reply.text_reply("Hello"),
        Reply.json_reply({"approved": True}),
    )
    result = materialize(tmp_path, TICKETS[0])
    assert result.success
    properties = gemini.requests[0].response_schema["properties"]  # type: ignore[index]
    assert properties["urgency"] == {
        "description": "urgency",
        "title": "Urgency",
        "type": "integer",
    }
    assert "minItems" not in properties["tags"]
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["urgency_max_5_0"] is False and checks["tags_min_length_2"] is False
    assert checks["urgency_min_1_0"] is True


def load_spec() -> WorkflowSpec:
    return load_workflow_text(TRIAGE, "triage.yaml").spec


def materialize(tmp_path: Path, ticket: str) -> dg.ExecuteInProcessResult:
    asset = build_workflow_asset(load_workflow(write(tmp_path, TRIAGE)))
    return dg.materialize(
        [asset],
        resources={"workflow_runner": WorkflowRunner()},
        run_config={"ops": {"triage": {"config": {"ticket": ticket}}}},
    )


def test_routes_on_thresholds_and_free_text_go_every_way(tmp_path: Path, simulated: None) -> None:
    # No choices, no checks: the values the routes compare with spread the answers.
    text = """\
schema_version: "1"
flow: {name: scored}
state:
  fields:
    topic: {type: str, required: true}
    score: {type: int}
    verdict: {type: str}
    summary: {type: str}
nodes:
  - {id: grade, prompt: "Grade {topic}: approve or reject.", outputs: [score, verdict]}
  - {id: sum_up, prompt: "Summarize {topic}; flag it if it is urgent.", outputs: [summary]}
  - {id: praise, prompt: "Praise {topic}.", outputs: [summary]}
edges:
  - {from: START, to: grade}
  - from: grade
    routes:
      - {when: {field: score, gte: 8}, to: praise}
      - {when: {field: verdict, equals: reject}, to: END}
      - {to: sum_up}
  - from: sum_up
    routes:
      - {when: {field: summary, contains: URGENT}, to: praise}
      - {to: END}
  - {from: praise, to: END}
config:
  observability: {mlflow: {enabled: false}}
"""
    workflow = load_workflow(write(tmp_path, text))
    runs = [run_workflow(workflow, {"topic": f"topic {i}"}) for i in range(40)]
    paths = Counter(run.node_runs for run in runs)
    assert set(paths) == {
        ("grade", "praise"),
        ("grade",),
        ("grade", "sum_up"),
        ("grade", "sum_up", "praise"),
    }
    verdicts = {run.state["verdict"] for run in runs}
    assert "reject" in verdicts and any(v.startswith("Simulated verdict: ") for v in verdicts)
