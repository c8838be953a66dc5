"""Record and replay: the real Gemini client records against the loopback server, then replays
with the server stopped and no key, through the same ChatGoogleGenerativeAI code path."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow import MlflowClient

from agents_pipelines.errors import CassetteError, UnrecordedRequestError
from agents_pipelines.llm import check_backend
from agents_pipelines.llm.cassette import Cassette, fingerprint
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import GeminiLoopbackServer, RecordedRequest, Reply, Usage
from conftest import (
    AGREED_FIGURES,
    FAKE_KEY,
    assert_usage_agrees,
    metadata_of,
    workflow_yaml,
    write,
)

AGENTS_PIPELINES = Path(sys.executable).parent / "agents-pipelines"

# A JSON-mode node, then a node that calls a tool (shop/orders.py) before it answers.
TRIAGE = """\
schema_version: "1"
flow: {name: triage}
state:
  fields:
    ticket: {type: str, required: true}
    category: {type: str, default: ""}
    urgency: {type: int, default: 0}
    reply: {type: str, default: ""}
nodes:
  - id: classify
    prompt: "Classify this ticket and rate its urgency:\\n{ticket}"
    outputs: [category, urgency]
  - id: answer
    system: "You are a support agent. Be brief."
    prompt: "Answer this {category} ticket:\\n{ticket}"
    tools: [shop.orders:lookup_order]
    outputs: [reply]
edges:
  - {from: START, to: classify}
  - {from: classify, to: answer}
  - {from: answer, to: END}
orchestration:
  inputs: {ticket: "Where is my order A1001?"}
"""


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader puts the working directory (each test's own) on sys.path: undo it."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def triage_replies(request: RecordedRequest) -> Reply:
    """Distinct usage per call, so that equal figures in replay come from the cassette."""
    if request.wants_json:
        return Reply.json_reply({"category": "shipping", "urgency": 3}, usage=Usage(310, 41, 7, 0))
    if not request.function_responses:
        return Reply.function_call_reply(
            "lookup_order", {"order_id": "A1001"}, usage=Usage(502, 23, 0, 100)
        )
    return Reply.text_reply("It was delivered on 3 November.", usage=Usage(655, 37, 12, 0))


def use(monkeypatch: pytest.MonkeyPatch, backend: str, cassette: Path) -> None:
    monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", backend)
    monkeypatch.setenv("AGENTS_PIPELINES_CASSETTE", str(cassette))


def go_offline(monkeypatch: pytest.MonkeyPatch, server: GeminiLoopbackServer) -> None:
    """The server stopped and no key: nothing could answer but the cassette. The base URL
    changes too: fingerprints do not depend on it."""
    server.stop()
    monkeypatch.delenv("GOOGLE_API_KEY")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9/elsewhere/")


def materialize(path: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_workflow_asset(load_workflow(path))],
        resources={"workflow_runner": WorkflowRunner()},
    )


def cost_summary(run_id: str) -> dict[str, Any]:
    path = MlflowClient().download_artifacts(run_id, "cost_summary.json")
    return dict(json.loads(Path(path).read_text(encoding="utf-8")))


def test_a_recorded_materialization_replays_offline_with_equal_outputs_tokens_and_cost(
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    gemini.set_default(triage_replies)
    cassette = tmp_path / "cassettes" / "triage.jsonl"
    workflow = write(tmp_path, TRIAGE)
    use(monkeypatch, "record", cassette)
    recorded = materialize(workflow)
    recorded_meta = metadata_of(recorded, "triage")
    assert recorded_meta["llm_backend"] == "record"
    assert len(gemini.requests) == 3

    # One line per exchange, each with the node, the request and the answer's usage; never
    # the key, a header or a URL (and the logs of the recording run hold no key either).
    text = cassette.read_text(encoding="utf-8")
    assert FAKE_KEY not in text and FAKE_KEY not in caplog.text
    assert "x-goog-api-key" not in text.lower() and "key=" not in text and "127.0.0.1" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(e["node"], e["request"]["endpoint"]) for e in lines] == [
        ("classify", "models/gemini-2.5-flash:generateContent"),
        ("answer", "models/gemini-2.5-flash:generateContent"),
        ("answer", "models/gemini-2.5-flash:generateContent"),
    ]
    assert [e["response"]["body"]["usageMetadata"]["totalTokenCount"] for e in lines] == [
        358,
        525,
        704,
    ]
    classify, first_answer, _ = lines
    assert classify["request"]["body"]["generationConfig"]["responseMimeType"] == (
        "application/json"
    )
    assert "responseJsonSchema" in classify["request"]["body"]["generationConfig"]
    declared = first_answer["request"]["body"]["tools"][0]["functionDeclarations"]
    assert [tool["name"] for tool in declared] == ["lookup_order"]
    assert first_answer["request"]["body"]["systemInstruction"]["parts"][0]["text"] == (
        "You are a support agent. Be brief."
    )
    assert [e["fingerprint"] for e in lines] == [fingerprint(e["request"]) for e in lines]

    go_offline(monkeypatch, gemini)
    use(monkeypatch, "replay", cassette)
    replayed = materialize(workflow)
    replayed_meta = metadata_of(replayed, "triage")
    assert replayed.asset_value("triage") == recorded.asset_value("triage")
    assert replayed.asset_value("triage")["reply"] == "It was delivered on 3 November."
    assert replayed_meta["llm_backend"] == "replay"
    figures = {key: recorded_meta[key] for key in AGREED_FIGURES}
    assert figures == {key: replayed_meta[key] for key in AGREED_FIGURES}
    assert figures["total_tokens"] == 358 + 525 + 704 and figures["llm_calls"] == 3
    assert figures["total_cost_usd"] > 0
    for meta in (recorded_meta, replayed_meta):
        assert_usage_agrees(meta, meta["mlflow_run_id"])
    totals = [cost_summary(m["mlflow_run_id"])["totals"] for m in (recorded_meta, replayed_meta)]
    assert totals[0] == totals[1]
    assert cassette.read_text(encoding="utf-8") == text  # replay never writes


def test_an_unrecorded_request_fails_naming_node_fingerprint_and_difference(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = [("outline", "Outline {topic}.", "plan"), ("write", "Write about {topic}.", "text")]
    cassette = tmp_path / "linear.jsonl"
    use(monkeypatch, "record", cassette)
    run_workflow(load_workflow(write(tmp_path, workflow_yaml("linear", *nodes))))

    go_offline(monkeypatch, gemini)
    use(monkeypatch, "replay", cassette)
    changed = [nodes[0], ("write", "Write a poem about {topic}.", "text")]
    workflow = load_workflow(write(tmp_path, workflow_yaml("linear", *changed), "changed.yaml"))
    with pytest.raises(UnrecordedRequestError) as raised:
        run_workflow(workflow)
    message = str(raised.value)
    assert message.startswith(
        f"Replay: node `write` sent a Gemini request that cassette {cassette} has not recorded "
        "(fingerprint sha256:"
    )
    assert (
        "The nearest recorded request (line 2, from node `write`) differs at 1 place(s): "
        'body.contents[0].parts[0].text: recorded "Write about cats.", now '
        '"Write a poem about cats."'
    ) in message, message
    # Not transient: tried once, never retried by the node's RetryPolicy, never sent on.
    error = raised.value
    assert not error.transient
    assert error.usage is not None
    assert [(c.node, c.status) for c in error.usage.calls] == [
        ("outline", "ok"),
        ("write", "error"),
    ]
    assert error.usage.calls[0].usage.total == 205  # the replayed first call, as recorded


def test_repeated_requests_replay_their_recordings_in_order_then_the_last(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The development cache is on in the workflow, and off under record and replay: each
    call reaches the cassette, and a replayed call bills what was recorded."""
    text = workflow_yaml(
        "again",
        ("say", "Say something about {topic}.", "said"),
        config="execution:\n  cache: {ttl_s: 3600}",
    )
    workflow = load_workflow(write(tmp_path, text))
    gemini.plan(Reply.text_reply("first"), Reply.text_reply("second"))
    cassette = tmp_path / "again.jsonl"
    use(monkeypatch, "record", cassette)
    assert [run_workflow(workflow).state["said"] for _ in range(2)] == ["first", "second"]
    go_offline(monkeypatch, gemini)
    use(monkeypatch, "replay", cassette)
    runs = [run_workflow(workflow) for _ in range(3)]
    assert [run.state["said"] for run in runs] == ["first", "second", "second"]
    assert [(run.usage.cache_hits, run.usage.tokens.total) for run in runs] == [(0, 205)] * 3


MAP_WORKFLOW = """\
schema_version: "1"
flow: {name: labels}
state:
  fields:
    reviews: {type: "list[str]", required: true}
    labels: {type: "list[str]", default: []}
nodes:
  - id: label
    map: {over: reviews, as: review, max_concurrency: 8}
    prompt: "Label this review: {review}"
    outputs: [labels]
edges:
  - {from: START, to: label}
  - {from: label, to: END}
"""


@pytest.mark.slow
@pytest.mark.xdist_group("concurrency")
def test_processes_and_threads_recording_into_one_cassette_write_whole_lines(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process and this one record at once, each with eight map items in flight:
    32 whole lines (of 10 kB each), every one replayable. The server holds its answers until
    both processes are calling, so that the appends overlap. The other process has a hash
    seed of its own: fingerprints are sha256 of canonical JSON."""
    both_calling = threading.Event()

    def label(request: RecordedRequest) -> Reply:
        if gemini.max_in_flight > 8:
            both_calling.set()
        both_calling.wait(timeout=60)
        return Reply.text_reply("label " + request.prompt_text.split()[5])

    gemini.set_default(label)
    path = write(tmp_path, MAP_WORKFLOW)
    cassette = tmp_path / "shared.jsonl"
    use(monkeypatch, "record", cassette)
    reviews = [f"review number {i} " + "x" * 5000 for i in range(16)]
    other = subprocess.Popen(
        [str(AGENTS_PIPELINES), "run", str(path), "--input", f"reviews={json.dumps(reviews)}"],
        env={**_environ(), "PYTHONHASHSEED": "12345"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    recorded = run_workflow(load_workflow(path), {"reviews": reviews})
    out, _ = other.communicate(timeout=180)
    assert other.returncode == 0, out
    assert both_calling.is_set()

    loaded = Cassette.load(cassette)  # every line parses
    assert len(loaded.exchanges) == 32
    assert len({exchange.fingerprint for exchange in loaded.exchanges}) == 16
    assert sorted(e.item for e in loaded.exchanges if e.item is not None) == sorted(
        [*range(16), *range(16)]
    )
    go_offline(monkeypatch, gemini)
    use(monkeypatch, "replay", cassette)
    result = run_workflow(load_workflow(path), {"reviews": reviews})
    assert result.state["labels"] == [f"label {i}" for i in range(16)] == recorded.state["labels"]


def test_an_unrecorded_map_item_fails_the_run_even_where_items_may_be_skipped(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skipping = MAP_WORKFLOW.replace(
        "max_concurrency: 8}", "max_concurrency: 8, on_item_error: skip}"
    )
    workflow = load_workflow(write(tmp_path, skipping))
    cassette = tmp_path / "items.jsonl"
    use(monkeypatch, "record", cassette)
    run_workflow(workflow, {"reviews": ["good", "bad"]})
    go_offline(monkeypatch, gemini)
    use(monkeypatch, "replay", cassette)
    assert run_workflow(workflow, {"reviews": ["bad", "good"]}).state["labels"][0].endswith("bad")
    with pytest.raises(UnrecordedRequestError, match=r"^Replay: node `label` \(item 2\) sent"):
        run_workflow(workflow, {"reviews": ["good", "bad", "fine"]})


def test_check_backend_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "replay")
    with pytest.raises(CassetteError, match="AGENTS_PIPELINES_LLM_BACKEND=replay needs a cassette"):
        check_backend()
    missing = tmp_path / "none.jsonl"
    monkeypatch.setenv("AGENTS_PIPELINES_CASSETTE", str(missing))
    with pytest.raises(CassetteError, match=f"Cassette {missing} does not exist. Record it"):
        check_backend()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"request": {}, "response": {}}\n{"request": \n', encoding="utf-8")
    monkeypatch.setenv("AGENTS_PIPELINES_CASSETTE", str(broken))
    with pytest.raises(CassetteError, match=f"{broken}:2: not a JSON line"):
        check_backend()
    broken.write_text('{"request": {}}\n', encoding="utf-8")
    with pytest.raises(CassetteError, match=f"{broken}:1: an exchange needs a `request` and"):
        check_backend()
    broken.write_text('{"request": {}, "response": {}}\n', encoding="utf-8")
    assert check_backend().value == "replay"  # no key needed
    monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "record")
    with pytest.raises(Exception, match="No Gemini API key: set GOOGLE_API_KEY"):
        check_backend()


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
