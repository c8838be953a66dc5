"""Python steps (`function:`): called with the state fields they name, checked outputs,
traced as a span of their own, listed in node_calls at no cost. The real Gemini client
against the loopback server for the LLM node beside them; the steps' modules are written
to the working directory, which the loader makes importable."""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from agents_pipelines.errors import PythonStepError, WorkflowConfigError
from agents_pipelines.graph.nodes import make_node
from agents_pipelines.orchestration import (
    WorkflowRunner,
    build_definitions,
    build_workflow_asset,
)
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow, load_workflow_text
from agents_pipelines.testing import GeminiLoopbackServer
from conftest import EXAMPLES, assert_usage_agrees, metadata_of, write

# One gemini-2.5-flash call with the loopback server's default usage (see test_gemini_path).
CALL_COST = ((120 - 20) * 0.30 + 20 * 0.03 + 85 * 2.50) / 1e6

STEP_THEN_SUMMARY = """\
schema_version: "1"
flow: {{name: {name}}}
state:
  fields:
    product: {{type: str, required: true}}
    reviews: {{type: "list[str]"}}
    count: {{type: int}}
    digest: {{type: str}}
nodes:
  - id: load
    function: {function}
    outputs: [reviews, count]
  - id: summarize
    prompt: "Summarize these {{count}} reviews: {{reviews}}"
    outputs: [digest]
edges:
  - {{from: START, to: load}}
  - {{from: load, to: summarize}}
  - {{from: summarize, to: END}}
config:
  observability:
    mlflow: {{artifact_level: {level}}}
orchestration:
  inputs: {{product: kettle}}
"""

SYNC = '''
def fetch(product: str) -> dict:
    """Reviews of a product."""
    reviews = [f"{product} review {i}" for i in range(3)]
    return {"reviews": reviews, "count": len(reviews)}
'''

ASYNC = '''
import asyncio

async def fetch(product: str) -> dict:
    """Reviews of a product, from an async client."""
    await asyncio.sleep(0.01)
    reviews = [f"{product} review {i}" for i in range(3)]
    return {"reviews": reviews, "count": len(reviews)}
'''


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader puts the working directory (each test's own) on sys.path: undo it."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def module_in(folder: Path, source: str) -> str:
    """Write ``source`` as a module of a fresh name into ``folder``; return the name."""
    name = f"steps_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    return name


def step_workflow(tmp_path: Path, name: str, source: str, level: str = "standard") -> Path:
    function = f"{module_in(tmp_path, source)}:fetch"
    return write(tmp_path, STEP_THEN_SUMMARY.format(name=name, function=function, level=level))


@pytest.mark.parametrize("source", [SYNC, ASYNC], ids=["sync", "async"])
def test_a_python_step_feeds_the_llm_and_costs_nothing(
    source: str, tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    path = step_workflow(tmp_path, "reviews", source)  # tmp_path is the working directory
    result = dg.materialize(
        [build_workflow_asset(load_workflow(path))],
        resources={"workflow_runner": WorkflowRunner()},
    )
    state = result.asset_value("reviews")
    assert state["reviews"] == ["kettle review 0", "kettle review 1", "kettle review 2"]
    assert state["count"] == 3
    (request,) = gemini.requests
    assert "Summarize these 3 reviews" in request.prompt_text
    assert "kettle review 2" in request.prompt_text

    meta = metadata_of(result, "reviews")
    assert meta["llm_calls"] == 1 and meta["node_count"] == 2
    assert meta["total_cost_usd"] == pytest.approx(CALL_COST, abs=1e-12)
    step, call = (row.data for row in meta["node_calls"].records)
    assert step | {"latency_s": 0} == {
        "node": "load",
        "item": None,
        "model": "python",
        "tier": None,
        "tools_called": "",
        "status": "ok",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "reasoning_tokens": 0,
        "cached_tokens": 0,
        "cost_usd": 0.0,
        "latency_s": 0,
        "cache_hit": False,
        "saved_cost_usd": None,
    }
    assert call["node"] == "summarize" and call["model"] == "gemini-2.5-flash"

    trace = assert_usage_agrees(meta, meta["mlflow_run_id"])
    spans = {span.name: span for span in trace.data.spans}
    assert spans["fetch"].parent_id == spans["load"].span_id  # its own span, in its node's
    assert spans["fetch"].span_type == "CHAIN"


def test_a_wrong_key_or_type_fails_the_node_naming_function_field_and_type(
    tmp_path: Path, mlflow_uri: str
) -> None:
    cases = {
        'return {"reviews": ["a"], "count": "3"}': (
            r"returned str for `count`, which is int \(got '3'\)"
        ),
        'return {"reviews": ["a"], "count": 1, "extra": 2}': (
            r"returned `extra`, which is not one of its outputs"
        ),
        'return {"reviews": ["a"]}': r"returned no `count`",
        'return ["a"]': r"returned list, not a dict",
        "raise ValueError('the shop API said no')": r"raised ValueError: the shop API said no",
    }
    for body, expected in cases.items():
        source = f"def fetch(product: str) -> dict:\n    {body}\n"
        workflow = load_workflow(step_workflow(tmp_path, "wrong", source, level="minimal"))
        with pytest.raises(PythonStepError) as caught:
            run_workflow(workflow, backend="simulated")
        message = str(caught.value)
        assert f"Python step `load` of workflow wrong ({workflow.spec.nodes[0].function})" in (
            message
        )
        assert pytest.approx(0) == caught.value.usage.total_cost_usd  # type: ignore[union-attr]
        assert caught.value.usage.llm_calls == 0  # type: ignore[union-attr]
        assert re.search(expected, message), message
        (record,) = caught.value.usage.calls  # type: ignore[union-attr]
        assert (record.model, record.status) == ("python", "error")


def test_in_a_map_node_the_item_is_a_parameter_and_outputs_are_elements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = (
        "def label(review: str, tone: str) -> dict:\n"
        "    return {'labels': tone + review if tone else [review]}\n"
    )
    module = module_in(tmp_path, source)
    text = f"""\
schema_version: "1"
flow: {{name: mapped}}
state:
  fields:
    reviews: {{type: "list[str]", required: true}}
    tone: {{type: str, default: calm}}
    labels: {{type: "list[str]"}}
nodes:
  - id: classify
    map: {{over: reviews, as: review}}
    function: {module}:label
    outputs: [labels]
edges:
  - {{from: START, to: classify}}
  - {{from: classify, to: END}}
"""
    monkeypatch.chdir(tmp_path)  # the loader imports from the working directory
    spec = load_workflow_text(text).spec
    action = make_node(spec, spec.nodes[0], None)
    # What the map node gives each item: the state, with the item under the `as` name.
    item_state = {"reviews": ["good"], "tone": "calm: ", "labels": [], "review": "good"}
    assert action(item_state) == {"labels": "calm: good"}  # an element of `labels`
    with pytest.raises(PythonStepError, match=r"returned list for `labels`, which is str"):
        action({**item_state, "tone": ""})


def test_load_refuses_a_parameter_that_is_no_state_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = (
        "def fetch(product: str, limit: int = 5) -> dict:\n    return {}\n"
        "def needs(customer: str) -> dict:\n    return {}\n"
    )
    module = module_in(tmp_path, source)
    text = STEP_THEN_SUMMARY.format(name="params", function=f"{module}:needs", level="minimal")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkflowConfigError) as caught:
        load_workflow(write(tmp_path, text))
    (issue,) = caught.value.issues
    assert (issue.path, issue.line) == ("nodes[0].function", 11)
    assert issue.problem == f"parameter `customer` of `{module}:needs` is not a state field"
    # Parameters with defaults need not be fields.
    ok = STEP_THEN_SUMMARY.format(name="params", function=f"{module}:fetch", level="minimal")
    assert load_workflow(write(tmp_path, ok)).name == "params"


def test_the_example_loads_reviews_then_summarizes_under_the_simulated_backend(
    mlflow_uri: str, simulated: None
) -> None:
    result = dg.materialize(
        [build_workflow_asset(load_workflow(EXAMPLES / "review_digest.yaml"))],
        resources={"workflow_runner": WorkflowRunner()},
    )
    state = result.asset_value("review_digest")
    assert len(state["reviews"]) == 4 and state["digest"].startswith("[simulated")
    meta = metadata_of(result, "review_digest")
    assert [(r.data["node"], r.data["model"]) for r in meta["node_calls"].records] == [
        ("load_reviews", "python"),
        ("summarize", "gemini-2.5-flash"),
    ]
    assert meta["llm_calls"] == 1


def test_an_unimportable_step_fails_the_code_location_or_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    module = module_in(tmp_path, "import no_such_dependency_xyz\n")
    text = STEP_THEN_SUMMARY.format(name="broken", function=f"{module}:fetch", level="minimal")
    write(folder, text, "broken.yaml")
    ok = module_in(tmp_path, SYNC)
    (folder / "ok.yaml").write_text(
        STEP_THEN_SUMMARY.format(name="fine", function=f"{ok}:fetch", level="minimal")
    )
    with pytest.raises(WorkflowConfigError) as caught:
        build_definitions(folder)
    (issue,) = caught.value.issues
    assert str(issue).startswith(f"{folder / 'broken.yaml'}:11:5: nodes[0].function: ")
    assert (
        f"module `{module}` does not import: ModuleNotFoundError: "
        "No module named 'no_such_dependency_xyz'" in issue.problem
    )
    defs = build_definitions(folder, on_invalid="skip")
    assert {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} == {"fine"}


def test_a_map_runs_an_async_step_per_item_in_order_at_no_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_uri: str
) -> None:
    source = (
        "import asyncio\n"
        "async def label(review: str) -> dict:\n"
        "    # later items finish first: the order must come from the index, not the clock\n"
        "    await asyncio.sleep(0.05 / (1 + len(review)))\n"
        "    return {'labels': review.upper(), 'sizes': len(review)}\n"
    )
    module = module_in(tmp_path, source)
    text = f"""\
schema_version: "1"
flow: {{name: mapped_steps}}
state:
  fields:
    reviews: {{type: "list[str]", required: true}}
    labels: {{type: "list[str]"}}
    sizes: {{type: "list[int]"}}
nodes:
  - id: classify
    map: {{over: reviews, as: review, max_concurrency: 3}}
    function: {module}:label
    outputs: [labels, sizes]
edges:
  - {{from: START, to: classify}}
  - {{from: classify, to: END}}
"""
    monkeypatch.chdir(tmp_path)
    reviews = ["a", "bb", "ccc", "dddd", "eeeee"]
    result = run_workflow(load_workflow(write(tmp_path, text)), {"reviews": reviews})
    assert result.state["labels"] == ["A", "BB", "CCC", "DDDD", "EEEEE"]
    assert result.state["sizes"] == [1, 2, 3, 4, 5]
    calls = result.usage.calls
    assert sorted(c.item for c in calls if c.item is not None) == [0, 1, 2, 3, 4]
    assert {(c.node, c.model, c.status) for c in calls} == {("classify", "python", "ok")}
    assert result.usage.totals()["llm_calls"] == 0
    assert result.usage.totals()["total_cost_usd"] == 0.0


MUTATING = """\
def count(reviews: list) -> dict:
    reviews.append("injected")
    return {"count": len(reviews)}


def label(review: str, seen: list) -> dict:
    seen.append(review)
    return {"labels": review.upper()}
"""


def test_a_step_that_mutates_its_inputs_changes_only_its_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_uri: str
) -> None:
    # `count` appends to the list it reads, and each item of `classify` to `seen`: neither
    # field is among their outputs, so neither may change (on the sync and async paths).
    module = module_in(tmp_path, MUTATING)
    text = f"""\
schema_version: "1"
flow: {{name: mutating}}
state:
  fields:
    reviews: {{type: "list[str]", required: true}}
    seen: {{type: "list[str]", default: []}}
    count: {{type: int}}
    labels: {{type: "list[str]"}}
nodes:
  - {{id: counted, function: "{module}:count", outputs: [count]}}
  - id: classify
    map: {{over: reviews, as: review, max_concurrency: 1}}
    function: {module}:label
    outputs: [labels]
edges:
  - {{from: START, to: counted}}
  - {{from: counted, to: classify}}
  - {{from: classify, to: END}}
config:
  observability: {{mlflow: {{enabled: false}}}}
"""
    monkeypatch.chdir(tmp_path)
    reviews = ["a", "b"]
    result = run_workflow(load_workflow(write(tmp_path, text)), {"reviews": reviews})
    assert result.state["reviews"] == ["a", "b"] == reviews
    assert result.state["seen"] == []
    assert result.state["labels"] == ["A", "B"]
    assert result.state["count"] == 3  # the step saw its own copy grow


HANGING = """\
import threading

RELEASE = threading.Event()  # the test sets it: a hung call then returns
calls = []


def fetch(product: str) -> dict:
    calls.append(product)
    if len(calls) == 1 or product == "always-hangs":
        RELEASE.wait(60)
    return {"reviews": [product], "count": len(calls)}
"""


@pytest.fixture
def hanging_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module whose step hangs on its first call (and on every call for the product
    `always-hangs`) until the test ends; its name."""
    name = module_in(tmp_path, HANGING)
    monkeypatch.chdir(tmp_path)
    yield name
    if name in sys.modules:
        sys.modules[name].RELEASE.set()


def test_a_hung_step_times_out_and_is_retried(
    tmp_path: Path, mlflow_uri: str, simulated: None, hanging_step: str
) -> None:
    text = STEP_THEN_SUMMARY.format(name="hung", function=f"{hanging_step}:fetch", level="full")
    text = text.replace(
        "outputs: [reviews, count]", "outputs: [reviews, count]\n    timeout_s: 0.3"
    )
    text = text.replace("config:\n", "config:\n  llm: {max_retries: 1}\n")
    result = run_workflow(load_workflow(write(tmp_path, text)))
    assert result.state["reviews"] == ["kettle"] and result.state["count"] == 2
    steps = [c for c in result.usage.calls if c.node == "load"]
    assert [c.status for c in steps] == ["error", "ok"]
    assert "did not return within timeout_s 0.3 s" in str(steps[0].error)


def test_a_step_hung_past_its_retries_fails_the_materialization(
    tmp_path: Path, mlflow_uri: str, simulated: None, hanging_step: str
) -> None:
    text = STEP_THEN_SUMMARY.format(name="hung", function=f"{hanging_step}:fetch", level="full")
    text = text.replace(
        "outputs: [reviews, count]", "outputs: [reviews, count]\n    timeout_s: 0.3"
    )
    text = text.replace(
        "inputs: {product: kettle}",
        "inputs: {product: always-hangs}\n  retry: {max_retries: 1, delay_s: 0}",
    )
    text = text.replace("config:\n", "config:\n  llm: {max_retries: 0}\n")
    result = dg.materialize(
        [build_workflow_asset(load_workflow(write(tmp_path, text)))],
        resources={"workflow_runner": WorkflowRunner()},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("hung")
    assert failure is not None and failure.user_failure_data is not None
    description = failure.user_failure_data.description or ""
    assert (
        f"Python step `load` of workflow hung ({hanging_step}:fetch) did not return within "
        "timeout_s 0.3 s" in description
    )
    # Transient, like a Gemini time-out: Dagster's step retry ran it once more.
    assert sys.modules[hanging_step].calls == ["always-hangs"] * 2


def test_timeout_s_is_refused_on_a_node_without_python(tmp_path: Path) -> None:
    text = STEP_THEN_SUMMARY.format(name="t", function="shop.reviews:fetch_reviews", level="full")
    text = text.replace("outputs: [digest]", "outputs: [digest]\n    timeout_s: 5")
    with pytest.raises(WorkflowConfigError) as refused:
        load_workflow(write(tmp_path, text))
    message = str(refused.value)
    assert "nodes[1].timeout_s" in message and ":16" in message
    assert "`timeout_s` limits a Python step or a tool call, and this node has neither" in message
    assert "an LLM call's limit is `llm: {timeout_s: ...}`" in message
