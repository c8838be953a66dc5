"""Concurrent materializations in separate processes share one SQLite MLflow store and one
SQLite Dagster instance: all succeed, nothing is locked out, nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient

from agents_pipelines.tracking import stale_runs
from conftest import EXAMPLES, REPO

PROCESSES = 8


@pytest.mark.slow
def test_eight_concurrent_materializations_on_sqlite(
    tmp_path: Path, migrated_mlflow_db: Path
) -> None:
    home, workflows = tmp_path / "home", tmp_path / "workflows"
    home.mkdir()
    workflows.mkdir()
    shutil.copy(EXAMPLES / "release_notes.yaml", workflows)
    db = tmp_path / "mlflow.db"
    shutil.copy(migrated_mlflow_db, db)
    uri = f"sqlite:///{db}"
    # The instance exists before runs share it, as under `dagster dev`: eight processes
    # creating a brand-new SQLite home at once race on its schema stamp.
    dg.DagsterInstance.from_config(str(home)).dispose()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AGENTS_PIPELINES_WORKFLOWS_DIR": str(workflows),
        "AGENTS_PIPELINES_LLM_BACKEND": "simulated",
        "AGENTS_PIPELINES_SIMULATED_LATENCY_S": "0.2",
        "MLFLOW_TRACKING_URI": uri,
    }
    dagster = Path(sys.executable).parent / "dagster"
    command = [
        str(dagster),
        "asset",
        "materialize",
        "-m",
        "agents_pipelines.definitions",
        "--select",
        "release_notes",
    ]
    processes = [
        subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(PROCESSES)
    ]
    outputs = [p.communicate(timeout=600)[0].decode() for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "database is locked" not in output

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey("release_notes"), limit=100).records
    metadata = [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in records]
    assert len(metadata) == PROCESSES

    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    experiment = client.get_experiment_by_name("my_workflows")
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert len(runs) == PROCESSES
    assert all(r.info.status == "FINISHED" for r in runs.values())
    # No run took another, live, for a dead one (see tracking/stale_runs.py).
    assert not [r for r in runs.values() if stale_runs.CLOSED_TAG in r.data.tags]
    traces = mlflow.search_traces(locations=[experiment.experiment_id], return_type="list")
    by_run: dict[str, list[mlflow.entities.Trace]] = {}
    for trace in traces:
        by_run.setdefault(trace.info.trace_metadata["mlflow.sourceRun"], []).append(trace)
    for meta in metadata:
        run_id = meta["mlflow_run_id"]
        (trace,) = by_run[run_id]  # exactly one trace per run
        assert trace.info.trace_id == meta["mlflow_trace_id"]
        assert len([s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]) == 2
        summary = json.loads(
            Path(client.download_artifacts(run_id, "cost_summary.json")).read_text()
        )
        assert summary["totals"]["total_cost_usd"] == meta["total_cost_usd"]
        assert summary["totals"]["total_tokens"] == meta["total_tokens"]
        assert runs[run_id].data.metrics["total_cost_usd"] == meta["total_cost_usd"]
