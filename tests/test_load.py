"""Concurrent materializations in separate processes share one SQLite MLflow store and one
SQLite Dagster instance: all succeed, nothing is locked out, nothing is lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from concurrent_cli import (
    assert_each_run_tracked_once,
    cli_env,
    materialization_metadata,
    materialize_at_once,
)
from conftest import EXAMPLES

PROCESSES = 8


@pytest.mark.slow
@pytest.mark.xdist_group("concurrency")  # one many-process test at a time
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

    materialize_at_once("release_notes", PROCESSES, cli_env(home, workflows, uri))

    metadata = materialization_metadata(home, "release_notes")
    assert len(metadata) == PROCESSES
    assert_each_run_tracked_once(uri, metadata, chat_spans=2)
