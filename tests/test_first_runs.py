"""The first runs on a brand-new SQLite MLflow store and a brand-new DAGSTER_HOME, all
started at once, each in its own process, lose nothing: every run is tracked and traced.

MLflow creates its store in whichever process opens it first, with no lock between
processes; before agents_pipelines created it under a file lock, 7 of 8 such runs lost
their MLflow run ("duplicate column name: step", "table ... already exists")."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from concurrent_cli import (
    assert_each_run_tracked_once,
    cli_env,
    materialization_metadata,
    materialize_at_once,
)
from conftest import DAGSTER, EXAMPLES, FORKSERVER_PRELOAD, REPO

PROCESSES = 8
CREATED_BY_MLFLOW = "Creating initial MLflow database tables"


@pytest.mark.slow
@pytest.mark.xdist_group("concurrency")  # one many-process test at a time
@pytest.mark.timeout(600)  # 9 interpreter starts: 267 s at a load average of 17 on 2 cores
def test_eight_first_runs_on_a_brand_new_store_give_eight_runs_and_eight_traces(
    tmp_path: Path,
) -> None:
    home, workflows = tmp_path / "home", tmp_path / "workflows"
    home.mkdir()  # empty: a brand-new DAGSTER_HOME
    workflows.mkdir()
    shutil.copy(EXAMPLES / "release_notes.yaml", workflows)
    store = tmp_path / "mlflow.db"
    uri = f"sqlite:///{store}"
    env = cli_env(home, workflows, uri)
    # A brand-new DAGSTER_HOME is created by the CLI before our code location is imported,
    # so our code cannot serialize it: the README's first command for a new home, tested.
    first = subprocess.run(
        [str(DAGSTER), "instance", "migrate"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert not store.exists()

    outputs = materialize_at_once("release_notes", PROCESSES, env)

    assert not any("MLflow tracking failed" in output for output in outputs)
    # One process created the store; the other seven waited for it and then used it.
    assert sum(CREATED_BY_MLFLOW in output for output in outputs) == 1
    metadata = materialization_metadata(home, "release_notes")
    assert len(metadata) == PROCESSES
    assert_each_run_tracked_once(uri, metadata, chat_spans=2)


def _open_both_stores(url: str) -> str:
    """One process's first run on the team database: the checkpointer and the journal."""
    from agents_pipelines.orchestration.stores.checkpoints import postgres_saver
    from agents_pipelines.orchestration.stores.spend_journal import postgres_journal

    try:
        with postgres_saver(url), postgres_journal(url):
            return "ok"
    except Exception as exc:  # the report names each process's error
        return repr(exc)[:300]


@pytest.mark.postgres
@pytest.mark.xdist_group("concurrency")  # one many-process test at a time
def test_sixteen_first_runs_on_a_brand_new_postgres_database_create_its_tables_once(
    postgres_database_factory: Any,
) -> None:
    # Before the schema lock, 1 to 15 of 16 processes failed here: "duplicate key value
    # violates unique constraint checkpoint_migrations_pkey" or "pg_type_typname_nsp_index"
    # (CREATE TABLE IF NOT EXISTS is not safe against itself), and with a blocking
    # pg_advisory_lock, "deadlock detected" against LangGraph's CREATE INDEX CONCURRENTLY.
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver

    url = postgres_database_factory()
    # Sixteen processes of their own, forked from a server that imported once what each
    # imports (this module and its imports: Dagster, MLflow, the stores), not a fork of this
    # process, whose threads may hold locks. Sixteen spawned interpreters each imported them
    # (129 s for this test at a load average of 24). The server cannot import this module
    # itself (Python 3.11's forkserver ignores the parent's sys.path), so its imports.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    with context.Pool(PROCESSES * 2) as pool:
        outcomes = pool.map(_open_both_stores, [url] * PROCESSES * 2)

    assert outcomes == ["ok"] * PROCESSES * 2
    with psycopg.connect(url) as conn:
        versions = [v for (v,) in conn.execute("SELECT v FROM checkpoint_migrations ORDER BY v")]
        journal_rows = conn.execute("SELECT COUNT(*) FROM agents_pipelines_spend_journal")
        assert journal_rows.fetchone() == (0,)
    assert versions == list(range(len(PostgresSaver.MIGRATIONS)))
