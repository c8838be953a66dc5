"""End to end: `dagster dev` (webserver and daemon) with the shipped dagster.yaml, a run
launched through GraphQL, its metadata read back from the event log, and a file dropped for
the sensor that the daemon turns into a run. Every process started here is stopped."""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from conftest import DAGSTER, EXAMPLES, REPO, metadata_values, wait_until, workflow_yaml

# The webserver answers GraphQL polls from the same two cores as the run: poll gently.
_wait = functools.partial(wait_until, every=1.0)

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
SUMMARIZE = ("summarize", "Summarize {topic}.", "summary")
BATCH_FLOW = workflow_yaml(
    "batch_flow",
    SUMMARIZE,
    orchestration="partitions: {static: {a: {topic: A}, b: {topic: B}, c: {topic: C}}}",
)
RUN_STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"

SENSOR_FLOW = workflow_yaml(
    "inbox_flow",
    SUMMARIZE,
    orchestration='sensor: {path: "INBOX/*.json", minimum_interval_seconds: 1}',
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.load(response)["data"])


@pytest.fixture
def dagster_dev(tmp_path: Path, migrated_mlflow_db: Path) -> Iterator[tuple[str, Path, Path]]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    workflows = {
        "release_notes.yaml": (EXAMPLES / "release_notes.yaml").read_text(),
        "inbox_flow.yaml": SENSOR_FLOW.replace("INBOX", str(inbox)),
        "batch_flow.yaml": BATCH_FLOW,
    }
    simulated = {"AGENTS_PIPELINES_LLM_BACKEND": "simulated"}
    with running_dagster_dev(tmp_path, migrated_mlflow_db, workflows, simulated) as (url, home):
        yield url, home, inbox


@contextmanager
def running_dagster_dev(
    tmp_path: Path,
    migrated_mlflow_db: Path,
    workflows: Mapping[str, str],
    env: Mapping[str, str],
    dagster_yaml: str | None = None,
) -> Iterator[tuple[str, Path]]:
    """`dagster dev` with the shipped dagster.yaml (or the text ``dagster_yaml``) in a fresh
    DAGSTER_HOME, serving ``workflows`` (file name -> YAML) and tracking to a copy of the
    migrated MLflow store; ``env`` adds to the environment (the LLM backend, say). Yields the
    webserver's URL and DAGSTER_HOME, and stops every process it started."""
    home, folder = tmp_path / "home", tmp_path / "workflows"
    for path in (home, folder):
        path.mkdir()
    if dagster_yaml is None:
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text(dagster_yaml)
    for name, text in workflows.items():
        (folder / name).write_text(text)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # The shipped default limit stays in force for other pools; `gemini` gets one slot
        # here so that a backfill shows the bound.
        instance.event_log_storage.set_concurrency_slots("gemini", 1)
    shutil.copy(migrated_mlflow_db, tmp_path / "mlflow.db")
    port = _free_port()
    full_env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AGENTS_PIPELINES_WORKFLOWS_DIR": str(folder),
        "AGENTS_PIPELINES_SIMULATED_LATENCY_S": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        **env,
    }
    with open(tmp_path / "dagster_dev.log", "wb") as log:
        process = subprocess.Popen(
            [
                str(DAGSTER),
                "dev",
                "-w",
                str(REPO / "workspace.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO,
            env=full_env,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _responds(url), 120, "the Dagster webserver")
        yield url, home
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop dagster dev and everything it started: webserver, daemon, code servers and run
    workers all share its process group (a code server spawned during shutdown included)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            break
        time.sleep(1)
        process.poll()
    else:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)


def launch_run(url: str, asset: str, tags: dict[str, str] | None = None) -> str:
    """Launch a run of ``asset`` through GraphQL, as the UI's Materialize button does
    (``tags``: e.g. ``dagster/partition``, as the UI sets for one partition)."""
    params: dict[str, Any] = {
        "selector": {
            "repositoryLocationName": "agents_pipelines",
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": [asset]}],
        },
        "runConfigData": {},
    }
    if tags:
        params["executionMetadata"] = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
    launched = _wait(
        lambda: graphql(url, LAUNCH, {"params": params})["launchRun"],
        120,
        "the code location to load",
    )
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return str(launched["run"]["runId"])


def final_status(url: str, run_id: str) -> str:
    """The status of the run once it has ended."""
    return str(
        _wait(
            lambda: (
                (s := graphql(url, RUN_STATUS, {"id": run_id})["runOrError"]["status"])
                in ("SUCCESS", "FAILURE", "CANCELED")
                and s
            ),
            240,
            "the launched run to finish",
        )
    )


def _responds(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=5):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_dagster_dev_runs_a_launched_materialization_and_the_sensor(
    dagster_dev: tuple[str, Path, Path],
) -> None:
    url, home, inbox = dagster_dev
    run_id = launch_run(url, "release_notes")
    assert final_status(url, run_id) == "SUCCESS"

    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("release_notes"))
        assert event is not None and event.run_id == run_id
        meta = metadata_values(event.asset_materialization.metadata)
        assert meta["llm_backend"] == "simulated" and meta["llm_calls"] == 2
        assert meta["total_tokens"] > 0 and meta["total_cost_usd"] > 0
        assert meta["mlflow_run_id"]

        (inbox / "first.json").write_text(json.dumps({"topic": "dropped file"}))
        tag = {"agents_pipelines/input_file": str(inbox / "first.json")}

        def sensor_run() -> Any:
            runs = instance.get_runs(filters=dg.RunsFilter(tags=tag))
            return runs and runs[0].status == dg.DagsterRunStatus.SUCCESS and runs[0]

        run = _wait(sensor_run, 240, "the daemon's sensor to start and finish a run")
        assert run.run_config == {"ops": {"inbox_flow": {"config": {"topic": "dropped file"}}}}

        backfill = graphql(
            url,
            BACKFILL,
            {
                "params": {
                    "partitionNames": ["a", "b", "c"],
                    "assetSelection": [{"path": ["batch_flow"]}],
                }
            },
        )["launchPartitionBackfill"]
        assert backfill["__typename"] == "LaunchBackfillSuccess", backfill
        backfill_tag = {"dagster/backfill": backfill["backfillId"]}

        def backfill_runs() -> Any:
            runs = instance.get_runs(filters=dg.RunsFilter(tags=backfill_tag))
            done = [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
            return len(done) == 3 and runs

        runs = _wait(backfill_runs, 300, "the backfill's three partition runs")
        assert sorted(r.tags["dagster/partition"] for r in runs) == ["a", "b", "c"]
        spans = sorted(_step_span(instance, r.run_id) for r in runs)
        # One slot in the `gemini` pool: no two partition steps were in flight at once.
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))


def _step_span(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    times = {
        record.dagster_event.event_type_value: record.timestamp
        for record in instance.all_logs(run_id)
        if record.dagster_event is not None
    }
    return times["STEP_START"], times["STEP_SUCCESS"]
