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

import mlflow
import pytest
from mlflow import MlflowClient

from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from conftest import LINEAR, write


def _assert_run_recorded(uri: str, run_id: str, trace_id: str | None) -> None:
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["llm_calls"] == 1
    summary = json.loads(Path(client.download_artifacts(run_id, "cost_summary.json")).read_text())
    assert summary["totals"]["total_cost_usd"] == run.data.metrics["total_cost_usd"]
    mlflow.flush_trace_async_logging()
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


@pytest.fixture
def tracking_server(tmp_path: Path, migrated_mlflow_db: Path) -> Iterator[str]:
    """`mlflow server` on a loopback port, on a copy of the migrated SQLite store."""
    import shutil

    db = tmp_path / "server.db"
    shutil.copy(migrated_mlflow_db, db)
    port = _free_port()
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [
            str(mlflow_cli),
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
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
        server.wait(timeout=30)


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
