"""Batch Mode through Dagster: a job is paid once across a run's attempts, a budget judges a
job whole before it is submitted, its progress is in the run's log. The real google-genai
client against the loopback server's Batch API; `dg.materialize` and re-execution."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import BatchScript, GeminiLoopbackServer, Reply
from conftest import REPO, materialize_command, metadata_of, metadata_values, wait_until, write
from reexecutable_job import WORKFLOWS_ENV, workflows_job

LABELS = """\
schema_version: "1"
flow: {name: labels}
state:
  fields:
    reviews: {type: "list[str]", required: true}
    labels: {type: "list[str]", choices: [good, bad]}
    summary: {type: str}
nodes:
  - id: label
    map: {over: reviews, as: review}
    prompt: "Label this review: {review}"
    outputs: [labels]
  - id: sum
    prompt: "Summarize {labels}"
    outputs: [summary]
edges:
  - {from: START, to: label}
  - {from: label, to: sum}
  - {from: sum, to: END}
config:
  llm: {batch: {poll_s: 0.05}, max_retries: 0}
orchestration:
  inputs: {reviews: [great, awful, fine]}
  retry: {max_retries: RETRIES, delay_s: 0}
"""
# More jobs than the display-name search looks through (llm.batch._ATTACH_SEARCH): a busy
# project, where a run's job is no longer among the newest few hundred.
OTHER_JOBS = 450


def labels(retries: int, extra: str = "") -> str:
    return LABELS.replace("RETRIES", str(retries)) + extra


def own_jobs(server: GeminiLoopbackServer) -> list[tuple[tuple[str, ...], str]]:
    """The test's jobs (the other runs' jobs have no items), as (keys, state)."""
    return [(job.keys, job.state) for job in server.batch_jobs if job.keys]


def materialize(path: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_workflow_asset(load_workflow(path))],
        resources={"workflow_runner": WorkflowRunner()},
        instance=instance,
        raise_on_error=False,
    )


@pytest.fixture
def instance(tmp_path: Path) -> dg.DagsterInstance:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def test_a_step_retry_attaches_to_the_job_its_first_attempt_submitted(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """The map's job runs on at Gemini while a poll fails (503): the attempt fails, and the
    step's retry reads the job's checkpointed name and waits for that job. The job list is
    long (other runs' jobs), so only the checkpointed name finds it."""
    gemini.add_finished_batch_jobs(OTHER_JOBS)
    gemini.plan_batches(BatchScript(failed_polls=(2,)))
    gemini.plan(*(Reply.json_reply({"labels": label}) for label in ("good", "bad", "good")))
    result = materialize(write(tmp_path, labels(retries=1)), instance)
    assert result.success
    assert result.asset_value("labels")["labels"] == ["good", "bad", "good"]
    # One job for the map (submitted once, answered once), one for `sum`.
    assert own_jobs(gemini) == [(("0", "1", "2"), "SUCCEEDED"), (("0",), "SUCCEEDED")]
    assert len(gemini.requests) == 4  # each request answered, and billed, once
    meta = metadata_of(result, "labels")
    jobs = [row.data for row in meta["batch_jobs"].records]
    assert [(job["requests"], job["attached"]) for job in jobs] == [(3, True), (1, False)]
    assert [row.data["outcome"] for row in meta["attempts"].records] == ["retried", "succeeded"]


def test_a_re_execution_from_failure_resumes_and_attaches_to_the_running_job(
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`sum`'s job is submitted, then its poll fails and the run fails (no step retry).
    "Re-execute from failure" resumes after `label` (not called again) and attaches to
    `sum`'s job, still running at Gemini."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    write(folder, labels(retries=0))
    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    gemini.add_finished_batch_jobs(OTHER_JOBS)
    gemini.plan_batches(BatchScript(), BatchScript(failed_polls=(1,)))
    job = dg.reconstructable(workflows_job)
    with dg.execute_job(job, instance, raise_on_error=False) as first:
        assert not first.success
    assert own_jobs(gemini) == [(("0", "1", "2"), "SUCCEEDED"), (("0",), "PENDING")]
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    with dg.execute_job(job, instance, reexecution_options=options) as second:
        assert second.success
        (event,) = second.asset_materializations_for_node("labels")
    assert own_jobs(gemini) == [(("0", "1", "2"), "SUCCEEDED"), (("0",), "SUCCEEDED")]
    meta = metadata_values(event.metadata)
    resumed = [(r.data["node"], r.data["item"]) for r in meta["resumed"].records]
    assert sorted(resumed) == [("label", 0), ("label", 1), ("label", 2)]
    ((sum_job),) = [row.data for row in meta["batch_jobs"].records]
    assert (sum_job["requests"], sum_job["attached"]) == (1, True)
    assert len(gemini.requests) == 4


def test_a_budget_below_the_jobs_estimate_refuses_to_submit_it(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Each review alone fits the budget; the three together, as one job, do not: the job
    is not submitted, so nothing is paid."""
    review = "word " * 800  # 4,000 characters: about 1,000 prompt tokens, $0.00015 each
    text = labels(retries=0, extra="  budget: {max_cost_usd: 0.0003}\n").replace(
        "inputs: {reviews: [great, awful, fine]}",
        f"inputs: {{reviews: ['{review}a', '{review}b', '{review}c']}}",
    )
    result = materialize(write(tmp_path, text), instance)
    assert not result.success
    assert gemini.batch_jobs == [] and gemini.requests == []
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None
    assert "stopped before submitting the batch job of `label` (3 requests)" in failure.message
    assert "over max_cost_usd $0.000300" in failure.message
    (check,) = result.get_asset_check_evaluations()  # the budget holds: nothing was spent
    assert (check.check_name, check.passed) == ("budget", True)
    assert check.metadata["total_cost_usd"].value == 0.0


def test_a_pool_spend_limit_below_the_jobs_estimate_refuses_to_submit_it(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    review = "word " * 800  # about $0.00015 of prompt per review at the batch price
    text = labels(retries=0).replace(
        "inputs: {reviews: [great, awful, fine]}",
        f"inputs: {{reviews: ['{review}a', '{review}b', '{review}c']}}",
    )
    result = dg.materialize(
        [build_workflow_asset(load_workflow(write(tmp_path, text)))],
        resources={
            "workflow_runner": WorkflowRunner(pool_spend_limits={"gemini": {"day": 0.0003}})
        },
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    assert gemini.batch_jobs == [] and gemini.requests == []
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None
    assert (
        "stopped before submitting the batch job of `label` (3 requests), unsent: about "
        "$0.00045" in failure.message
    )
    assert "would pass the spend limit of pool gemini's day (UTC)" in failure.message


def test_the_jobs_state_and_progress_are_in_the_runs_event_log(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    gemini.plan(*(Reply.json_reply({"labels": label}) for label in ("good", "bad", "good")))
    result = materialize(write(tmp_path, labels(retries=0)), instance)
    assert result.success
    records = instance.all_logs(result.run_id)
    lines = [r.user_message for r in records if r.user_message.startswith("Batch job ")]
    (first, second) = [job.name for job in gemini.batch_jobs]
    assert lines[:4] == [
        f"Batch job {first} submitted: node label, 3 request(s), PENDING",
        f"Batch job {first}: RUNNING, 1/3 done",
        f"Batch job {first}: SUCCEEDED, 3/3 done",
        f"Batch job {second} submitted: node sum, 1 request(s), PENDING",
    ]
    assert lines[4:] == [
        f"Batch job {second}: RUNNING, 0/1 done",
        f"Batch job {second}: SUCCEEDED, 1/1 done",
    ]


def test_a_recorded_batch_run_replays_offline_with_equal_figures(
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Record a materialization whose nodes run in batch mode (the job's create, polls and
    answers), then replay it with the server stopped and no key: the same outputs, calls,
    tokens, cost and jobs. The replay's run has another id, so another job display name."""
    cassette = tmp_path / "batch.jsonl"
    monkeypatch.setenv("AGENTS_PIPELINES_CASSETTE", str(cassette))
    monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "record")
    gemini.plan(*(Reply.json_reply({"labels": label}) for label in ("good", "bad", "good")))
    path = write(tmp_path, labels(retries=0))
    recorded = materialize(path, instance)
    assert recorded.success
    endpoints = [
        json.loads(line)["request"]["endpoint"] for line in cassette.read_text().splitlines()
    ]
    assert endpoints.count("models/gemini-2.5-flash:batchGenerateContent") == 2
    gemini.stop()
    monkeypatch.delenv("GOOGLE_API_KEY")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9/elsewhere/")
    monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "replay")
    replayed = materialize(path, instance)
    assert replayed.success
    assert replayed.asset_value("labels") == recorded.asset_value("labels")
    before, after = metadata_of(recorded, "labels"), metadata_of(replayed, "labels")
    figures = ("llm_calls", "total_tokens", "total_cost_usd", "saved_vs_interactive_usd")
    assert {k: before[k] for k in figures} == {k: after[k] for k in figures}
    assert before["llm_calls"] == 4 and before["total_cost_usd"] > 0
    jobs = [[row.data for row in m["batch_jobs"].records] for m in (before, after)]
    assert jobs[0] == jobs[1]
    assert [job["requests"] for job in jobs[1]] == [3, 1]


@pytest.mark.slow
def test_a_sigterm_to_dagster_asset_materialize_cancels_the_running_job(
    mlflow_uri: str, gemini: GeminiLoopbackServer, tmp_path: Path
) -> None:
    """A stop (SIGTERM, as Dagster's Terminate sends the run's process) cancels the job at
    Gemini: what it has not answered yet is not billed."""
    home, workflows = tmp_path / "dagster_home", tmp_path / "workflows"
    home.mkdir()
    workflows.mkdir()
    write(workflows, labels(retries=2))
    gemini.plan_batches(BatchScript.never_done())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AGENTS_PIPELINES_WORKFLOWS_DIR": str(workflows),
    }
    with open(tmp_path / "materialize.log", "wb") as log:
        process = subprocess.Popen(
            materialize_command("labels"), env=env, cwd=REPO, stdout=log, stderr=log
        )
    try:
        wait_until(
            lambda: gemini.batch_jobs and gemini.batch_jobs[0].polls >= 2, 240, "a running job"
        )
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log_text = (tmp_path / "materialize.log").read_text(errors="replace")
    assert process.returncode != 0, log_text[-3000:]
    (job,) = gemini.batch_jobs  # no retry, no second job
    assert (job.state, job.cancel_requests) == ("CANCELLED", 1), log_text[-3000:]
    assert gemini.requests == []  # nothing answered, nothing billed
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        failures = [
            r.dagster_event.step_failure_data
            for r in instance.all_logs(run.run_id)
            if r.dagster_event is not None and r.dagster_event.event_type_value == "STEP_FAILURE"
        ]
    (failure,) = failures
    assert failure.user_failure_data is not None
    assert "was stopped" in failure.user_failure_data.description


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_job_names_live_in_the_runs_thread_beside_its_checkpoints(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """On both stores a Dagster instance uses: a name replaced (its job died) reads back
    new, the graph's own namespace stays empty (nothing to resume), and deleting the
    thread (a run that succeeds, pruning) deletes the names."""
    from agents_pipelines.graph.batch_job_names import CheckpointedJobNames
    from agents_pipelines.orchestration.stores import checkpoints
    from agents_pipelines.registry import ProcessRegistry

    registry = ProcessRegistry()
    if store == "postgres":
        url = request.getfixturevalue("postgres_database_factory")()
        opened = checkpoints.postgres_saver(url, registry)
    else:
        home = tmp_path / "home"
        home.mkdir()
        opened = checkpoints.open_saver(dg.DagsterInstance.local_temp(str(home)), registry)
    with opened as saver:
        names = CheckpointedJobNames(saver, "run-1|labels|")
        names.put("label abc", "batches/1")
        names.put("sum def", "batches/2")
        names.put("label abc", "batches/3")
        again = CheckpointedJobNames(saver, "run-1|labels|")  # as a retry's process reads it
        assert (again.get("label abc"), again.get("sum def")) == ("batches/3", "batches/2")
        assert CheckpointedJobNames(saver, "run-2|labels|").get("label abc") is None
        graph = {"configurable": {"thread_id": "run-1|labels|", "checkpoint_ns": ""}}
        assert saver.get_tuple(graph) is None
        saver.delete_thread("run-1|labels|")
        assert again.get("label abc") is None
