"""MLflow settings: artifact levels, environment override, file stores, disabled tracking,
pricing overrides, unpriced models, and traces that survive the process's exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from agents_pipelines.cli import main
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.tracking import drain_trace_export
from agents_pipelines.tracking.tracking_settings import FileStoreDeprecationWarning
from conftest import LINEAR, metadata_of, write


def linear(tmp_path: Path, mlflow_block: str = "", extra: str = "") -> Path:
    config = f"config:\n  observability:\n    mlflow: {{{mlflow_block}}}\n{extra}"
    return write(tmp_path, LINEAR + config)


def artifact_paths(run_id: str) -> set[str]:
    root = Path(MlflowClient().download_artifacts(run_id, ""))
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("artifact_level: minimal", {"cost_summary.json"}),
        ("artifact_level: standard", {"cost_summary.json", "workflow/wf.yaml", "graph.mmd"}),
        (
            "artifact_level: full",
            {
                "cost_summary.json",
                "workflow/wf.yaml",
                "graph.mmd",
                "inputs.json",
                "outputs.json",
                "prompts.json",
            },
        ),
        ("log_artifacts: false, artifact_level: full", set()),
    ],
)
def test_artifact_levels(
    tmp_path: Path, mlflow_uri: str, simulated: None, block: str, expected: set[str]
) -> None:
    result = run_workflow(load_workflow(linear(tmp_path, block)))
    assert result.tracking is not None
    paths = artifact_paths(result.tracking.run_id) if expected else set()
    assert paths == expected
    if "prompts.json" in expected:
        root = Path(MlflowClient().download_artifacts(result.tracking.run_id, ""))
        prompts = json.loads((root / "prompts.json").read_text())
        assert prompts[0]["prompt"] == "[human] Summarize cats."
        assert prompts[0]["reply"] == result.state["summary"]


def test_environment_overrides_the_workflow_tracking_uri(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    block = f"tracking_uri: 'sqlite:///{elsewhere}', experiment_name: team"
    result = run_workflow(load_workflow(linear(tmp_path, block)))
    assert result.tracking is not None and result.tracking.tracking_uri == mlflow_uri
    assert not elsewhere.exists()
    experiment = MlflowClient(mlflow_uri).get_experiment_by_name("team")
    assert experiment is not None and experiment.experiment_id == result.tracking.experiment_id


def test_file_store_still_works_and_warns(
    tmp_path: Path, simulated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = tmp_path / "mlruns"
    with pytest.warns(FileStoreDeprecationWarning, match="mlflow migrate-filestore"):
        result = run_workflow(load_workflow(linear(tmp_path, f"tracking_uri: '{store.as_uri()}'")))
    assert result.tracking is not None
    run = MlflowClient(store.as_uri()).get_run(result.tracking.run_id)
    assert run.data.metrics["llm_calls"] == 1
    drain_trace_export()


def test_disabled_tracking_still_reports_usage(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    result = run_workflow(load_workflow(linear(tmp_path, "enabled: false")))
    assert result.tracking is None
    assert result.usage.llm_calls == 1 and result.usage.tokens.total > 0
    assert result.usage.total_cost_usd > 0
    assert MlflowClient(mlflow_uri).search_runs(["0", "1"]) == []


def test_pricing_override_reaches_the_trace_and_the_summary(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    pricing = (
        "  pricing:\n    gemini-2.5-flash: {input_per_million: 1000, output_per_million: 2000}\n"
    )
    result = run_workflow(load_workflow(linear(tmp_path, "artifact_level: minimal", pricing)))
    (call,) = result.usage.calls
    expected = round((call.usage.prompt * 1000 + call.usage.completion * 2000) / 1e6, 9)
    assert call.cost_usd == expected and call.price is not None
    assert call.price.source == "config.pricing"
    assert result.tracking is not None and result.tracking.trace_id is not None
    drain_trace_export()
    trace = mlflow.get_trace(result.tracking.trace_id)
    (span,) = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert span.attributes["mlflow.llm.cost"]["total_cost"] == expected
    assert json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"] == expected


def test_a_model_with_no_price_is_unpriced_not_free(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    path = linear(tmp_path, "", "  llm: {model: acme-llm-7}\n")
    result = run_workflow(load_workflow(path))
    assert result.usage.unpriced_models == ["acme-llm-7"]
    assert result.usage.calls[0].cost_usd is None
    assert result.tracking is not None
    root = Path(MlflowClient().download_artifacts(result.tracking.run_id, ""))
    summary = json.loads((root / "cost_summary.json").read_text())
    assert summary["totals"]["unpriced_models"] == ["acme-llm-7"]
    assert summary["by_model"]["acme-llm-7"]["cost_usd"] is None
    assert summary["calls"][0]["price_source"] == "unpriced"
    assert "(unpriced: acme-llm-7)" in result.usage.describe_spend()


def test_cli_run_prints_totals_and_verbose_tracking_lines(
    tmp_path: Path, mlflow_uri: str, simulated: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = linear(tmp_path, "experiment_name: cli_runs")
    assert main(["run", str(path), "--input", "topic=owls", "--verbose"]) == 0
    out = capsys.readouterr().out
    experiment = MlflowClient().get_experiment_by_name("cli_runs")
    assert experiment is not None
    assert out.count("✓ MLflow tracing enabled (") == 1
    assert f"✓ Experiment: cli_runs (ID: {experiment.experiment_id})" in out
    assert "✓ linear finished in" in out and "(backend: simulated, 1 node run(s))" in out
    assert "  LLM calls: 1\n" in out and "cost: $0.0" in out
    assert '"topic": "owls"' in out


def test_cli_run_reports_bad_inputs_without_calling(
    tmp_path: Path, mlflow_uri: str, simulated: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(linear(tmp_path)), "--input", "summary=x"]) == 1
    err = capsys.readouterr().err
    assert "`summary` is not an input of this workflow (a node writes it)" in err
    assert MlflowClient().search_runs(["0"]) == []


def test_trace_is_stored_when_the_process_exits_right_after_the_run(
    tmp_path: Path, mlflow_uri: str
) -> None:
    path = linear(tmp_path, "async_logging: true")
    env = {
        **os.environ,
        "AGENTS_PIPELINES_LLM_BACKEND": "simulated",
        "MLFLOW_TRACKING_URI": mlflow_uri,
    }
    cli = Path(sys.executable).parent / "agents-pipelines"
    subprocess.run(
        [str(cli), "run", str(path)], env=env, check=True, capture_output=True, timeout=120
    )
    experiment = MlflowClient().get_experiment_by_name("linear")
    assert experiment is not None
    traces = mlflow.search_traces(locations=[experiment.experiment_id], return_type="list")
    assert len(traces) == 1
    assert traces[0].info.token_usage is not None
    assert len([s for s in traces[0].data.spans if s.span_type == "CHAT_MODEL"]) == 1


@pytest.mark.parametrize(("level", "recorded"), [("standard", False), ("full", True)])
def test_prompts_and_replies_reach_the_trace_only_at_full(
    tmp_path: Path, mlflow_uri: str, simulated: None, level: str, recorded: bool
) -> None:
    result = run_workflow(load_workflow(linear(tmp_path, f"artifact_level: {level}")))
    assert result.tracking is not None
    drain_trace_export()
    trace_json = mlflow.get_trace(result.tracking.trace_id).to_json()
    assert ("Summarize cats." in trace_json) is recorded
    assert (result.state["summary"][:40] in trace_json) is recorded


def test_disabled_tracking_still_shows_tokens_and_cost_in_dagster(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    import dagster as dg

    from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset

    asset = build_workflow_asset(load_workflow(linear(tmp_path, "enabled: false")))
    result = dg.materialize([asset], resources={"workflow_runner": WorkflowRunner()})
    meta = metadata_of(result, "linear")
    assert meta["total_tokens"] > 0 and meta["total_cost_usd"] > 0 and meta["llm_calls"] == 1
    assert "mlflow_run_id" not in meta


def test_synchronous_trace_logging_stores_the_trace_before_returning(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    result = run_workflow(load_workflow(linear(tmp_path, "async_logging: false")))
    assert result.tracking is not None and result.tracking.trace_id is not None
    # No flush here: with async_logging off the run waited for its trace.
    trace = MlflowClient().get_trace(result.tracking.trace_id)
    assert len([s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]) == 1


def test_concurrent_runs_in_one_process_link_each_trace_to_its_own_run(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    workflow = load_workflow(linear(tmp_path))
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda i: run_workflow(workflow, {"topic": f"topic {i}"}), range(16))
        )
    drain_trace_export()
    client = MlflowClient()
    run_ids = set()
    for result in results:
        assert result.tracking is not None and result.tracking.trace_id is not None
        run_id = result.tracking.run_id
        run_ids.add(run_id)
        trace = client.get_trace(result.tracking.trace_id)
        assert trace.info.trace_metadata["mlflow.sourceRun"] == run_id
        (root,) = [s for s in trace.data.spans if s.parent_id is None]
        assert root.inputs == {"inputs": ["summary", "topic"]}
        linked = mlflow.search_traces(
            locations=[result.tracking.experiment_id], run_id=run_id, return_type="list"
        )
        assert [t.info.trace_id for t in linked] == [result.tracking.trace_id]
        assert client.get_run(run_id).info.status == "FINISHED"
    assert len(run_ids) == 16


def test_a_disabled_workflow_is_never_traced_even_after_a_traced_one(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    traced = run_workflow(load_workflow(linear(tmp_path)))  # MLflow is set up from here
    assert traced.tracking is not None
    disabled = LINEAR.replace("linear", "untracked") + (
        "config:\n  observability:\n    mlflow: {enabled: false}\n"
    )
    disabled_path = write(tmp_path, disabled, "untracked.yaml")
    untracked = run_workflow(load_workflow(disabled_path), {"topic": "secret plans"})
    assert untracked.tracking is None and untracked.usage.llm_calls == 1
    drain_trace_export()
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    traces = mlflow.search_traces(locations=experiments, return_type="list")
    assert [t.info.trace_id for t in traces] == [traced.tracking.trace_id]
    assert all("secret plans" not in t.to_json() for t in traces)


def test_the_sqlite_store_writes_ahead_so_concurrent_runs_do_not_wait_on_fsyncs(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    import sqlite3

    run_workflow(load_workflow(linear(tmp_path)))
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


def test_a_run_is_traced_by_its_own_tracer_without_patching_langchain(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    from langchain_core.callbacks import BaseCallbackManager

    result = run_workflow(load_workflow(linear(tmp_path)))
    assert result.tracking is not None and result.tracking.trace_id is not None
    drain_trace_export()
    spans = mlflow.get_trace(result.tracking.trace_id).data.spans
    by_id = {span.span_id: span for span in spans}
    tree = sorted(
        (span.name, span.span_type, by_id[span.parent_id].name if span.parent_id else "")
        for span in spans
    )
    assert tree == [
        ("SimulatedChatModel", "CHAT_MODEL", "summarize"),
        ("linear", "CHAIN", ""),  # the run's root span
        ("linear", "CHAIN", "linear"),  # the graph
        ("summarize", "CHAIN", "linear"),
    ]
    # autolog's patch would wrap every callback manager LangChain makes (about 11 per map
    # item call): the run's tracer comes in its config callbacks instead.
    source = BaseCallbackManager.__init__.__code__.co_filename
    assert source.endswith(os.path.join("langchain_core", "callbacks", "base.py")), source
