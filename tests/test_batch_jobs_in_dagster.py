"""Batch Mode through Dagster: a job is paid once across a run's attempts, a budget judges a
job whole before it is submitted, its progress is in the run's log. The real google-genai
client against the loopback server's Batch API; `dg.materialize` and re-execution."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from reexecutable_job import WORKFLOWS_ENV, workflows_job

from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import BatchScript, GeminiLoopbackServer, Reply
from conftest import metadata_of, metadata_values, write

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
    assert lines[4:] == [f"Batch job {second}: RUNNING, 0/1 done", f"Batch job {second}: SUCCEEDED, 1/1 done"]
