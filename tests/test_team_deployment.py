"""The team deployment profile on the machine's PostgreSQL: Dagster storage through
dagster-postgres (deploy/team/dagster.yaml) and an MLflow tracking server on a PostgreSQL
backend store, under 16 concurrent runs in separate processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient

from conftest import EXAMPLES, REPO, metadata_values
from pool_claims import assert_one_claim_per_slot
from test_tracking_servers import start_tracking_server

RUNS = 16
POOL_LIMIT = 8  # concurrency.pools.default_limit in deploy/team/dagster.yaml


@pytest.fixture
def mlflow_on_postgres(
    tmp_path: Path, postgres_database_factory: Any, mlflow_postgres_template: str
) -> Iterator[str]:
    """An MLflow server on a PostgreSQL database of this test's own (a test counts the runs
    in it), MLflow's schema already in it. Two workers: sixteen runs log to it at once."""
    database = postgres_database_factory(template=mlflow_postgres_template)
    yield from start_tracking_server(database, tmp_path / "artifacts", workers=2)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.xdist_group("concurrency")  # one many-process test at a time
def test_sixteen_concurrent_runs_on_postgres(
    tmp_path: Path, postgres_database_factory: object, mlflow_on_postgres: str
) -> None:
    dagster_db = postgres_database_factory().replace(  # type: ignore[operator]
        "postgresql://", "postgresql+psycopg2://"
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "team" / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": dagster_db,
        "MLFLOW_TRACKING_URI": mlflow_on_postgres,
        "AGENTS_PIPELINES_LLM_BACKEND": "simulated",
        "AGENTS_PIPELINES_SIMULATED_LATENCY_S": "0.2",
    }
    os.environ["DAGSTER_POSTGRES_URL"] = dagster_db
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:  # migrates the schema
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            # No slot override: the sixteen runs share the profile's default pool limit of 8,
            # so the runs beyond eight wait for a "gemini" slot (the driver creates the pool
            # first, as the run queue daemon would; see load_driver.py).
            assert instance.global_op_concurrency_default_limit == POOL_LIMIT
        driver = subprocess.run(
            [
                sys.executable,
                str(REPO / "tests" / "support" / "load_driver.py"),
                str(EXAMPLES / "release_notes.yaml"),
                "--processes",
                str(RUNS),
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert driver.returncode == 0, driver.stderr[-3000:]
        results = [json.loads(line) for line in driver.stdout.splitlines() if line.startswith("{")]
        failed = [r for r in results if not r["success"]]
        assert len(results) == RUNS and not failed, json.dumps(failed, indent=1)[-6000:]
        assert len({r["pid"] for r in results}) == RUNS  # one process per run
        with dg.DagsterInstance.from_config(str(home)) as instance:
            records = instance.fetch_materializations(
                dg.AssetKey("release_notes"), limit=100
            ).records
            pool = instance.event_log_storage.get_concurrency_info("gemini")
        # The pool came from the profile's default, and every run gave its slot back.
        assert pool.limit == pool.slot_count == POOL_LIMIT and pool.using_default_limit
        assert not pool.claimed_slots and not pool.pending_steps
        metadata = [metadata_values(r.asset_materialization.metadata) for r in records]
    finally:
        os.environ.pop("DAGSTER_POSTGRES_URL", None)
    assert len(metadata) == RUNS
    assert "database is locked" not in driver.stderr

    client = MlflowClient(mlflow_on_postgres)
    mlflow.set_tracking_uri(mlflow_on_postgres)
    experiment = client.get_experiment_by_name("my_workflows")
    runs = {
        r.info.run_id: r for r in client.search_runs([experiment.experiment_id], max_results=100)
    }
    assert len(runs) == RUNS and all(r.info.status == "FINISHED" for r in runs.values())
    traces = mlflow.search_traces(
        locations=[experiment.experiment_id], return_type="list", max_results=100
    )
    by_run: dict[str, list[str]] = {}
    for trace in traces:
        by_run.setdefault(trace.info.trace_metadata["mlflow.sourceRun"], []).append(
            trace.info.trace_id
        )
    for meta in metadata:
        run_id = meta["mlflow_run_id"]
        assert by_run[run_id] == [meta["mlflow_trace_id"]]  # exactly one trace per run
        summary = json.loads(
            Path(client.download_artifacts(run_id, "cost_summary.json")).read_text()
        )
        assert summary["totals"]["total_cost_usd"] == meta["total_cost_usd"]
        assert runs[run_id].data.metrics["total_tokens"] == meta["total_tokens"]


@pytest.mark.postgres
@pytest.mark.xdist_group("concurrency")  # one many-process test at a time
def test_a_pool_slot_goes_to_one_claim_among_many_at_once(
    tmp_path: Path, postgres_database_factory: Any
) -> None:
    # Dagster 1.13's own claim (SELECT ... FOR UPDATE SKIP LOCKED on an autocommit
    # connection, then an UPDATE by id) gave one slot to two claims in 2 of 8 runs of
    # tests/test_celery.py, and 6 or 7 claims of 3 slots here; now 12 processes claim 3 slots
    # at the same instant, 5 times.
    url = postgres_database_factory().replace("postgresql://", "postgresql+psycopg2://")
    shutil.copy(REPO / "deploy" / "team" / "dagster.yaml", tmp_path / "dagster.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_POSTGRES_URL", url)
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            storage = instance.event_log_storage
            assert type(storage).__name__ == "PoolSafePostgresEventLogStorage"
        assert_one_claim_per_slot(str(tmp_path), slots=3, processes=12, trials=5)
