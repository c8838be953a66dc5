"""redact_pii: personal data a run handles reaches none of the stores, logs or exports.

A Python step loads a customer record full of personal data (email, phone, a valid card
number, IBAN, IP address, SSN, an order id of a custom pattern); the LLM node sends it to
the loopback Gemini server, which repeats it in its reply; a last step fails once with the
record in its error message, then succeeds. Both runs are materialized by Dagster into a
fresh instance, a fresh MLflow store, the record backend's cassette and the development
cache. Then every byte they left is searched: the MLflow database and artifacts (trace
data included), the Dagster storage (event log, compute logs, checkpoints, cache), the
cassette, the captured output and the stored events. The asset value alone (the IO
manager's file, the user's data) keeps the real values. (The first run records into the
cassette, the second calls Gemini through the development cache: record mode has none.)
"""

from __future__ import annotations

import base64
import json
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from cryptography.exceptions import InvalidTag
from mlflow import MlflowClient

from agents_pipelines.errors import CheckpointKeyError, WorkflowConfigError
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.redaction import masking, redact
from agents_pipelines.spec import load_workflow, load_workflow_text
from agents_pipelines.spec.models import PiiConfig, PiiPattern
from agents_pipelines.testing import GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.tracking import drain_trace_export
from conftest import LINEAR, write

PERSONAL = {
    "EMAIL_ADDRESS": "jane.doe@example.com",
    "PHONE_NUMBER": "+1 415-555-0132",
    "CREDIT_CARD": "4111 1111 1111 1111",  # passes the Luhn check
    "IBAN_CODE": "DE89 3704 0044 0532 0130 00",  # passes the mod-97 check
    "IP_ADDRESS": "192.168.12.34",
    "US_SSN": "536-22-1234",
    "ORDER_ID": "ORD-123456",
}
RECORD = ", ".join(f"{entity.lower()} {value}" for entity, value in PERSONAL.items())

STEPS = """
FAIL = {"once": False}


def load(ticket):
    return {"customer": "Customer record: " + RECORD}


def audit(customer):
    if FAIL["once"]:
        FAIL["once"] = False
        raise ValueError("cannot audit " + customer)
    return {"audited": True}
"""

WORKFLOW = """\
schema_version: "1"
flow: {{name: tickets}}
state:
  fields:
    ticket: {{type: str, required: true}}
    customer: {{type: str}}
    reply: {{type: str}}
    audited: {{type: bool}}
nodes:
  - {{id: load, function: "{module}:load", outputs: [customer]}}
  - id: answer
    prompt: "Answer ticket {{ticket}} for {{customer}}"
    outputs: [reply]
  - {{id: audit, function: "{module}:audit", outputs: [audited]}}
edges:
  - {{from: START, to: load}}
  - {{from: load, to: answer}}
  - {{from: answer, to: audit}}
  - {{from: audit, to: END}}
config:
  execution: {{cache: {{ttl_s: 3600}}}}
  observability:
    mlflow:
      artifact_level: full
      redact_pii: {{patterns: [{{name: ORDER_ID, regex: "ORD-[0-9]{{6}}"}}]}}
orchestration:
  inputs: {{ticket: T-1}}
"""


def echo(request: RecordedRequest) -> Reply:
    """A model that quotes its prompt, so the reply holds the personal data too."""
    return Reply.text_reply(f"Dear customer, about: {request.prompt_text}")


@pytest.fixture
def checkpoint_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = base64.b64encode(b"k" * 32).decode()
    monkeypatch.setenv("AGENTS_PIPELINES_CHECKPOINT_KEY", key)
    return key


def _steps_module(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Python steps, in a folder of their own: their source holds the raw values."""
    name = f"pii_steps_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(f"RECORD = {RECORD!r}\n{STEPS}", encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    __import__(name)
    return sys.modules[name]


def test_personal_data_reaches_no_store_log_or_export(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    checkpoint_key: str,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cassette = tmp_path / "cassette.jsonl"
    monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "record")
    monkeypatch.setenv("AGENTS_PIPELINES_CASSETTE", str(cassette))
    gemini.set_default(echo)
    steps = _steps_module(tmp_path_factory.mktemp("steps"), monkeypatch)
    asset = build_workflow_asset(
        load_workflow(write(tmp_path, WORKFLOW.format(module=steps.__name__)))
    )
    values = tmp_path_factory.mktemp("asset_values")  # the IO manager's: the user's data
    resources = {
        "workflow_runner": WorkflowRunner(),
        "io_manager": dg.FilesystemIOManager(base_dir=str(values)),
    }
    home = tmp_path / "dagster_home"
    home.mkdir()
    events = ""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        steps.FAIL["once"] = True  # recorded into the cassette (no cache in record mode)
        failed = dg.materialize(
            [asset], resources=resources, instance=instance, raise_on_error=False
        )
        monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "gemini")  # through the cache
        succeeded = dg.materialize([asset], resources=resources, instance=instance)
        for run in (failed, succeeded):
            events += "\n".join(dg.serialize_value(e) for e in instance.all_logs(run.run_id))
    drain_trace_export()
    output = capfd.readouterr()

    # Sent as written (before_llm is off), and kept as is in the asset value.
    assert PERSONAL["EMAIL_ADDRESS"] in gemini.requests[0].prompt_text
    assert PERSONAL["CREDIT_CARD"] in succeeded.asset_value("tickets")["reply"]
    # Masked, not dropped: the failure, the metadata, the trace and the cassette say what.
    failure = failed.failure_data_for_node("tickets")
    assert failure is not None and failure.error is not None
    assert "cannot audit Customer record: email_address <EMAIL_ADDRESS>" in failure.error.message
    (materialization,) = succeeded.asset_materializations_for_node("tickets")
    preview = str(materialization.metadata["output_preview"].value)
    assert "credit_card <CREDIT_CARD>, iban_code <IBAN_CODE>" in preview
    assert "order_id <ORDER_ID>" in cassette.read_text(encoding="utf-8")
    assert "<US_SSN>" in _trace_json("tickets") and "<PHONE_NUMBER>" in events

    stored = {p.name for p in (home / "storage").iterdir()}
    assert {"llm_cache.sqlite", "checkpoints.sqlite"} <= stored, stored
    leaks = _leaks(tmp_path, output.out + output.err + events)
    assert leaks == [], leaks
    assert _leaks(values, "") != []  # the search does find the values where they are


def _leaks(root: Path, text: str) -> list[str]:
    """Each stored file (or the text) that holds a raw value, with the values it holds."""
    found = [f"output/events: {v}" for v in PERSONAL.values() if v in text]
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if held := [v for v in PERSONAL.values() if v.encode() in data]:
            found.append(f"{path.relative_to(root)}: {held}")
    return found


def _trace_json(experiment_name: str) -> str:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name).experiment_id
    traces = mlflow.search_traces(locations=[experiment], return_type="list")
    return "\n".join(trace.to_json() for trace in traces)


def test_before_llm_masks_what_gemini_receives(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    text = LINEAR.replace("inputs: {topic: cats}", f"inputs: {{topic: {json.dumps(RECORD)}}}")
    text += "config:\n  execution: {resume: false}\n"
    text += "  observability:\n    mlflow: {redact_pii: {before_llm: true}}\n"
    asset = build_workflow_asset(load_workflow(write(tmp_path, text)))
    result = dg.materialize([asset], resources={"workflow_runner": WorkflowRunner()})
    assert result.success
    (request,) = gemini.requests
    assert "email_address <EMAIL_ADDRESS>, phone_number <PHONE_NUMBER>" in request.prompt_text
    assert "ORD-123456" in request.prompt_text  # no pattern named it
    assert PERSONAL["EMAIL_ADDRESS"] not in json.dumps(request.body)


def test_without_the_key_the_run_fails_before_any_call_naming_file_and_line(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTS_PIPELINES_CHECKPOINT_KEY", raising=False)
    text = LINEAR + "config:\n  observability:\n    mlflow:\n      redact_pii: true\n"
    path = write(tmp_path, text)
    asset = build_workflow_asset(load_workflow(path))
    result = dg.materialize(
        [asset], resources={"workflow_runner": WorkflowRunner()}, raise_on_error=False
    )
    failure = result.failure_data_for_node("linear")
    assert failure is not None and failure.error is not None
    message = failure.error.message
    assert f"{path}:19: redact_pii is on" in message
    assert "AGENTS_PIPELINES_CHECKPOINT_KEY is not set" in message and "base64" in message
    assert gemini.requests == []
    monkeypatch.setenv("AGENTS_PIPELINES_CHECKPOINT_KEY", "not a key")
    with pytest.raises(CheckpointKeyError, match="is not 16, 24 or 32 bytes in base64"):
        from agents_pipelines.graph.checkpoint_cipher import checkpoint_key

        checkpoint_key(str(path))


@pytest.mark.parametrize(
    ("pii", "problem"),
    [
        ("{entities: [EMAIL, PHONE_NUMBER]}", "`EMAIL` is not allowed here"),
        ('{patterns: [{name: ORDER_ID, regex: "ORD-[0-9"}]}', "does not compile"),
        ('{patterns: [{name: ANY, regex: "[0-9]*"}]}', "matches the empty text"),
        ('{patterns: [{name: IP_ADDRESS, regex: "x"}]}', "repeat a pattern or an entity"),
    ],
)
def test_a_bad_redact_pii_is_an_error_at_its_line(pii: str, problem: str) -> None:
    text = LINEAR + f"config:\n  observability:\n    mlflow:\n      redact_pii: {pii}\n"
    with pytest.raises(WorkflowConfigError) as caught:
        load_workflow_text(text, "wf.yaml")
    message = str(caught.value)
    assert "wf.yaml:19" in message and problem in message, message


def test_masks_only_what_passes_the_recognizers_checks() -> None:
    config = PiiConfig(patterns=[PiiPattern(name="ORDER_ID", regex="ORD-[0-9]{6}")])
    text = (
        "card 4111 1111 1111 1111, not a card 4111 1111 1111 1112, IBAN DE89 3704 0044 "
        "0532 0130 00, not an IBAN DE00 3704 0044 0532 0130 00, mail a@b.example.org, "
        "ORD-123456"
    )
    with masking(config):
        masked = redact(text)
        assert redact(text, keys_only=True) == text
    assert masked == (
        "card <CREDIT_CARD>, not a card 4111 1111 1111 1112, IBAN <IBAN_CODE>, not an IBAN "
        "DE00 3704 0044 0532 0130 00, mail <EMAIL_ADDRESS>, <ORDER_ID>"
    )
    assert redact(text) == text  # outside a run that asks for it, nothing is masked


def test_encrypted_checkpoints_load_back_and_hold_no_plaintext(tmp_path: Path) -> None:
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.sqlite import SqliteSaver

    from agents_pipelines.graph.checkpoint_cipher import encrypted

    store = tmp_path / "checkpoints.sqlite"
    with sqlite3.connect(store, check_same_thread=False) as conn:
        plain = SqliteSaver(conn)
        plain.setup()
        saver = encrypted(plain, b"k" * 32)
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"customer": RECORD}
        checkpoint["channel_versions"] = {"customer": 1}
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        saved = saver.put(config, checkpoint, {"step": 1}, {"customer": 1})
        found = saver.get_tuple(saved)
        assert found is not None and found.checkpoint["channel_values"]["customer"] == RECORD
        with pytest.raises(NotImplementedError):  # the shared saver is left as it was
            plain.get_tuple(saved)
        with pytest.raises(InvalidTag):  # a wrong key reads nothing
            encrypted(plain, b"w" * 32).get_tuple(saved)
    assert PERSONAL["EMAIL_ADDRESS"].encode() not in store.read_bytes()
