"""A run longer than the tracking deadline is tracked like any other: the deadline
(observability.mlflow.timeout_s) bounds the waits on MLflow, never the workflow.

Through Dagster's ``materialize``, with the real Gemini client against the loopback
server, whose reply takes longer than the deadline."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from mlflow import MlflowClient

from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import GeminiLoopbackServer, Reply
from conftest import metadata_of, workflow_yaml, write

# The deadline, and a reply that takes longer: the run lasts past the deadline, its MLflow
# calls take a fraction of it (0.42 s on SQLite on a loaded machine, measured; but over 3 s
# once at a load average of 11, with the trace exported synchronously).
DEADLINE_S = 5
REPLY_S = DEADLINE_S + 1


def test_a_run_longer_than_the_tracking_deadline_is_tracked_and_finished(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    gemini.plan(Reply.text_reply("a slow summary", delay_s=REPLY_S))
    text = workflow_yaml(
        "slow",
        ("summarize", "Summarize {topic}.", "summary"),
        config=f"llm: {{timeout_s: 600, max_retries: 0}}\n"
        f"observability: {{mlflow: {{timeout_s: {DEADLINE_S}, async_logging: false}}}}",
    )
    asset = build_workflow_asset(load_workflow(write(tmp_path, text)))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset], instance=instance, resources={"workflow_runner": WorkflowRunner()}
        )
    meta = metadata_of(result, "slow")
    assert "tracking_warning" not in meta, meta.get("tracking_warning")
    assert meta["llm_calls"] == 1 and meta["mlflow_trace_id"]
    run = MlflowClient(mlflow_uri).get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED"  # not left RUNNING, to be closed as KILLED later
    assert run.data.metrics["total_tokens"] == meta["total_tokens"] == 205
