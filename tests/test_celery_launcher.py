"""Runs launched as Celery tasks (deploy/celery/dagster.yaml: AgentsCeleryRunLauncher) on
PostgreSQL and a Redis broker: `dagster dev` launches and monitors the runs, a Celery worker
(deploy/celery/worker.sh) runs each inside one of its pool processes. A run succeeds with
its figures; a run whose pool process is killed mid-run ends FAILURE (with dagster-celery's
stock CeleryRunLauncher it stayed STARTED, until max_runtime_seconds: a day); a Terminate
ends CANCELED (stock: FAILURE)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
import yaml

from agents_pipelines.testing import GeminiLoopbackServer
from agents_pipelines.testing.gemini_server.replies import RecordedRequest, Reply, default_reply
from conftest import REPO, metadata_values, wait_until
from test_celery import (  # noqa: F401  (fixtures)
    DAILY,
    SHIPPED_CONFIG,
    broker_url,
    deployment,
    isolated_celery_config,
    redis_url,
    start_worker,
    stop_worker,
)
from test_dagster_dev_e2e import final_status, graphql, launch_run, running_dagster_dev
from test_pool_slot_release import pool_is_free, step_pid, with_short_intervals
from test_spend_limits import CALL_USD
from test_stop_and_spend import TERMINATE

PROFILE = REPO / "deploy" / "celery" / "dagster.yaml"
TEAM = REPO / "deploy" / "team" / "dagster.yaml"
RUNS_CONFIG = REPO / "deploy" / "celery" / "runs.yaml"


@pytest.fixture
def celery_config(tmp_path: Path, redis_url: str) -> Iterator[Path]:  # noqa: F811
    """deploy/celery/runs.yaml (the settings of workers that run runs), with keys of this
    test's own in the shared Redis, deleted afterwards."""
    for path in isolated_celery_config(tmp_path, redis_url):
        config = yaml.safe_load(path.read_text())
        runs = yaml.safe_load(RUNS_CONFIG.read_text())
        source = config["execution"]["config"]["config_source"]
        source["task_track_started"] = runs["execution"]["config"]["config_source"][
            "task_track_started"
        ]
        path.write_text(yaml.safe_dump(config))
        yield path


def test_the_runs_celery_config_is_celery_yaml_with_tracked_starts() -> None:
    runs = yaml.safe_load(RUNS_CONFIG.read_text())
    shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())
    assert runs["execution"]["config"]["config_source"].pop("task_track_started") is True
    assert runs == shipped


@pytest.fixture
def tracking_uri(mlflow_uri: str) -> str:
    """A SQLite store (running_dagster_dev's): what is tested here is the launcher."""
    return mlflow_uri


def test_the_celery_profile_is_the_team_profile_with_its_run_launcher() -> None:
    celery, team = (yaml.safe_load(path.read_text()) for path in (PROFILE, TEAM))
    launcher = celery.pop("run_launcher")
    assert celery == team
    assert launcher["module"] == "agents_pipelines.orchestration.celery_launcher"
    assert launcher["class"] == "AgentsCeleryRunLauncher"


def launcher_profile(celery_config: Path) -> str:
    """deploy/celery/dagster.yaml with run monitoring's intervals at a second, and the
    launcher's Redis keys under the test's prefix (the workers' celery.yaml's)."""
    profile = yaml.safe_load(with_short_intervals(PROFILE))
    source = yaml.safe_load(celery_config.read_text())["execution"]["config"]["config_source"]
    profile["run_launcher"]["config"]["config_source"] = {
        "broker_transport_options": source["broker_transport_options"],
        "result_backend_transport_options": source["result_backend_transport_options"],
    }
    return yaml.safe_dump(profile)


@pytest.fixture
def celery_dev(
    tmp_path: Path,
    migrated_mlflow_db: Path,
    celery_config: Path,
    deployment: dict[str, str],  # noqa: F811
    gemini: GeminiLoopbackServer,
) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """`dagster dev` on the Celery profile and one Celery worker (2 pool processes) that
    runs its runs in-process: the webserver's URL, DAGSTER_HOME and the worker."""
    dev = tmp_path / "dev"
    dev.mkdir()
    env = {
        name: deployment[name]
        for name in ("AGENTS_PIPELINES_CELERY_BROKER", "AGENTS_PIPELINES_CELERY_BACKEND")
    }
    env["AGENTS_PIPELINES_EXECUTOR"] = "in_process"
    profile = launcher_profile(celery_config)
    with running_dagster_dev(dev, migrated_mlflow_db, {"daily.yaml": DAILY}, env, profile) as (
        url,
        home,
    ):
        worker_env = {
            **deployment,
            **env,
            "DAGSTER_HOME": str(home),
            "AGENTS_PIPELINES_WORKFLOWS_DIR": str(dev / "workflows"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{dev / 'mlflow.db'}",
        }
        log = tmp_path / "worker.log"
        worker = start_worker("runs", worker_env, log)
        try:
            wait_until(lambda: b" ready." in log.read_bytes(), 120, "the Celery worker")
            yield url, home, worker
        finally:
            if worker.poll() is None:  # a step that still runs would hold a warm shutdown
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)


def slow_polish(gemini: GeminiLoopbackServer) -> threading.Event:
    """The second node's first Gemini call never answers in time: set once it has arrived."""
    polishing = threading.Event()

    def reply(request: RecordedRequest) -> Reply:
        if "Polish" in request.prompt_text and not polishing.is_set():
            polishing.set()
            return replace(default_reply(request), delay_s=300)
        return default_reply(request)

    gemini.set_default(reply)
    return polishing


def session_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[3])


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.xdist_group("concurrency")  # one many-process test at a time
@pytest.mark.timeout(900)  # dagster dev and a worker start, three runs, on a shared machine
def test_a_celery_task_run_succeeds_fails_when_its_pool_process_dies_and_cancels(
    celery_dev: tuple[str, Path, subprocess.Popen[bytes]],
    gemini: GeminiLoopbackServer,
) -> None:
    """Three runs on one deployment (one `dagster dev` and one worker, as a team runs them):
    one that succeeds in a pool process, one whose pool process is killed, one terminated."""
    url, home, worker = celery_dev

    # 1. A run launched as a Celery task succeeds in a pool process of the worker.
    gemini.set_default(default_reply)
    run_id = launch_run(url, "daily")
    assert final_status(url, run_id) == "SUCCESS"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        pid = step_pid(instance, run_id)
        event = instance.get_latest_materialization_event(dg.AssetKey("daily"))
        assert event is not None and event.asset_materialization is not None
        metadata = metadata_values(event.asset_materialization.metadata)
        assert pool_is_free(instance)
    assert pid is not None and session_of(pid) == worker.pid  # a pool process of the worker
    assert metadata["llm_calls"] == 2
    assert metadata["total_cost_usd"] == round(2 * CALL_USD, 9)
    assert len(gemini.requests) == 2

    # 2. Its pool process killed mid-run: the run fails, the slot comes back.
    polishing = slow_polish(gemini)
    run_id = launch_run(url, "daily")
    wait_until(polishing.is_set, 180, "the run's second Gemini call")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        pid = step_pid(instance, run_id)
        assert pid is not None and session_of(pid) == worker.pid
        os.kill(pid, signal.SIGKILL)  # as the out-of-memory killer does
        # Stock launcher: the task delivered again ends as a duplicate, SUCCESS, and the run
        # stays STARTED for a day.
        assert final_status(url, run_id) == "FAILURE"
        wait_until(lambda: pool_is_free(instance), 60, "the killed run's slot")
        messages = [
            record.dagster_event.message or ""
            for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            if record.dagster_event is not None
        ]
    assert any("the task delivered again found the run already started" in m for m in messages)
    assert worker.poll() is None  # the worker lived on

    # 3. Terminated from the UI: the run ends CANCELED (stock launcher: FAILURE).
    polishing = slow_polish(gemini)
    run_id = launch_run(url, "daily")
    wait_until(polishing.is_set, 180, "the run's second Gemini call")
    terminated = graphql(url, TERMINATE, {"runId": run_id})["terminateRun"]
    assert terminated["__typename"] == "TerminateRunSuccess", terminated
    assert final_status(url, run_id) == "CANCELED"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        wait_until(lambda: pool_is_free(instance), 60, "the terminated run's slot")
    assert worker.poll() is None
