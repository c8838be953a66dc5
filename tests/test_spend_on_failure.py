"""What a failed or stopped run says it spent: once, and with the calls a stop cut short.

The real Gemini client calls the loopback server, through Dagster's ``materialize``."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import dagster as dg

from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, Reply
from conftest import metadata_values, wait_until, workflow_yaml, write

UNTRACKED = "observability: {mlflow: {enabled: false}}"


def test_a_spend_limit_failure_states_the_spend_once(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    # One call ($0.0002431 at the server's default usage) reaches the limit: the second
    # call is refused, with the spend of the first in the message.
    text = workflow_yaml(
        "capped",
        ("outline", "Outline {topic}.", "outline"),
        ("summarize", "Summarize {outline}.", "summary"),
        orchestration="inputs: {topic: cats}\nspend_limits:\n  - {per: day, max_cost_usd: 0.0002}",
        config=UNTRACKED,
    )
    asset = build_workflow_asset(load_workflow(write(tmp_path, text)))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset],
            instance=instance,
            resources={"workflow_runner": WorkflowRunner()},
            raise_on_error=False,
        )
    assert not result.success and len(gemini.requests) == 1
    failure = result.failure_data_for_node("capped")
    assert failure is not None and failure.user_failure_data is not None
    message = failure.error.message
    assert "the spend limit of workflow capped's day (UTC) is reached" in message
    assert message.count("Spent before failing:") == 1, message
    assert "Spent before failing: $0.000243 over 1 LLM call(s), 205 tokens." in message
    assert metadata_values(failure.user_failure_data.metadata)["llm_calls"] == 1


MAPPED = """\
schema_version: "1"
flow: {name: mapped}
state:
  fields:
    reviews: {type: "list[str]", required: true}
    labels: {type: "list[str]"}
nodes:
  - id: classify
    map: {over: reviews, as: review, max_concurrency: 3}
    prompt: "Classify {review}"
    outputs: [labels]
edges:
  - {from: START, to: classify}
  - {from: classify, to: END}
config:
  llm: {timeout_s: 600, max_retries: 0}
  observability: {mlflow: {enabled: false}}
orchestration:
  inputs: {reviews: [a, b, c, d]}
"""


def test_calls_a_stop_cuts_short_in_flight_are_counted_unpriced(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    # Item 0 is answered; items 1 to 3 hang until the run is stopped (Ctrl-C). Keyed on the
    # prompt, not the order: items 0 to 2 start together, and any of them may arrive first.
    gemini.set_default(
        lambda request: (
            Reply.text_reply("positive") if request.prompt_text == "Classify a" else Fault.hang(600)
        )
    )
    asset = build_workflow_asset(load_workflow(write(tmp_path, MAPPED)))

    def stop_once_all_are_in_flight() -> None:
        wait_until(lambda: len(gemini.requests) == 4, 60, "four requests in flight")
        os.kill(os.getpid(), signal.SIGINT)

    stopper = threading.Thread(target=stop_once_all_are_in_flight, daemon=True)
    stopper.start()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [asset],
            instance=instance,
            resources={"workflow_runner": WorkflowRunner()},
            raise_on_error=False,
        )
    stopper.join()
    failure = result.failure_data_for_node("mapped")
    assert failure is not None and failure.user_failure_data is not None
    meta = metadata_values(failure.user_failure_data.metadata)
    assert (meta["llm_calls"], meta["cancelled_calls"], meta["total_tokens"]) == (4, 3, 205)
    statuses = sorted((row.data["item"], row.data["status"]) for row in meta["node_calls"].records)
    assert statuses == [(0, "ok"), (1, "cancelled"), (2, "cancelled"), (3, "cancelled")]
    assert "3 cancelled in flight by the stop, counted unpriced" in failure.error.message
