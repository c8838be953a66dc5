"""Tracking to PostgreSQL and to an MLflow tracking server over HTTP (both on loopback)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from agents_pipelines.runner import TrackingFailedWarning, run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.tracking import drain_trace_export
from conftest import LINEAR, metadata_of, write


def _assert_run_recorded(uri: str, run_id: str, trace_id: str | None) -> None:
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["llm_calls"] == 1
    summary = json.loads(Path(client.download_artifacts(run_id, "cost_summary.json")).read_text())
    assert summary["totals"]["total_cost_usd"] == run.data.metrics["total_cost_usd"]
    drain_trace_export()
    assert trace_id is not None
    trace = client.get_trace(trace_id)
    assert trace.info.trace_metadata["mlflow.sourceRun"] == run_id


@pytest.mark.postgres
def test_postgresql_tracking_uri(
    tmp_path: Path, postgres_database: str, simulated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_database)
    result = run_workflow(load_workflow(write(tmp_path, LINEAR)))
    assert result.tracking is not None and result.tracking.tracking_uri == postgres_database
    _assert_run_recorded(postgres_database, result.tracking.run_id, result.tracking.trace_id)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_tracking_server(
    backend_store_uri: str, artifacts: Path, workers: int = 1
) -> Iterator[str]:
    """`mlflow server` on a loopback port; yields its URL and stops it afterwards.

    Without MLflow's job execution: the server would start a job runner and seven Huey
    consumers, eight more interpreters that import MLflow, for server-side jobs (scorers,
    trace rollups) that tracking never uses; they cost seconds of CPU at start, and the
    server took 17 s instead of 4 s to stop."""
    port = _free_port()
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [
            str(mlflow_cli),
            "server",
            "--backend-store-uri",
            backend_store_uri,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": "",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine can hold up its workers' exit
            server.kill()
            server.wait(timeout=30)


@pytest.fixture
def tracking_server(tmp_path: Path, migrated_mlflow_db: Path) -> Iterator[str]:
    """`mlflow server` on a copy of the migrated SQLite store."""
    import shutil

    db = tmp_path / "server.db"
    shutil.copy(migrated_mlflow_db, db)
    yield from start_tracking_server(f"sqlite:///{db}", tmp_path / "artifacts")


def test_http_tracking_server(
    tmp_path: Path, tracking_server: str, simulated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    result = run_workflow(load_workflow(write(tmp_path, LINEAR)))
    assert result.tracking is not None
    # An http(s) tracking URI is also where the MLflow UI lives.
    assert result.tracking.run_url.startswith(f"{tracking_server}/#/experiments/")
    _assert_run_recorded(tracking_server, result.tracking.run_id, result.tracking.trace_id)


def test_unreachable_tracking_server_warns_but_the_run_succeeds(
    tmp_path: Path, simulated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    from agents_pipelines.errors import WorkflowRunError
    from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    workflow = load_workflow(write(tmp_path, LINEAR))
    with pytest.warns(TrackingFailedWarning, match="MLflow tracking failed"):
        result = dg.materialize(
            [build_workflow_asset(workflow)], resources={"workflow_runner": WorkflowRunner()}
        )
    meta = metadata_of(result, "linear")
    assert meta["llm_calls"] == 1 and meta["total_tokens"] > 0
    assert "mlflow_run_id" not in meta
    assert meta["tracking_warning"].startswith("MLflow tracking failed for workflow linear:")

    required = write(
        tmp_path,
        LINEAR + "config:\n  observability:\n    mlflow: {required: true}\n",
        "required.yaml",
    )
    with pytest.raises(
        WorkflowRunError,
        match=r"MLflow tracking failed for workflow linear: .*"
        r"set observability\.mlflow\.required: false",
    ):
        run_workflow(load_workflow(required))


def test_tracking_server_that_stops_during_the_run(
    tmp_path: Path, migrated_mlflow_db: Path, simulated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import threading

    db = tmp_path / "server.db"
    shutil.copy(migrated_mlflow_db, db)
    server = start_tracking_server(f"sqlite:///{db}", tmp_path / "artifacts")
    url = next(server)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # A server shutting down may accept connections and never answer: keep waits short.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    # The server goes away while the (2 s) LLM call is in flight.
    stopper = threading.Timer(1.0, lambda: next(server, None))
    stopper.start()
    with pytest.warns(TrackingFailedWarning):
        result = run_workflow(load_workflow(write(tmp_path, LINEAR)), simulated_latency_s=2.0)
    stopper.join()
    assert result.state["summary"] and result.usage.llm_calls == 1
    assert result.warnings and "MLflow tracking failed" in result.warnings[0]
