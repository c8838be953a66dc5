"""Choice fields (`choices: [...]`): an enum in the request Gemini gets, replies and inputs
validated against them, routes on them checked at load, and a Launchpad Enum."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from agents_pipelines.errors import InvalidInputsError, OutputValidationError, WorkflowConfigError
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset, run_config_schema
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import GeminiLoopbackServer, Reply
from conftest import write

TRIAGE = """\
schema_version: "1"
flow: {name: triage}
state:
  fields:
    ticket: {type: str, required: true}
    priority: {type: int, choices: [1, 2, 3], default: 2}
    language: {type: str, choices: [en, fr, de], default: en}
    category: {type: str, choices: [billing, bug, account, other]}
    tags: {type: "list[str]", choices: [urgent, refund, login]}
    only: {type: str, choices: [yes_label]}
    reply: {type: str}
nodes:
  - id: classify
    prompt: "Classify this ticket (priority {priority}): {ticket}"
    outputs: [category, tags, only]
  - id: answer
    prompt: "Answer this {category} ticket: {ticket}"
    outputs: [reply]
edges:
  - {from: START, to: classify}
  - from: classify
    routes:
      - {when: {field: category, equals: other}, to: END}
      - {to: answer}
  - {from: answer, to: END}
config:
  observability: {mlflow: {enabled: false}}
orchestration:
  inputs: {ticket: "I was charged twice"}
"""


def test_gemini_gets_the_choices_as_an_enum(tmp_path: Path, gemini: GeminiLoopbackServer) -> None:
    gemini.plan(
        Reply.json_reply({"category": "bug", "tags": ["login", "urgent"], "only": "yes_label"})
    )
    result = run_workflow(load_workflow(write(tmp_path, TRIAGE)))
    schema = gemini.requests[0].response_schema
    assert schema is not None
    properties = schema["properties"]
    assert properties["category"]["enum"] == ["billing", "bug", "account", "other"]
    assert properties["tags"]["items"]["enum"] == ["urgent", "refund", "login"]
    assert properties["only"]["enum"] == ["yes_label"]  # one choice: an enum, not a const
    assert "const" not in properties["only"]
    assert result.state["category"] == "bug" and result.state["tags"] == ["login", "urgent"]
    assert result.node_runs == ("classify", "answer")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            {"category": "refund", "tags": [], "only": "yes_label"},
            r"category: Input should be 'billing', 'bug', 'account' or 'other', not 'refund'"
            r".*Fix: .*add the value to the field's `choices`",
        ),
        (
            {"category": "bug", "tags": ["urgent", "vip"], "only": "yes_label"},
            r"tags\.1: Input should be 'urgent', 'refund' or 'login', not 'vip'",
        ),
    ],
)
def test_a_reply_outside_the_choices_fails_the_node(
    tmp_path: Path, gemini: GeminiLoopbackServer, reply: dict[str, object], reason: str
) -> None:
    gemini.plan(Reply.json_reply(reply))
    with pytest.raises(
        OutputValidationError, match=r"Node `classify` of workflow triage: .*" + reason
    ):
        run_workflow(load_workflow(write(tmp_path, TRIAGE)))
    assert len(gemini.requests) == 1  # a permanent failure: no retry, no second node


def test_run_inputs_are_held_to_the_choices(tmp_path: Path, simulated: None) -> None:
    workflow = load_workflow(write(tmp_path, TRIAGE))
    with pytest.raises(
        InvalidInputsError,
        match=r"`priority` must be int: Input should be 1, 2 or 3 \(got 5\)",
    ):
        run_workflow(workflow, {"priority": 5})
    assert run_workflow(workflow, {"priority": 3}).state["priority"] == 3


def test_a_route_on_a_value_that_is_no_choice_is_refused_at_load(tmp_path: Path) -> None:
    text = TRIAGE.replace("equals: other}", "equals: othr}")
    with pytest.raises(WorkflowConfigError) as caught:
        load_workflow(write(tmp_path, text))
    assert str(caught.value).splitlines()[1].strip() == (
        f"- {tmp_path / 'wf.yaml'}:23:34: edges[1].routes[0].when.equals: `equals` compares "
        "`category` with `othr`, which is not one of its choices. Fix: did you mean `other`? "
        "The choices: `billing`, `bug`, `account`, `other`"
    )


def test_the_launchpad_offers_the_choices(tmp_path: Path, simulated: None) -> None:
    workflow = load_workflow(write(tmp_path, TRIAGE))
    language = run_config_schema(workflow.spec)["language"]
    enum = language.config_type
    assert isinstance(enum, dg.Enum) and enum.given_name == "triage__language"
    assert [v.config_value for v in enum.enum_values] == ["en", "fr", "de"]
    assert language.default_value == "en"
    asset = build_workflow_asset(workflow)
    resources = {"workflow_runner": WorkflowRunner()}
    config = {"ops": {"triage": {"config": {"language": "fr", "priority": 3}}}}
    result = dg.materialize([asset], resources=resources, run_config=config)
    assert result.asset_value("triage")["language"] == "fr"
    assert result.asset_value("triage")["priority"] == 3  # int choices stay Int in run config
    with pytest.raises(dg.DagsterInvalidConfigError, match="language"):
        dg.materialize(
            [asset],
            resources=resources,
            run_config={"ops": {"triage": {"config": {"language": "es"}}}},
        )
