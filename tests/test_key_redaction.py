"""An API key that Gemini echoes in an error reaches nothing the runtime writes.

The real client runs against the loopback server, which repeats the key it received in a
403's message or in a 404's URL (``?key=``). The run is materialized by Dagster in-process
and by the ``dagster`` CLI in a subprocess; then every byte the run left behind is searched:
the process's stdout and stderr, the Dagster instance (event log, compute logs), the MLflow
store (its SQLite file, span rows included) and every artifact file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient

from agents_pipelines.cli import main
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.redaction import REDACTED_KEY, redact, redacting_logger
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.tracking import drain_trace_export
from conftest import LINEAR, materialize_command, write

# Shaped like a real Google API key (AIza + 35 characters), so both the configured-value
# rule and the shape rule apply; the cases below also check each rule on its own.
KEY = "AIzaSyLeakTest-0123456789_abcdefghijklm"
# Content recorded in full (prompts, state, span inputs): the most there is to leak into.
FULL = LINEAR + "config:\n  observability:\n    mlflow: {artifact_level: full}\n"
# What each fault's failure must still say, so the redaction leaves the cause readable.
FAULTS = {
    "403": (Fault.permission_denied_echoing_key(), "Gemini 403: the API key may not use"),
    "404": (Fault.not_found_echoing_key(), "Gemini 404: the model was not found"),
}


@pytest.fixture
def gemini_with_real_shaped_key(
    gemini: GeminiLoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> GeminiLoopbackServer:
    assert len(KEY) == 39
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    return gemini


@pytest.mark.parametrize("fault", FAULTS)
def test_echoed_key_in_an_in_process_materialization(
    fault: str,
    tmp_path: Path,
    mlflow_uri: str,
    gemini_with_real_shaped_key: GeminiLoopbackServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    planned, says = FAULTS[fault]
    gemini_with_real_shaped_key.plan(planned)
    home = tmp_path / "dagster_home"
    home.mkdir()
    asset = build_workflow_asset(load_workflow(write(tmp_path, FULL)))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize(
            [asset],
            resources={"workflow_runner": WorkflowRunner()},
            instance=instance,
            raise_on_error=False,
        )
        events = _serialized_events(instance, result.run_id)
    assert not result.success
    assert gemini_with_real_shaped_key.requests[0].api_key == KEY  # the server did echo it
    failure = result.failure_data_for_node("linear")
    assert failure is not None and failure.error is not None
    assert says in failure.error.message and REDACTED_KEY in failure.error.message
    output = capfd.readouterr()
    _assert_key_nowhere(tmp_path, output.out + output.err + events)
    _assert_mlflow_says_redacted(says)


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
def test_echoed_key_in_a_dagster_cli_materialization(
    fault: str,
    tmp_path: Path,
    mlflow_uri: str,
    gemini_with_real_shaped_key: GeminiLoopbackServer,
) -> None:
    planned, says = FAULTS[fault]
    gemini_with_real_shaped_key.plan(planned)
    (tmp_path / "workflows").mkdir()
    write(tmp_path / "workflows", FULL, "linear.yaml")
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AGENTS_PIPELINES_WORKFLOWS_DIR": str(tmp_path / "workflows"),
    }
    done = subprocess.run(
        materialize_command("linear"),
        env=env,
        cwd=tmp_path,  # MLflow's artifacts land under ./mlruns: here, where they are scanned
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    assert says in done.stderr and REDACTED_KEY in done.stderr
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        events = _serialized_events(instance, run.run_id)
    assert REDACTED_KEY in events
    _assert_key_nowhere(tmp_path, done.stdout + done.stderr + events)
    _assert_mlflow_says_redacted(says)


def _serialized_events(instance: dg.DagsterInstance, run_id: str) -> str:
    """Every event of the run as stored, failures with their whole error chain."""
    return "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(run_id))


def _assert_key_nowhere(root: Path, output: str) -> None:
    assert KEY not in output
    drain_trace_export()
    leaks = [
        path for path in root.rglob("*") if path.is_file() and KEY.encode() in path.read_bytes()
    ]
    assert leaks == []


def _assert_mlflow_says_redacted(says: str) -> None:
    """The redaction is where the error is: in cost_summary.json and in the trace."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name("linear").experiment_id
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FAILED"
    summary = json.loads(
        Path(client.download_artifacts(run.info.run_id, "cost_summary.json")).read_text()
    )
    assert says in summary["error"] and REDACTED_KEY in summary["error"]
    assert REDACTED_KEY in summary["calls"][0]["error"]
    (trace,) = mlflow.search_traces(
        locations=[experiment], run_id=run.info.run_id, return_type="list"
    )
    assert REDACTED_KEY in trace.to_json() and KEY not in trace.to_json()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"API key {KEY} is not allowed", f"API key {REDACTED_KEY} is not allowed"),
        ("GET /v1/models?alt=sse&key=secret-ish", f"GET /v1/models?alt=sse&key={REDACTED_KEY}"),
        ("x-goog-api-key: abc123", f"x-goog-api-key: {REDACTED_KEY}"),
        ("{'x-goog-api-key': 'abc123'}", f"{{'x-goog-api-key': '{REDACTED_KEY}'}}"),
        ("AIza" + "B" * 35 + " is shaped like a key", f"{REDACTED_KEY} is shaped like a key"),
        ("monkey=1&keys=2", "monkey=1&keys=2"),
    ],
    ids=["configured", "url-parameter", "header", "header-repr", "shape", "not-a-key"],
)
def test_redact_finds_each_kind_of_key(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_finds_the_configured_key_whatever_its_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "plain-configured-secret")
    assert redact("refused: plain-configured-secret") == f"refused: {REDACTED_KEY}"


def test_our_loggers_redact_the_message_and_the_traceback(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", "plain-configured-secret")
    logger = redacting_logger("agents_pipelines.runner")
    try:
        raise ValueError("refused: plain-configured-secret")
    except ValueError:
        logger.exception("call to %s failed", f"/v1/models/m?key={KEY}")
    assert "plain-configured-secret" not in caplog.text and KEY not in caplog.text
    assert f"?key={REDACTED_KEY} failed" in caplog.text
    assert f"ValueError: refused: {REDACTED_KEY}" in caplog.text


LEAKY_MODULE = '''
import os


def lookup_order(order_id: str) -> dict:
    """Look an order up."""
    raise PermissionError(f"orders API refused key {os.environ['GOOGLE_API_KEY']}")


def sign(reply: str) -> dict:
    return {"signed": f"{reply} (sent with {os.environ['GOOGLE_API_KEY']})"}
'''

TOOL_THEN_STEP = """\
schema_version: "1"
flow: {{name: leaky}}
state:
  fields:
    ticket: {{type: str, required: true}}
    reply: {{type: str}}
    signed: {{type: str}}
nodes:
  - id: answer
    prompt: "Answer: {{ticket}}"
    tools: [{module}:lookup_order]
    outputs: [reply]
  - {{id: sign, function: "{module}:sign", outputs: [signed]}}
edges:
  - {{from: START, to: answer}}
  - {{from: answer, to: sign}}
  - {{from: sign, to: END}}
config:
  execution: {{cache: {{ttl_s: 3600}}}}
  observability:
    mlflow: {{artifact_level: full}}
orchestration:
  inputs: {{ticket: "Where is order A1?"}}
"""


def repeat_the_tool_error(request: RecordedRequest) -> Reply:
    """Call the tool once, then answer with what it said: a model repeating a tool's error."""
    if not request.function_responses:
        return Reply.function_call_reply("lookup_order", {"order_id": "A1"})
    return Reply.text_reply(f"Sorry: {request.function_responses[0]['response']}")


def test_a_key_in_a_tool_error_or_a_step_output_is_stored_nowhere(
    tmp_path: Path,
    mlflow_uri: str,
    gemini_with_real_shaped_key: GeminiLoopbackServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    module = f"leaky_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(LEAKY_MODULE, encoding="utf-8")
    gemini_with_real_shaped_key.set_default(repeat_the_tool_error)
    path = write(tmp_path, TOOL_THEN_STEP.format(module=module))
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize(
            [build_workflow_asset(load_workflow(path))],
            resources={"workflow_runner": WorkflowRunner()},
            instance=instance,
        )
        events = _serialized_events(instance, result.run_id)
    value = result.asset_value("leaky")
    assert value["reply"].startswith("Sorry: ") and REDACTED_KEY in value["reply"]
    assert value["signed"].endswith(f"(sent with {REDACTED_KEY})")
    (response,) = gemini_with_real_shaped_key.requests[1].function_responses
    assert f"PermissionError: orders API refused key {REDACTED_KEY}" in str(response)
    stored = {p.name for p in (home / "storage").iterdir()}
    assert {"llm_cache.sqlite", "checkpoints.sqlite"} <= stored, stored

    assert main(["run", str(path), "--verbose"]) == 0  # prints the final state
    output = capsys.readouterr()
    assert f"(sent with {REDACTED_KEY})" in output.out
    _assert_key_nowhere(tmp_path, output.out + output.err + events + repr(value))


def test_a_reply_that_repeats_the_key_is_cached_and_checkpointed_redacted(
    tmp_path: Path, mlflow_uri: str, gemini_with_real_shaped_key: GeminiLoopbackServer
) -> None:
    gemini_with_real_shaped_key.set_default(lambda _: Reply.text_reply(f"Your key is {KEY}."))
    text = LINEAR + "config:\n  execution: {cache: {ttl_s: 3600}}\n"
    home = tmp_path / "dagster_home"
    home.mkdir()
    asset = build_workflow_asset(load_workflow(write(tmp_path, text)))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for _ in range(2):  # the second run is answered from the cache
            result = dg.materialize(
                [asset], resources={"workflow_runner": WorkflowRunner()}, instance=instance
            )
            assert result.asset_value("linear")["summary"] == f"Your key is {REDACTED_KEY}."
    assert len(gemini_with_real_shaped_key.requests) == 1
    _assert_key_nowhere(tmp_path, "")
