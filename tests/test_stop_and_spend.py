"""A stop ends a run without a retry, and a failed run keeps the spend of every attempt.

The real Gemini client against the loopback server throughout; stops are real signals to
`dagster asset materialize` and a real Terminate through `dagster dev`'s GraphQL API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow import MlflowClient

from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.testing.gemini_server import default_reply
from conftest import (
    LINEAR,
    REPO,
    materialize_command,
    metadata_values,
    wait_until,
    workflow_yaml,
    write,
)
from test_dagster_dev_e2e import final_status, graphql, launch_run, running_dagster_dev

# The loopback server's default usage per answered call: 120 prompt + 60 candidates + 25
# thoughts.
CALL_TOKENS = 205
STEP_EVENTS = {"STEP_UP_FOR_RETRY", "STEP_RESTARTED", "STEP_FAILURE", "STEP_SUCCESS"}


def two_calls(name: str) -> str:
    """Two calls in a row: the first is answered, the second is where faults are planned."""
    return workflow_yaml(
        name,
        ("outline", "Outline {topic}.", "outline"),
        ("summarize", "Summarize {outline}.", "summary"),
        orchestration="inputs: {topic: cats}\nretry: {max_retries: 2, delay_s: 0}",
        config="llm: {timeout_s: 600, max_retries: 0}",
    )


def step_events(instance: dg.DagsterInstance, run_id: str) -> list[Any]:
    return [
        record.dagster_event
        for record in instance.all_logs(run_id)
        if record.dagster_event is not None and record.dagster_event.event_type_value in STEP_EVENTS
    ]


def failure_metadata(event: Any) -> dict[str, Any]:
    data = event.step_failure_data.user_failure_data
    assert data is not None, event.step_failure_data.error
    return metadata_values(data.metadata)


def only_mlflow_run(tracking_uri: str, experiment: str) -> Any:
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


def cost_summary(tracking_uri: str, run_id: str) -> dict[str, Any]:
    path = MlflowClient(tracking_uri).download_artifacts(run_id, "cost_summary.json")
    return dict(json.loads(Path(path).read_text()))


# 1. A stop ends the run without a retry --------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_to_dagster_asset_materialize_stops_the_run_without_a_retry(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer, stop: signal.Signals
) -> None:
    home, workflows = tmp_path / "dagster_home", tmp_path / "workflows"
    home.mkdir()
    workflows.mkdir()
    # Two independent workflows in one run: the one that starts first is stopped in its
    # second call, and the other must not start.
    for name in ("first", "second"):
        write(workflows, two_calls(name), f"{name}.yaml")
    gemini.plan(Reply.text_reply("an outline"), Fault.hang(600))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AGENTS_PIPELINES_WORKFLOWS_DIR": str(workflows),
    }
    with open(tmp_path / "materialize.log", "wb") as log:
        process = subprocess.Popen(
            materialize_command("first,second"), env=env, cwd=REPO, stdout=log, stderr=log
        )
    try:
        wait_until(lambda: len(gemini.requests) == 2, 240, "the second call to hang")
        process.send_signal(stop)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log_text = (tmp_path / "materialize.log").read_text(errors="replace")
    assert process.returncode != 0, log_text[-3000:]
    assert len(gemini.requests) == 2  # nothing was called again after the stop

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)
        events = step_events(instance, run.run_id)
    assert [e.event_type_value for e in events] == ["STEP_FAILURE"] * 2, log_text[-3000:]
    stopped, never_started = events
    assert never_started.step_failure_data.user_failure_data is None  # stopped as it began
    meta = failure_metadata(stopped)
    assert meta["total_tokens"] == CALL_TOKENS and meta["all_attempts_total_tokens"] == CALL_TOKENS
    description = stopped.step_failure_data.user_failure_data.description
    assert "was stopped" in description and f"{CALL_TOKENS} tokens" in description

    mlflow_run = only_mlflow_run(mlflow_uri, stopped.step_key)
    assert mlflow_run.info.status == "FAILED"
    assert mlflow_run.data.metrics["total_tokens"] == CALL_TOKENS
    summary = cost_summary(mlflow_uri, mlflow_run.info.run_id)
    assert summary["status"] == "failed" and summary["totals"]["total_tokens"] == CALL_TOKENS
    assert MlflowClient(mlflow_uri).get_experiment_by_name(never_started.step_key) is None


TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) { __typename }
}
"""


@pytest.mark.slow
def test_terminate_in_the_ui_cancels_the_run_without_a_retry(
    tmp_path: Path, migrated_mlflow_db: Path, gemini: GeminiLoopbackServer
) -> None:
    gemini.plan(Reply.text_reply("an outline"), Fault.hang(600))
    workflows = {"terminated.yaml": two_calls("terminated")}
    env = {"AGENTS_PIPELINES_LLM_BACKEND": "gemini"}
    with running_dagster_dev(tmp_path, migrated_mlflow_db, workflows, env) as (url, home):
        run_id = launch_run(url, "terminated")
        wait_until(lambda: len(gemini.requests) == 2, 240, "the second call to hang")
        terminated = graphql(url, TERMINATE, {"runId": run_id})["terminateRun"]
        assert terminated["__typename"] == "TerminateRunSuccess", terminated
        assert final_status(url, run_id) == "CANCELED"
        with dg.DagsterInstance.from_config(str(home)) as instance:
            events = step_events(instance, run_id)
    assert [e.event_type_value for e in events] == ["STEP_FAILURE"]
    assert failure_metadata(events[0])["total_tokens"] == CALL_TOKENS
    assert len(gemini.requests) == 2  # not executed again

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_run = only_mlflow_run(tracking_uri, "terminated")
    assert mlflow_run.info.status == "FAILED"
    summary = cost_summary(tracking_uri, mlflow_run.info.run_id)
    assert summary["status"] == "failed" and summary["totals"]["total_tokens"] == CALL_TOKENS


# 2. A failed run keeps the spend of every attempt -----------------------------------------


def materialize(tmp_path: Path, text: str) -> dg.ExecuteInProcessResult:
    workflow = load_workflow(write(tmp_path, text))
    return dg.materialize(
        [build_workflow_asset(workflow)],
        resources={"workflow_runner": WorkflowRunner()},
        raise_on_error=False,
    )


def fail_the_second_call(fault: Fault) -> Any:
    """A default answer for the loopback server: the outline call succeeds, the summary
    call gets ``fault``."""

    def answer(request: RecordedRequest) -> Reply | Fault:
        return fault if request.prompt_text.startswith("Summarize") else default_reply(request)

    return answer


def attempts_of(meta: dict[str, Any]) -> list[tuple[int, str, int, int]]:
    return [
        (row.data["attempt"], row.data["outcome"], row.data["llm_calls"], row.data["total_tokens"])
        for row in meta["attempts"].records
    ]


def test_rate_limits_on_every_attempt_fail_with_the_spend_of_all_three(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    gemini.set_default(fail_the_second_call(Fault.rate_limit(retry_after_s=0)))
    result = materialize(tmp_path, two_calls("limited"))
    assert not result.success
    # 2 calls, then each retry resumes after `outline` and calls `summarize` only.
    assert len(gemini.requests) == 4
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 2
    failure = result.failure_data_for_node("limited")
    assert failure is not None and failure.user_failure_data is not None
    description = failure.user_failure_data.description or ""
    assert "Exceeded max_retries" not in description and "Gemini 429" in description
    assert "All 3 attempts of this run together spent $" in description
    meta = metadata_values(failure.user_failure_data.metadata)
    assert attempts_of(meta) == [
        (1, "retried", 2, CALL_TOKENS),
        (2, "retried", 1, 0),
        (3, "failed", 1, 0),
    ]
    assert meta["total_tokens"] == 0  # this attempt's, as in its MLflow run
    assert meta["all_attempts_total_tokens"] == CALL_TOKENS
    assert meta["all_attempts_llm_calls"] == 4
    assert meta["total_cost_usd"] == 0
    assert meta["all_attempts_cost_usd"] > 0
    # Each attempt is its own FAILED MLflow run: the three add up to the same total.
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("limited").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"] * 3
    assert sum(r.data.metrics["total_tokens"] for r in runs) == CALL_TOKENS
    costs = sum(r.data.metrics["total_cost_usd"] for r in runs)
    assert costs == pytest.approx(meta["all_attempts_cost_usd"], abs=1e-9)


def test_server_errors_then_a_permanent_error_fail_with_the_spend_of_every_attempt(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    # The retries resume after `outline`: each calls `summarize` only.
    gemini.plan(
        Reply.text_reply("outline 1"),
        Fault.server_error(503),
        Fault.server_error(500),
        Fault.bad_request("the prompt is refused"),
    )
    result = materialize(tmp_path, two_calls("flaky"))
    assert not result.success and gemini.pending == 0
    failure = result.failure_data_for_node("flaky")
    assert failure is not None and failure.user_failure_data is not None
    assert "Gemini 400" in (failure.user_failure_data.description or "")
    meta = metadata_values(failure.user_failure_data.metadata)
    assert attempts_of(meta) == [
        (1, "retried", 2, CALL_TOKENS),
        (2, "retried", 1, 0),
        (3, "failed", 1, 0),
    ]
    errors = [row.data["error"] for row in meta["attempts"].records]
    assert "Gemini 503" in errors[0] and "Gemini 500" in errors[1] and "Gemini 400" in errors[2]
    assert meta["all_attempts_total_tokens"] == CALL_TOKENS


def test_success_after_a_retry_reports_every_attempt_too(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    gemini.plan(Reply.text_reply("outline 1"), Fault.server_error(503))
    result = materialize(tmp_path, two_calls("recovered"))
    assert result.success
    (event,) = result.asset_materializations_for_node("recovered")
    meta = metadata_values(event.metadata)
    # The retry resumes after `outline`: it calls `summarize` only.
    assert attempts_of(meta) == [
        (1, "retried", 2, CALL_TOKENS),
        (2, "succeeded", 1, CALL_TOKENS),
    ]
    assert meta["total_tokens"] == CALL_TOKENS
    assert meta["all_attempts_total_tokens"] == 2 * CALL_TOKENS
    assert [row.data["node"] for row in meta["resumed"].records] == ["outline"]


def test_required_tracking_that_fails_after_the_calls_reports_their_spend(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    artifact_root = tmp_path / "mlruns"  # where the SQLite store keeps artifacts (cwd)

    def break_the_artifact_store_then_answer(request: RecordedRequest) -> Reply:
        # While the call is in flight the artifact store goes away: a file now stands where
        # its folder would be, so the run's artifacts cannot be logged when it ends.
        artifact_root.write_text("not a folder")
        return default_reply(request)

    gemini.set_default(break_the_artifact_store_then_answer)
    text = LINEAR + "config:\n  observability:\n    mlflow: {required: true}\n"
    result = materialize(tmp_path, text)
    assert not result.success and len(gemini.requests) == 1
    failure = result.failure_data_for_node("linear")
    assert failure is not None and failure.user_failure_data is not None
    description = failure.user_failure_data.description or ""
    assert description.startswith("MLflow tracking failed for workflow linear:")
    assert "Spent before failing: $" in description and f"{CALL_TOKENS} tokens" in description
    meta = metadata_values(failure.user_failure_data.metadata)
    assert meta["llm_calls"] == 1 and meta["total_tokens"] == CALL_TOKENS
    assert meta["total_cost_usd"] > 0
