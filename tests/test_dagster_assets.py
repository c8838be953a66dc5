"""Workflows as Dagster assets: definitions, Launchpad config, IO manager, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pydantic
import pytest

from agents_pipelines.errors import AgentsPipelinesError, WorkflowConfigError
from agents_pipelines.llm import Backend
from agents_pipelines.orchestration import WorkflowRunner, build_definitions, build_workflow_asset
from agents_pipelines.spec import load_workflow
from conftest import (
    EXAMPLES,
    LINEAR,
    dagster_materialize,
    metadata_of,
    metadata_values,
    write,
)

RUNNER = {"workflow_runner": WorkflowRunner()}


def test_each_file_becomes_one_asset_with_spec_and_definition_metadata() -> None:
    defs = build_definitions(EXAMPLES)
    graph = defs.resolve_asset_graph()
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        load_workflow(path).name for path in files
    }
    spec = defs.resolve_assets_def("article_writer").specs_by_key[dg.AssetKey("article_writer")]
    assert spec.group_name == "content"
    assert spec.description == "Research a topic and write a short article."
    assert spec.kinds == {"langgraph", "gemini", "mlflow"}
    assert spec.code_version == load_workflow(EXAMPLES / "article_writer.yaml").sha256[:16]
    meta = spec.metadata
    mermaid = meta["graph"].value
    assert mermaid.startswith("```mermaid\nflowchart TD")
    assert "  research --> write\n  outline --> write\n" in mermaid
    assert '  review -.->|"approved equals True"| END\n  review -.->|"otherwise"| write' in mermaid
    assert [n["id"] for n in meta["nodes"].value] == ["research", "outline", "write", "review"]
    assert meta["models"].value == ["gemini-2.5-flash", "gemini-2.5-pro"]
    (reference,) = meta["dagster/code_references"].code_references
    assert reference.file_path == str((EXAMPLES / "article_writer.yaml").resolve())


@pytest.mark.parametrize(
    ("setting", "expected"), [(None, "in_process"), ("multiprocess", "multiprocess")]
)
def test_runs_execute_in_process_unless_the_environment_asks_for_subprocesses(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, expected: str
) -> None:
    if setting is not None:
        monkeypatch.setenv("AGENTS_PIPELINES_EXECUTOR", setting)
    defs = build_definitions(EXAMPLES)
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == expected


def test_a_code_location_can_choose_its_own_executor() -> None:
    defs = build_definitions(EXAMPLES, executor=dg.multi_or_in_process_executor)
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == "multi_or_in_process_executor"


def test_an_unknown_executor_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTS_PIPELINES_EXECUTOR", "dask")
    with pytest.raises(AgentsPipelinesError, match="AGENTS_PIPELINES_EXECUTOR='dask'"):
        build_definitions(EXAMPLES)


def test_launchpad_config_is_typed_with_yaml_defaults() -> None:
    asset = build_workflow_asset(load_workflow(EXAMPLES / "article_writer.yaml"))
    fields = asset.op.config_schema.config_type.fields
    assert list(fields) == ["topic"]
    assert fields["topic"].default_value == "Dagster"
    assert fields["topic"].config_type.given_name == "String"
    assert fields["topic"].description == "What to write about"


def test_materialize_with_launchpad_inputs_and_downstream_load(
    mlflow_uri: str, simulated: None
) -> None:
    asset = build_workflow_asset(load_workflow(EXAMPLES / "article_writer.yaml"))

    @dg.asset(deps=[])
    def headline(article_writer: dict[str, Any]) -> str:
        return f"{article_writer['topic']}: {len(article_writer['facts'])} facts"

    result = dg.materialize(
        [asset, headline],
        resources=RUNNER,
        run_config={"ops": {"article_writer": {"config": {"topic": "Rust"}}}},
    )
    assert result.success
    assert result.output_for_node("headline") == "Rust: 3 facts"
    meta = metadata_of(result, "article_writer")
    assert meta["llm_backend"] == "simulated"
    assert meta["llm_calls"] == 4 and meta["node_count"] == 4
    assert meta["total_cost_usd"] > 0
    assert meta["mlflow_run_url"].endswith(f"/runs/{meta['mlflow_run_id']}")
    assert '"topic": "Rust"' in meta["output_preview"]


def test_inputs_of_the_wrong_type_are_refused_before_any_call(
    mlflow_uri: str, simulated: None
) -> None:
    asset = build_workflow_asset(load_workflow(EXAMPLES / "article_writer.yaml"))
    with pytest.raises(dg.DagsterInvalidConfigError, match="topic"):
        dg.materialize(
            [asset],
            resources=RUNNER,
            run_config={"ops": {"article_writer": {"config": {"topic": 5}}}},
        )


def test_one_invalid_file_fails_the_code_location_listing_every_problem(tmp_path: Path) -> None:
    write(tmp_path, LINEAR, "good.yaml")
    write(tmp_path, LINEAR.replace("linear", "bad").replace("{topic}", "{topik}"), "bad.yaml")
    with pytest.raises(
        WorkflowConfigError,
        match=r"bad\.yaml:9:5: nodes\[0\]\.prompt: "
        r"placeholder \{topik\} names no state field",
    ):
        build_definitions(tmp_path)


def test_skip_mode_loads_the_valid_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, LINEAR, "good.yaml")
    write(tmp_path, "flow: [", "broken.yaml")
    defs = build_definitions(tmp_path, on_invalid="skip")
    assert [k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()] == [
        "linear"
    ]
    assert "Skipped invalid workflow: " in caplog.text and "broken.yaml:1" in caplog.text


def test_code_location_module_honours_the_environment(tmp_path: Path) -> None:
    write(tmp_path, LINEAR, "good.yaml")
    write(tmp_path, "flow: [", "broken.yaml")
    script = (
        "import agents_pipelines.definitions as d; "
        "print(sorted(k.to_user_string() for k in d.defs.resolve_asset_graph()"
        ".get_all_asset_keys()))"
    )
    env = {**os.environ, "AGENTS_PIPELINES_WORKFLOWS_DIR": str(tmp_path)}
    failed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert failed.returncode == 1
    assert "broken.yaml:1" in failed.stderr and "YAML syntax error" in failed.stderr
    env["AGENTS_PIPELINES_INVALID_WORKFLOWS"] = "skip"
    loaded = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "['linear']"


@pytest.mark.slow
def test_dagster_asset_materialize_cli(tmp_path: Path, mlflow_uri: str) -> None:
    done, home = dagster_materialize(
        tmp_path, EXAMPLES, "release_notes", AGENTS_PIPELINES_LLM_BACKEND="simulated"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("release_notes"))
        assert event is not None and event.asset_materialization is not None
        meta = metadata_values(event.asset_materialization.metadata)
    assert meta["llm_backend"] == "simulated" and meta["llm_calls"] == 2
    from mlflow import MlflowClient

    assert "mlflow_run_id" in meta, meta.get("tracking_warning")
    run = MlflowClient(mlflow_uri).get_run(meta["mlflow_run_id"])
    assert run.data.metrics["total_cost_usd"] == meta["total_cost_usd"]
    assert run.data.tags["dagster.asset_key"] == "release_notes"


def test_a_typo_in_llm_backend_is_refused_as_the_runner_is_built() -> None:
    assert WorkflowRunner(llm_backend="simulated").llm_backend is Backend.SIMULATED  # type: ignore[arg-type]
    refused = r"llm_backend\n  Input should be 'gemini', 'simulated', 'record' or 'replay'"
    with pytest.raises(pydantic.ValidationError, match=refused):
        WorkflowRunner(llm_backend="gemni")  # type: ignore[arg-type]
