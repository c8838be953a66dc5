"""Attacks that hold, kept held: hostile text in inputs, huge graphs, files edited under a
running code location. (Hostile files are in test_malformed_catalogue.py, hostile inbox
files in test_orchestration.py.)"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import dagster as dg
import pytest
from mlflow import MlflowClient

from agents_pipelines.errors import WorkflowConfigError
from agents_pipelines.orchestration import WorkflowRunner, build_definitions, build_workflow_asset
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import GeminiLoopbackServer, Reply
from conftest import LINEAR, metadata_of, write

# NUL, an emoji (outside the BMP), Hebrew and Arabic with an RTL override, and text that a
# str.format, a Jinja template or an attribute lookup would each change if applied to inputs.
HOSTILE = "nul\x00 emoji 🦦👩‍💻 rtl \u202eשלום عالم\u202c {other} {{ 7*7 }} {__class__} {topic} {0}"
FIVE_MB = 5_000_000


def test_hostile_text_stays_literal_and_agrees_everywhere(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    topic = (HOSTILE * (FIVE_MB // len(HOSTILE) + 1))[:FIVE_MB]
    gemini.plan(Reply.text_reply(HOSTILE))
    # A 5 MB input is over the default state value limit (1,000,000 characters): raised.
    roomy = LINEAR + "config:\n  execution: {max_state_value_chars: 6000000}\n"
    workflow = load_workflow(write(tmp_path, roomy))
    result = dg.materialize(
        [build_workflow_asset(workflow)],
        resources={"workflow_runner": WorkflowRunner()},
        run_config={"ops": {"linear": {"config": {"topic": topic}}}},
        raise_on_error=False,
    )
    assert result.success
    # Gemini got the text as it was: no placeholder inside an input was filled in.
    (request,) = gemini.requests
    assert request.prompt_text == f"Summarize {topic}."
    state = result.asset_value("linear")
    assert state == {"topic": topic, "summary": HOSTILE}
    # Dagster metadata, MLflow metrics and cost_summary.json tell one story.
    meta = metadata_of(result, "linear")
    client = MlflowClient()
    run = client.get_run(meta["mlflow_run_id"])
    figures = ("total_tokens", "prompt_tokens", "completion_tokens", "total_cost_usd", "llm_calls")
    assert {k: run.data.metrics[k] for k in figures} == {k: meta[k] for k in figures}
    summary = json.loads(
        Path(client.download_artifacts(run.info.run_id, "cost_summary.json")).read_text()
    )
    assert summary["status"] == "succeeded"
    assert summary["totals"]["total_cost_usd"] == meta["total_cost_usd"] > 0
    assert summary["totals"]["total_tokens"] == meta["total_tokens"] > 0


def test_a_2000_node_workflow_loads_and_builds(tmp_path: Path) -> None:
    nodes = "".join(
        f"  - {{id: n{i}, prompt: 'Step {i} on {{topic}}.', outputs: [summary]}}\n"
        for i in range(2000)
    )
    chain = ["START", *(f"n{i}" for i in range(2000)), "END"]
    edges = "".join(f"  - {{from: {a}, to: {b}}}\n" for a, b in pairwise(chain))
    text = LINEAR.split("nodes:\n")[0] + "nodes:\n" + nodes + "edges:\n" + edges
    text += "orchestration:\n  inputs: {topic: cats}\n"
    workflow = load_workflow(write(tmp_path, text))
    assert len(workflow.spec.nodes) == 2000
    assert build_workflow_asset(workflow).key == dg.AssetKey("linear")


def test_a_file_edited_after_loading_runs_as_loaded(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    """The code location holds the validated text; an edit is seen at the next load."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    path = write(folder, LINEAR)
    loaded = load_workflow(path)
    defs = build_definitions(folder)
    path.write_text(LINEAR.replace("nodes:", "nodes: [oops"), encoding="utf-8")
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(raise_on_error=False)
    assert result.success
    run = MlflowClient().get_run(metadata_of(result, "linear")["mlflow_run_id"])
    assert run.data.params["workflow_sha256"] == loaded.sha256
    with pytest.raises(WorkflowConfigError, match=r"wf\.yaml:\d+:\d+: YAML syntax error"):
        build_definitions(folder)
