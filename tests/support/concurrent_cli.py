"""Start N `dagster asset materialize` processes at once, each its own interpreter, against
one DAGSTER_HOME and one MLflow tracking URI; then check that every run was tracked once."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
from mlflow import MlflowClient

from agents_pipelines.tracking import stale_runs
from conftest import REPO, materialize_command, metadata_values


def cli_env(home: Path, workflows: Path, tracking_uri: str) -> dict[str, str]:
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AGENTS_PIPELINES_WORKFLOWS_DIR": str(workflows),
        "AGENTS_PIPELINES_LLM_BACKEND": "simulated",
        "AGENTS_PIPELINES_SIMULATED_LATENCY_S": "0.2",
        "MLFLOW_TRACKING_URI": tracking_uri,
    }


def materialize_at_once(asset: str, processes: int, env: dict[str, str]) -> list[str]:
    """Each process's output, once all have succeeded without "database is locked"."""
    started = [
        subprocess.Popen(
            materialize_command(asset),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(processes)
    ]
    outputs = [p.communicate(timeout=600)[0].decode() for p in started]
    for process, output in zip(started, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "database is locked" not in output, output[-3000:]
    return outputs


def materialization_metadata(home: Path, asset: str) -> list[dict[str, Any]]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
    return [metadata_values(r.asset_materialization.metadata) for r in records]


def assert_each_run_tracked_once(
    tracking_uri: str, metadata: list[dict[str, Any]], chat_spans: int
) -> None:
    """Exactly one FINISHED MLflow run and one trace per materialization, and its
    cost_summary.json and metrics equal to the Dagster metadata."""
    client = MlflowClient(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    experiment = client.get_experiment_by_name("my_workflows")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert len(runs) == len(metadata)
    assert all(r.info.status == "FINISHED" for r in runs.values())
    # No run took another, live, for a dead one (see tracking/stale_runs.py).
    assert not [r for r in runs.values() if stale_runs.CLOSED_TAG in r.data.tags]
    traces = mlflow.search_traces(locations=[experiment.experiment_id], return_type="list")
    assert len(traces) == len(metadata)
    by_run: dict[str, list[mlflow.entities.Trace]] = {}
    for trace in traces:
        by_run.setdefault(trace.info.trace_metadata["mlflow.sourceRun"], []).append(trace)
    for meta in metadata:
        run_id = meta["mlflow_run_id"]
        (trace,) = by_run[run_id]  # exactly one trace per run
        assert trace.info.trace_id == meta["mlflow_trace_id"]
        assert len([s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]) == chat_spans
        summary = json.loads(
            Path(client.download_artifacts(run_id, "cost_summary.json")).read_text()
        )
        assert summary["totals"]["total_cost_usd"] == meta["total_cost_usd"]
        assert summary["totals"]["total_tokens"] == meta["total_tokens"]
        assert runs[run_id].data.metrics["total_cost_usd"] == meta["total_cost_usd"]
