"""A Celery worker lost mid-step (SIGKILL of the worker and its pool, as a machine that
dies; SIGSTOP of them, as one that freezes or leaves the network) on deploy/celery/ with its
shipped settings, RabbitMQ and PostgreSQL: its step runs again on the other worker within
seconds, resuming after the nodes it finished, and the run succeeds and gives its pool slot
back. (A frozen worker's step waited past 120 s with Celery's default heartbeat.)

With Celery's defaults (the message acknowledged as the worker took it) the step was lost:
the run stayed STARTED on a dead pid for 169 s and more, holding its slot (issue 19). On
Redis, with acks_late, it still waited for the step's `visibility_timeout` (an hour): the
test of a whole worker lost failed there after its 120 s. Also here: a step that kills its
process every time fails on its fourth start, and a UI Terminate of a Celery run, under
`dagster dev`, gives its slot back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from agents_pipelines.testing import GeminiLoopbackServer
from agents_pipelines.testing.gemini_server.replies import RecordedRequest, Reply, default_reply
from conftest import REPO, wait_until
from test_celery import (  # noqa: F401  (fixtures)
    DAILY,
    WORKERS,
    celery_config,
    deployment,
    rabbitmq_url,
    redis_url,
    start_worker,
    step_events,
    stop_worker,
    vhost_deletions,
)
from test_dagster_dev_e2e import final_status, graphql, launch_run, running_dagster_dev
from test_pool_slot_release import PROFILES, claimed_by, pool_is_free, with_short_intervals
from test_stop_and_spend import TERMINATE


@pytest.fixture
def tracking_uri(mlflow_uri: str) -> str:
    """A SQLite store, not test_celery's MLflow server on PostgreSQL: what is tested here is
    Celery, and the server's start (its schema on a new database) is most of a minute."""
    return mlflow_uri


@pytest.fixture
def broker_url(rabbitmq_url: str) -> str:  # noqa: F811
    """The shipped broker, RabbitMQ: it delivers a lost worker's step again as soon as the
    worker's connection drops (Redis, after the step's hour of visibility_timeout)."""
    return rabbitmq_url


@pytest.fixture
def workers(
    deployment: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """The two workers, ready; those still alive are stopped afterwards."""
    logs = {name: tmp_path / f"{name}.log" for name in WORKERS}
    started = {name: start_worker(name, deployment, log) for name, log in logs.items()}
    try:
        for name, log in logs.items():
            wait_until(lambda log=log: b" ready." in log.read_bytes(), 120, f"worker {name}")
        yield started
    finally:
        for worker in started.values():
            if worker.poll() is None:
                stop_worker(worker)


def launch(env: dict[str, str], cwd: Path, asset: str) -> subprocess.Popen[str]:
    """A run of ``asset`` in its own process, its steps sent to the workers."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "support" / "celery_driver.py"), asset],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its group: the driver and the run process it forks
    )


def ended(driver: subprocess.Popen[str]) -> dict[str, Any]:
    """The run's result once its process has ended (two minutes at most)."""
    try:
        out, err = driver.communicate(timeout=120)
    finally:
        stop_group(driver)
    assert driver.returncode == 0, err[-3000:]
    (result,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return dict(result)


def stop_group(driver: subprocess.Popen[str]) -> None:
    """Kill the driver and the run process it forked, if a run never ended."""
    if driver.poll() is None:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.xdist_group("concurrency")  # one many-process test at a time
@pytest.mark.parametrize("lost", ["worker", "frozen_worker", "pool_process"])
def test_a_step_whose_worker_dies_runs_again_and_resumes(
    lost: str,
    tmp_path: Path,
    deployment: dict[str, str],  # noqa: F811
    workers: dict[str, subprocess.Popen[bytes]],
    gemini: GeminiLoopbackServer,
) -> None:
    polishing = threading.Event()

    def reply(request: RecordedRequest) -> Reply:
        if "Polish" in request.prompt_text and not polishing.is_set():
            polishing.set()  # the second node's first call: its process dies meanwhile
            return replace(default_reply(request), delay_s=300)
        return default_reply(request)

    gemini.set_default(reply)
    driver = launch(deployment, tmp_path, "daily")
    try:
        wait_until(polishing.is_set, 180, "the step's second Gemini call")
        with dg.DagsterInstance.from_config(deployment["DAGSTER_HOME"]) as instance:
            (run,) = instance.get_runs()
            first = step_events(instance, run.run_id)
    finally:
        if not polishing.is_set():
            stop_group(driver)
    taken_by = first["worker"].split("@")[0]
    lost_worker = workers[taken_by]
    if lost == "worker":  # the worker and its pool processes, as a machine that dies
        os.killpg(lost_worker.pid, signal.SIGKILL)
        lost_worker.wait(timeout=30)
    elif lost == "frozen_worker":  # as a machine gone off the network: no FIN, no heartbeat
        os.killpg(lost_worker.pid, signal.SIGSTOP)
    else:  # the pool process running the step, as the out-of-memory killer does
        os.kill(first["pid"], signal.SIGKILL)
    killed = time.time()
    try:
        result = ended(driver)  # within its 120 s: on Redis, the step waited an hour
    finally:
        if lost == "frozen_worker":  # a stopped worker would ignore the warm shutdown
            os.killpg(lost_worker.pid, signal.SIGKILL)
            lost_worker.wait(timeout=30)
    assert result["success"], result

    with dg.DagsterInstance.from_config(deployment["DAGSTER_HOME"]) as instance:
        step = step_events(instance, result["run_id"])
        pool = instance.event_log_storage.get_concurrency_info("gemini")
    assert len(step["starts"]) == 2 and step["pid"] != first["pid"]
    if lost != "pool_process":
        (survivor,) = set(WORKERS) - {taken_by}
        assert step["worker"].split("@")[0] == survivor
    # The re-run resumed after the finished draft: it paid for the lost polish call only.
    prompts = [request.prompt_text.split()[0] for request in gemini.requests]
    assert sorted(prompts) == ["Draft", "Polish", "Polish"], prompts
    metadata: dict[str, Any] = step["metadata"]
    assert metadata["llm_calls"] == 1 and metadata["resumed_cost_usd"] > 0, metadata
    assert not pool.claimed_slots and not pool.pending_steps
    print(f"{lost} lost: the step started again {step['starts'][1] - killed:.1f} s later")


DYING_STEP = """
import os
import signal


def die(topic: str) -> dict:
    # Kills the process it runs in, as the out-of-memory killer would.
    os.kill(os.getpid(), signal.SIGKILL)
    return {}
"""
DYING = """\
schema_version: "1"
flow: {name: dying}
state:
  fields:
    topic: {type: str, required: true}
    notes: {type: str}
nodes:
  - {id: die, function: "dying_step:die", outputs: [notes]}
edges:
  - {from: START, to: die}
  - {from: die, to: END}
orchestration:
  inputs: {topic: cats}
"""


@pytest.fixture
def dying_workflow(deployment: dict[str, str], tmp_path: Path) -> str:  # noqa: F811
    """A workflow whose Python step kills its process, in the folder the workers load
    (before they start) and its module in their working directory."""
    (Path(deployment["AGENTS_PIPELINES_WORKFLOWS_DIR"]) / "dying.yaml").write_text(DYING)
    (tmp_path / "dying_step.py").write_text(DYING_STEP)
    return "dying"


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.xdist_group("concurrency")  # one many-process test at a time
def test_a_step_that_kills_its_process_every_time_fails_after_three_starts(
    tmp_path: Path,
    deployment: dict[str, str],  # noqa: F811
    dying_workflow: str,
    workers: dict[str, subprocess.Popen[bytes]],
) -> None:
    result = ended(launch(deployment, tmp_path, dying_workflow))
    assert not result["success"]
    with dg.DagsterInstance.from_config(deployment["DAGSTER_HOME"]) as instance:
        step = step_events(instance, result["run_id"])
        pool = instance.event_log_storage.get_concurrency_info("gemini")
    # Three starts died with their process; the fourth refused to run the step again.
    assert len(step["starts"]) == 4, step
    assert "has started 4 times: the process running it died under each of the 3" in step["error"]
    assert not pool.claimed_slots and not pool.pending_steps


CELERY_ENV = (
    "AGENTS_PIPELINES_EXECUTOR",
    "AGENTS_PIPELINES_CELERY_CONFIG",
    "AGENTS_PIPELINES_CELERY_BROKER",
    "AGENTS_PIPELINES_CELERY_BACKEND",
)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.xdist_group("concurrency")  # one many-process test at a time
def test_a_terminated_celery_run_gives_its_slot_back(
    tmp_path: Path,
    migrated_mlflow_db: Path,
    deployment: dict[str, str],  # noqa: F811
    workers: dict[str, subprocess.Popen[bytes]],
    gemini: GeminiLoopbackServer,
) -> None:
    # A Terminate revokes the step's Celery task, which goes on running on its worker: the
    # run stays CANCELING until run monitoring's cancel_timeout_seconds marks it CANCELED
    # (1 s here, 180 s shipped); then the daemon frees the slot its process still holds.
    polishing = threading.Event()

    def reply(request: RecordedRequest) -> Reply:
        if "Polish" in request.prompt_text:
            polishing.set()  # a step that outlasts the test: it cannot free its slot itself
            return replace(default_reply(request), delay_s=300)
        return default_reply(request)

    gemini.set_default(reply)
    dev = tmp_path / "dev"
    dev.mkdir()
    env = {name: deployment[name] for name in CELERY_ENV}
    profile = with_short_intervals(PROFILES["postgres"])
    workflows = {"daily.yaml": DAILY}
    with running_dagster_dev(dev, migrated_mlflow_db, workflows, env, profile) as (url, home):
        run_id = launch_run(url, "daily")
        wait_until(polishing.is_set, 180, "the step's second Gemini call")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert claimed_by(instance) == [run_id]
            terminated = graphql(url, TERMINATE, {"runId": run_id})["terminateRun"]
            assert terminated["__typename"] == "TerminateRunSuccess", terminated
            assert final_status(url, run_id) == "CANCELED"
            wait_until(lambda: pool_is_free(instance), 60, "the terminated run's slot")
    for worker in workers.values():  # its step still runs: a warm shutdown would wait for it
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
