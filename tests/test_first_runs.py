"""The first runs on a brand-new SQLite MLflow store and a brand-new DAGSTER_HOME, all
started at once, each in its own process, lose nothing: every run is tracked and traced.

MLflow creates its store in whichever process opens it first, with no lock between
processes; before agents_pipelines created it under a file lock, 7 of 8 such runs lost
their MLflow run ("duplicate column name: step", "table ... already exists")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from concurrent_cli import (
    assert_each_run_tracked_once,
    cli_env,
    materialization_metadata,
    materialize_at_once,
)
from conftest import DAGSTER, EXAMPLES, REPO

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
