"""Size limits: a state value over config.execution.max_state_value_chars fails the run
before it is checkpointed or sent; a tool result over max_tool_result_chars reaches the
model as an error; the budget stops a prompt that alone would pass it, before it is sent.
The real Gemini client against the loopback server, which records what was sent."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest

from agents_pipelines.errors import BudgetExceededError, InvalidInputsError, StateValueTooLargeError
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.orchestration.stores.checkpoints import SQLITE_FILE
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import GeminiLoopbackServer, RecordedRequest, Reply, Usage
from conftest import LINEAR, write

LIMIT = 1_000_000  # config.execution.max_state_value_chars's default
TOOL_LIMIT = 100_000  # max_tool_result_chars's default

STEP_THEN_SUMMARY = """\
schema_version: "1"
flow: {{name: bulky}}
state:
  fields:
    topic: {{type: str, required: true}}
    text: {{type: str}}
    summary: {{type: str}}
nodes:
  - {{id: load, function: "{function}", outputs: [text]}}
  - {{id: summarize, prompt: "Summarize {{text}}", outputs: [summary]}}
edges:
  - {{from: START, to: load}}
  - {{from: load, to: summarize}}
  - {{from: summarize, to: END}}
config:
  observability: {{mlflow: {{enabled: false}}}}
orchestration:
  inputs: {{topic: cats}}
"""

TOOL_NODE = """\
schema_version: "1"
flow: {{name: fetching}}
state:
  fields:
    topic: {{type: str, required: true}}
    reply: {{type: str}}
nodes:
  - id: answer
    prompt: "Answer about {{topic}}."
    tools: ["{tool}"]
    outputs: [reply]
edges:
  - {{from: START, to: answer}}
  - {{from: answer, to: END}}
config:
  observability: {{mlflow: {{enabled: false}}}}
orchestration:
  inputs: {{topic: cats}}
{budget}"""


@pytest.fixture(autouse=True)
def in_tmp_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The test's modules are importable from its own working directory; the loader puts
    that on sys.path, which is undone afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))


def module_in(folder: Path, source: str) -> str:
    name = f"sized_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    return name


def test_a_step_value_over_the_limit_fails_before_it_is_checkpointed_or_sent(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    source = 'def load() -> dict:\n    return {"text": "x" * 2_000_000}\n'
    function = f"{module_in(tmp_path, source)}:load"
    asset = build_workflow_asset(
        load_workflow(write(tmp_path, STEP_THEN_SUMMARY.format(function=function)))
    )
    with dg.instance_for_test() as instance:  # checkpointing on (resume), in its storage
        result = dg.materialize(
            [asset],
            instance=instance,
            resources={"workflow_runner": WorkflowRunner()},
            raise_on_error=False,
        )
        stored = sum(
            path.stat().st_size
            for path in Path(instance.storage_directory()).glob(f"{SQLITE_FILE}*")
        )
    assert not result.success
    failure = result.failure_data_for_node("bulky")
    assert failure is not None and failure.user_failure_data is not None
    assert (
        "Node `load` of workflow bulky wrote at least 2000000 characters to `text`, over "
        f"config.execution.max_state_value_chars {LIMIT}; the run stopped before the value "
        "was checkpointed, stored or sent to a model. Fix: write less"
    ) in failure.user_failure_data.description
    assert gemini.requests == []  # nothing sent
    assert stored < 200_000  # the checkpoints never held the 2 MB value


@pytest.mark.parametrize(
    ("config", "limit"),
    [("", LIMIT), ("config:\n  execution: {max_state_value_chars: 10}\n", 10)],
    ids=["default", "configured"],
)
def test_an_input_over_the_limit_is_refused_before_any_call(
    tmp_path: Path, gemini: GeminiLoopbackServer, config: str, limit: int
) -> None:
    workflow = load_workflow(write(tmp_path, LINEAR + config))
    with pytest.raises(
        InvalidInputsError,
        match=rf"^Invalid inputs for workflow linear: `topic` holds at least {limit + 1} "
        rf"characters, over config\.execution\.max_state_value_chars {limit}: give less",
    ):
        run_workflow(workflow, {"topic": "y" * (limit + 1)})
    assert gemini.requests == []


def calls_tool_then_answers(request: RecordedRequest) -> Reply:
    if not request.function_responses:
        return Reply.function_call_reply("fetch", {"topic": "cats"})
    return Reply.text_reply("Cats purr.")


def test_a_10_mb_tool_result_reaches_the_model_as_an_error_not_whole(
    tmp_path: Path, gemini: GeminiLoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    source = 'def fetch(topic: str) -> str:\n    """Fetch a page."""\n    return "z" * 10_485_760\n'
    tool = f"{module_in(tmp_path, source)}:fetch"
    gemini.set_default(calls_tool_then_answers)
    result = run_workflow(load_workflow(write(tmp_path, TOOL_NODE.format(tool=tool, budget=""))))
    assert result.state["reply"] == "Cats purr."
    _, second = gemini.requests
    (response,) = second.function_responses
    sent = str(response["response"])
    assert "zzz" not in sent
    assert (
        "Error: the result of tool `fetch` holds at least 10485760 characters, over "
        f"config.execution.max_tool_result_chars {TOOL_LIMIT}, so it was not sent."
    ) in sent
    assert len(str(second.body)) < 5_000  # not 10 MB: the whole request is small
    assert "Node `answer` of workflow fetching: Error: the result of tool `fetch`" in caplog.text


# The second call's prompt: "Answer about cats." and the tool's 80,000 characters (within
# the tool result limit), 80,018 characters: 20,005 tokens by characters / 4, $0.0060015
# at gemini-2.5-flash's $0.30 per million input tokens. The first call spent 120 tokens,
# $0.00008.
@pytest.mark.parametrize(
    ("budget", "over"),
    [
        (
            "{max_total_tokens: 5000}",
            "120 tokens spent and about 20005 in its prompt, over max_total_tokens 5000",
        ),
        (
            "{max_cost_usd: 0.001}",
            "$0.000080 spent and about $0.006001 for its prompt, over max_cost_usd $0.001000",
        ),
    ],
    ids=["tokens", "cost"],
)
def test_the_budget_stops_a_prompt_that_would_pass_it_before_it_is_sent(
    tmp_path: Path, gemini: GeminiLoopbackServer, budget: str, over: str
) -> None:
    source = 'def fetch(topic: str) -> str:\n    """Fetch a page."""\n    return "w " * 40_000\n'
    tool = f"{module_in(tmp_path, source)}:fetch"
    gemini.set_default(
        lambda request: (
            Reply.function_call_reply("fetch", {"topic": "cats"}, usage=Usage(100, 20, 0, 0))
            if not request.function_responses
            else Reply.text_reply("Cats purr.")
        )
    )
    text = TOOL_NODE.format(tool=tool, budget=f"  budget: {budget}\n")
    with pytest.raises(BudgetExceededError) as raised:
        run_workflow(load_workflow(write(tmp_path, text)))
    assert len(gemini.requests) == 1  # the oversized prompt was never sent
    assert str(raised.value) == (
        "Workflow fetching stopped before the next LLM call of `answer`, unsent: its prompt "
        f"would pass the budget ({over}; prompt sized by characters / 4). Send less (a "
        "shorter input, a tool that returns less), or raise orchestration.budget. Spent "
        "before failing: $0.000080 over 1 LLM call(s), 120 tokens."  # stated once
    )
    assert raised.value.usage is not None and raised.value.usage.tokens.total == 120


MAPPED = """\
schema_version: "1"
flow: {{name: mapped}}
state:
  fields:
    reviews: {{type: "list[str]", required: true}}
    labels: {{type: "list[str]"}}
nodes:
  - id: classify
    map: {{over: reviews, as: review}}
    function: "{function}"
    outputs: [labels]
edges:
  - {{from: START, to: classify}}
  - {{from: classify, to: END}}
config:
  execution: {{max_state_value_chars: 50}}
  observability: {{mlflow: {{enabled: false}}}}
"""


def test_a_map_item_over_the_configured_limit_fails_the_run(tmp_path: Path) -> None:
    source = "def label(review: str) -> dict:\n    return {'labels': review * 20}\n"
    function = f"{module_in(tmp_path, source)}:label"
    workflow = load_workflow(write(tmp_path, MAPPED.format(function=function)))
    passed = run_workflow(workflow, {"reviews": ["ok", "no"]})  # 40 characters each
    assert passed.state["labels"] == ["ok" * 20, "no" * 20]
    with pytest.raises(
        StateValueTooLargeError,
        match=r"^Node `classify` of workflow mapped wrote at least 60 characters to `labels`, "
        r"over config\.execution\.max_state_value_chars 50;(.|\n)*In item 1 of map node `classify`",
    ):
        run_workflow(workflow, {"reviews": ["ok", "bad"]})
