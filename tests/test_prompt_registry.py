"""Prompts kept in the MLflow prompt registry: `prompt: {registry: URI}`.

Real parts: a brand-new MLflow SQLite store per test (the registry is the tracking store),
Dagster's in-process materialization and re-execution, the Gemini client against the
loopback server, whose request log shows which version's text was sent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from mlflow import MlflowClient

from agents_pipelines.cli import main
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.registry import ProcessRegistry
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.testing.gemini_server import default_reply
from agents_pipelines.tracking import drain_trace_export
from conftest import metadata_of, metadata_values, write
from reexecutable_job import WORKFLOWS_ENV, workflows_job

V1 = "Summarize {{topic}} in one line (v1)."
V2 = "Summarize {{ topic }} in two lines (v2)."

SUPPORT = """\
schema_version: "1"
flow: {name: support}
state:
  fields:
    topic: {type: str, required: true}
    outline: {type: str}
    summary: {type: str}
nodes:
  - id: outline
    prompt: "Outline {topic}."
    outputs: [outline]
  - id: summarize
    prompt: {registry: "prompts:/support_summary@production"}
    outputs: [summary]
edges:
  - {from: START, to: outline}
  - {from: outline, to: summarize}
  - {from: summarize, to: END}
config:
  llm: {max_retries: 0}
orchestration:
  inputs: {topic: cats}
  retry: {max_retries: 0}
"""


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def register(template: str, alias: str | None = "production") -> int:
    client = MlflowClient()
    version = int(client.register_prompt("support_summary", template).version)
    if alias is not None:
        client.set_prompt_alias("support_summary", alias, version)
    return version


def sent(gemini: GeminiLoopbackServer) -> Counter[str]:
    """How many requests carried each version's text (or neither: `other`)."""
    return Counter(
        "v1" if "(v1)" in r.prompt_text else "v2" if "(v2)" in r.prompt_text else "other"
        for r in gemini.requests
    )


def fail_v1_once(gemini: GeminiLoopbackServer) -> None:
    failed: list[str] = []

    def answer(request: RecordedRequest) -> Reply | Fault:
        if "(v1)" in request.prompt_text and not failed:
            failed.append(request.prompt_text)
            return Fault.server_error(500, "backend unavailable")
        return default_reply(request)

    gemini.set_default(answer)


def versions(event_metadata: dict[str, object]) -> list[tuple[str, str, int]]:
    table = event_metadata["prompt_versions"]
    return [(r.data["node"], r.data["prompt"], r.data["version"]) for r in table.records]  # type: ignore[attr-defined]


def test_an_alias_move_reaches_new_runs_but_not_the_resume_of_an_earlier_one(
    tmp_path: Path,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register(V1)
    folder = tmp_path / "workflows"
    folder.mkdir()
    write(folder, SUPPORT, "support.yaml")
    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    job = dg.reconstructable(workflows_job)
    fail_v1_once(gemini)
    with dg.execute_job(job, instance, raise_on_error=False) as first:
        assert not first.success
    assert sent(gemini) == {"other": 1, "v1": 1}

    assert register(V2) == 2  # the alias moves while the failed run waits
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    with dg.execute_job(job, instance, reexecution_options=options) as resumed:
        assert resumed.success
        (event,) = resumed.asset_materializations_for_node("support")
        resumed_meta = metadata_values(event.metadata)
    assert sent(gemini) == {"other": 1, "v1": 2}  # the resume ran v1 again, and only it
    assert versions(resumed_meta) == [("summarize", "support_summary", 1)]
    assert [r.data["node"] for r in resumed_meta["resumed"].records] == ["outline"]

    with dg.execute_job(job, instance) as fresh:
        (event,) = fresh.asset_materializations_for_node("support")
        fresh_meta = metadata_values(event.metadata)
    assert sent(gemini) == {"other": 2, "v1": 2, "v2": 1}
    assert versions(fresh_meta) == [("summarize", "support_summary", 2)]
    summary = next(r for r in gemini.requests if "(v2)" in r.prompt_text).prompt_text
    assert summary.startswith("Summarize cats in two lines (v2).")


def test_the_run_and_its_trace_are_linked_to_the_version_used(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    register(V1)
    result = dg.materialize(
        [build_workflow_asset(load_workflow(write(tmp_path, SUPPORT)))],
        resources={"workflow_runner": WorkflowRunner()},
        instance=instance,
    )
    meta = metadata_of(result, "support")
    assert versions(meta) == [("summarize", "support_summary", 1)]
    assert [r.prompt_text for r in gemini.requests][1].startswith("Summarize cats in one line")
    drain_trace_export()
    client = MlflowClient()
    linked = json.loads(client.get_run(meta["mlflow_run_id"]).data.tags["mlflow.linkedPrompts"])
    assert linked == [{"name": "support_summary", "version": "1"}]
    trace = client.get_trace(meta["mlflow_trace_id"])
    assert json.loads(trace.info.tags["mlflow.linkedPrompts"]) == linked


def test_validate_names_the_line_of_a_missing_prompt_and_of_a_stray_variable(
    tmp_path: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, SUPPORT)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert (
        f"{path}:13:14: nodes[1].prompt.registry: prompt prompts:/support_summary@production "
        "is not in the MLflow prompt registry" in out
    )
    assert "agents-pipelines prompts push" in out  # the fix

    register("Summarize {{topic}} for {{audience}}.")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert (
        f"{path}:13:14: nodes[1].prompt.registry: prompt prompts:/support_summary@production "
        "uses the variable {{audience}}, which names no state field" in out
    )

    register(V1)
    assert main(["validate", str(path)]) == 0


def test_the_code_location_fails_on_a_missing_prompt(tmp_path: Path, mlflow_uri: str) -> None:
    from agents_pipelines.errors import WorkflowConfigError
    from agents_pipelines.orchestration import build_definitions

    folder = tmp_path / "workflows"
    folder.mkdir()
    path = write(folder, SUPPORT.replace("@production", "/3"), "support.yaml")
    with pytest.raises(WorkflowConfigError, match=rf"{path}:13:14: nodes\[1\]\.prompt\.registry"):
        build_definitions(folder)


JUDGED = SUPPORT.replace(
    '    prompt: {registry: "prompts:/support_summary@production"}',
    '    prompt: "Summarize {outline} about {topic}: {{\\"json\\": true}}"',
) + ('evals:\n  - {name: faithful, judge: "Is {summary} faithful to {outline}?"}\n')


def test_prompts_push_registers_inline_prompts_and_prints_yaml_that_runs(
    tmp_path: Path,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    instance: dg.DagsterInstance,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = write(tmp_path, JUDGED, "inline.yaml")
    assert main(["prompts", "push", str(source), "--alias", "production"]) == 0
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)
    assert [node["prompt"] for node in data["nodes"]] == [
        {"registry": "prompts:/support.outline@production"},
        {"registry": "prompts:/support.summarize@production"},
    ]
    assert data["evals"][0]["judge"] == {"registry": "prompts:/support.eval.faithful@production"}
    template = MlflowClient().load_prompt("prompts:/support.summarize/1").template
    assert template == 'Summarize {{outline}} about {{topic}}: {"json": true}'

    pushed = write(tmp_path, printed, "pushed.yaml")
    assert main(["validate", str(pushed)]) == 0
    result = dg.materialize(
        [build_workflow_asset(load_workflow(pushed))],
        resources={"workflow_runner": WorkflowRunner()},
        instance=instance,
    )
    meta = metadata_of(result, "support")
    assert versions(meta) == [
        ("outline", "support.outline", 1),
        ("summarize", "support.summarize", 1),
        ("faithful", "support.eval.faithful", 1),
    ]
    texts = [r.prompt_text for r in gemini.requests]
    assert texts[0] == "Outline cats."
    assert texts[1].startswith(
        'Summarize Loopback reply to: Outline cats. about cats: {"json": true}'
    )
    assert any("faithful to" in text for text in texts[2:])  # the judge's question ran


def test_the_development_cache_keys_by_the_version(
    tmp_path: Path,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    instance: dg.DagsterInstance,
    fresh_registry: ProcessRegistry,
) -> None:
    """Two versions of the same text are two cache entries: a new version is called anew.
    The runs of one version share one compiled graph."""
    register(V1)
    register(V1, alias=None)  # version 2, the same text
    text = SUPPORT.replace(
        "llm: {max_retries: 0}", "llm: {max_retries: 0}\n  execution: {cache: {ttl_s: 3600}}"
    )
    asset = build_workflow_asset(load_workflow(write(tmp_path, text)))

    def run() -> dict[str, object]:
        result = dg.materialize(
            [asset], resources={"workflow_runner": WorkflowRunner()}, instance=instance
        )
        return metadata_of(result, "support")

    assert run()["llm_calls"] == 2 and len(gemini.requests) == 2
    MlflowClient().set_prompt_alias("support_summary", "production", 2)
    moved = run()
    assert (moved["cache_hits"], len(gemini.requests)) == (1, 3)  # the outline only
    assert versions(moved) == [("summarize", "support_summary", 2)]
    assert (run()["cache_hits"], len(gemini.requests)) == (2, 3)
    assert len(fresh_registry.compiled_graphs) == 2  # one per version, not one per run


def test_a_cassette_replays_a_registry_prompt_at_the_version_it_recorded(
    tmp_path: Path,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recorded at v1, a replay at v2 of the same text is a miss that names the version."""
    register(V1)
    register(V1, alias=None)  # version 2, the same text
    cassette = tmp_path / "support.jsonl"
    monkeypatch.setenv("AGENTS_PIPELINES_CASSETTE", str(cassette))
    asset = build_workflow_asset(load_workflow(write(tmp_path, SUPPORT)))

    def run(backend: str) -> dg.ExecuteInProcessResult:
        monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", backend)
        return dg.materialize(
            [asset],
            resources={"workflow_runner": WorkflowRunner()},
            instance=instance,
            raise_on_error=False,
        )

    assert run("record").success
    lines = [json.loads(line) for line in cassette.read_text(encoding="utf-8").splitlines()]
    assert [e["request"].get("prompt_version") for e in lines] == [
        None,
        "prompts:/support_summary/1",
    ]
    assert run("replay").success
    MlflowClient().set_prompt_alias("support_summary", "production", 2)
    replayed = run("replay")
    assert not replayed.success
    (failure,) = [e for e in replayed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "prompt_version" in str(failure.step_failure_data.error)
    assert len(gemini.requests) == 2  # replays never reached the server


def test_a_reference_that_is_no_prompt_uri_is_named_with_its_fix() -> None:
    from agents_pipelines.errors import WorkflowConfigError
    from agents_pipelines.spec import load_workflow_text

    text = SUPPORT.replace("prompts:/support_summary@production", "support_summary")
    with pytest.raises(WorkflowConfigError) as caught:
        load_workflow_text(text, "support.yaml")
    assert str(caught.value.issues[0]) == (
        "support.yaml:13:14: nodes[1].prompt.registry: `support_summary` is not a prompt URI "
        'of the MLflow prompt registry. Fix: write "prompts:/NAME@ALIAS" (e.g. @production) '
        'or "prompts:/NAME/VERSION"'
    )
