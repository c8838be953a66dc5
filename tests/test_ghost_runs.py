"""Runs whose process dies: SIGTERM fails the run on the record; a run left RUNNING by a
process killed outright is closed as KILLED, with its trace's spend, by the next run of
its workflow; live runs, here or on other hosts, are left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.tracing.constant import SpanAttributeKey

from agents_pipelines.registry import process_registry
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, Reply, Usage
from agents_pipelines.tracking import stale_runs
from conftest import wait_until, workflow_yaml, write

CHAIN = workflow_yaml(
    "chain",
    ("summarize", "Summarize {topic}.", "summary"),
    ("name", "Name {summary}.", "title"),
    orchestration="inputs: {topic: owls}",
    config="llm: {model: gemini-2.5-flash, timeout_s: 120, max_retries: 0}\n"
    "observability:\n  mlflow: {async_logging: false}",
)
FIRST_CALL = Usage(prompt=300, candidates=100, thoughts=50, cached=0)
CLI = Path(sys.executable).parent / "agents-pipelines"


def _start_cli(path: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    """`agents-pipelines run` on the loopback server (the `gemini` fixture's environment)."""
    return subprocess.Popen(
        [str(CLI), "run", str(path), "--input", "topic=owls"],
        cwd=tmp_path,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _only_run(status: str | None = None) -> Any:
    experiment = MlflowClient().get_experiment_by_name("chain")
    runs = MlflowClient().search_runs([experiment.experiment_id]) if experiment else []
    return [r for r in runs if status is None or r.info.status == status]


def _stored_llm_spans(run: Any) -> list[Any]:
    trace_id = run.data.tags.get(stale_runs.TRACE_TAG)
    if trace_id is None:
        return []
    try:
        spans = MlflowClient().get_trace(trace_id).data.spans
    except Exception:
        return []  # not stored yet
    return [s for s in spans if s.get_attribute(SpanAttributeKey.CHAT_USAGE)]


def _hang_on_the_second_call(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> tuple[subprocess.Popen[bytes], Path]:
    path = write(tmp_path, CHAIN)
    gemini.plan(Reply.text_reply("Owls are birds.", usage=FIRST_CALL), Fault.hang(300))
    process = _start_cli(path, tmp_path)
    wait_until(
        lambda: len(gemini.requests) >= 2 or process.poll() is not None, 240, "the second call"
    )
    assert process.poll() is None, process.communicate()[0].decode()
    return process, path


def test_sigterm_fails_the_run_with_its_spend(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    process, _ = _hang_on_the_second_call(tmp_path, gemini)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "error: stopped by SIGTERM" in output

    (run,) = _only_run()
    assert run.info.status == "FAILED"
    metrics = run.data.metrics
    assert metrics["llm_calls"] == 2  # one answered, one cut off (it cost nothing)
    assert metrics["total_tokens"] == FIRST_CALL.total
    assert metrics["total_cost_usd"] > 0
    summary_path = MlflowClient().download_artifacts(run.info.run_id, "cost_summary.json")
    summary = Path(summary_path).read_text()
    assert '"status": "failed"' in summary and f'"total": {FIRST_CALL.total}' in summary


def test_a_killed_run_is_closed_by_the_next_run_with_the_spend_its_trace_shows(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    process, path = _hang_on_the_second_call(tmp_path, gemini)
    # Spans reach the store in batches every 0.5 s as they end: wait until the first
    # call's span is stored, so the killed run has a spend on record to be closed with.
    ghost = wait_until(
        lambda: [r for r in _only_run() if _stored_llm_spans(r)], 240, "the stored span"
    )[0]
    assert not stale_runs.is_dead(ghost.data.tags, ghost.info.start_time)  # alive: kept
    process.kill()
    process.wait(timeout=30)
    assert MlflowClient().get_run(ghost.info.run_id).info.status == "RUNNING"
    assert stale_runs.is_dead(ghost.data.tags, ghost.info.start_time)

    gemini.reset()
    gemini.plan(*[Reply.text_reply("Owls.", usage=FIRST_CALL)] * 2)
    result = run_workflow(load_workflow(path), {"topic": "owls"})

    assert result.tracking is not None
    closed = MlflowClient().get_run(ghost.info.run_id)
    assert closed.info.status == "KILLED"
    assert closed.data.tags[stale_runs.CLOSED_TAG].startswith("its process died mid-run")
    metrics = closed.data.metrics
    assert metrics["llm_calls"] == 1
    assert metrics["prompt_tokens"] == FIRST_CALL.prompt
    assert metrics["total_tokens"] == FIRST_CALL.total
    # The next run made two calls of the same size: the ghost's one cost half of it.
    assert metrics["total_cost_usd"] == pytest.approx(result.usage.total_cost_usd / 2)
    assert MlflowClient().get_run(result.tracking.run_id).info.status == "FINISHED"


def test_runs_of_other_hosts_are_closed_only_past_the_age_limit(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    path = write(tmp_path, CHAIN)
    first = run_workflow(load_workflow(path), {"topic": "owls"})
    assert first.tracking is not None
    client, experiment_id = MlflowClient(), first.tracking.experiment_id
    now_ms = int(time.time() * 1000)
    elsewhere = {stale_runs.WORKFLOW_TAG: "chain", stale_runs.HOST_TAG: "elsewhere"}
    elsewhere |= {stale_runs.PID_TAG: str(os.getpid()), stale_runs.PID_STARTED_TAG: "1.00"}
    hours = 3600 * 1000
    runs = {
        "recent elsewhere": client.create_run(experiment_id, now_ms - hours, elsewhere),
        "old elsewhere": client.create_run(experiment_id, now_ms - 25 * hours, elsewhere),
        "old, no owner": client.create_run(
            experiment_id, now_ms - 25 * hours, {stale_runs.WORKFLOW_TAG: "chain"}
        ),
        "other workflow": client.create_run(
            experiment_id, now_ms - 25 * hours, {stale_runs.WORKFLOW_TAG: "other"}
        ),
    }
    process_registry().stale_runs_checked.clear()  # a new process, to the check
    run_workflow(load_workflow(path), {"topic": "owls"})
    statuses = {name: client.get_run(run.info.run_id).info.status for name, run in runs.items()}
    assert statuses == {
        "recent elsewhere": "RUNNING",
        "old elsewhere": "KILLED",
        "old, no owner": "KILLED",
        "other workflow": "RUNNING",
    }


def test_a_reused_pid_does_not_keep_a_dead_run_open() -> None:
    here = stale_runs.ProcessOwner.current()
    assert here.is_alive() and here.is_local()
    # Another live process of ours, which reports its own owner tags, then waits.
    code = (
        "import json, sys, time\n"
        "from agents_pipelines.tracking import stale_runs\n"
        "print(json.dumps(stale_runs.owner_tags()), flush=True)\n"
        "time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        owner = stale_runs.ProcessOwner.from_tags(json.loads(child.stdout.readline()))
        assert owner is not None and owner.pid == child.pid and owner.started is not None
        assert owner.is_local() and owner.is_alive()
        reused = stale_runs.ProcessOwner(owner.host, owner.pid_namespace, owner.pid, 1.0)
        assert not reused.is_alive()  # the pid lives, but it is another process
    finally:
        child.kill()
        child.wait(timeout=30)
    assert not owner.is_alive()  # gone


def test_runs_of_eight_live_processes_are_kept_and_closed_once_they_die(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    """Eight runs owned by eight live processes on this host (tests/test_load.py runs eight
    real materializations at once, and checks that all of them end FINISHED)."""
    path = write(tmp_path, CHAIN)
    first = run_workflow(load_workflow(path), {"topic": "owls"})
    assert first.tracking is not None
    client, experiment_id = MlflowClient(), first.tracking.experiment_id
    sleepers = [subprocess.Popen(["sleep", "300"]) for _ in range(8)]
    try:
        runs = [
            client.create_run(experiment_id, tags=_owned_by(sleeper.pid)).info.run_id
            for sleeper in sleepers
        ]
        process_registry().stale_runs_checked.clear()  # a new process, to the check
        run_workflow(load_workflow(path), {"topic": "owls"})
        assert {client.get_run(run).info.status for run in runs} == {"RUNNING"}
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
    process_registry().stale_runs_checked.clear()
    run_workflow(load_workflow(path), {"topic": "owls"})
    assert {client.get_run(run).info.status for run in runs} == {"KILLED"}


def _owned_by(pid: int) -> dict[str, str]:
    here = stale_runs.ProcessOwner.current()
    owner = stale_runs.ProcessOwner(here.host, here.pid_namespace, pid, None)
    started = {stale_runs.PID_STARTED_TAG: f"{stale_runs._process_start(pid):.2f}"}
    return {stale_runs.WORKFLOW_TAG: "chain", **owner.tags(), **started}
