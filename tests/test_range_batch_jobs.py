"""A range run's batch node (issue 22 sections 1 and 3): the calls of the partitions running
at once go in ONE Batch API job, each partition still reporting its own share (metadata,
cost, batch_jobs), and a step retry after a failed poll attaches to that one job. The real
google-genai client against the loopback server's Batch API, through `dg.materialize`."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from agents_pipelines.orchestration import WorkflowIOManager, WorkflowRunner, build_workflow_asset
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import BatchScript, GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.testing.gemini_server import Usage
from conftest import metadata_values, wait_until, write
from test_dagster_dev_e2e import BACKFILL, final_status, graphql, launch_run, running_dagster_dev

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
RANGE = {
    "dagster/asset_partition_range_start": DAYS[0],
    "dagster/asset_partition_range_end": DAYS[-1],
}
RESOURCES = {"workflow_runner": WorkflowRunner(), "io_manager": WorkflowIOManager()}
LABELS = """\
schema_version: "1"
flow: {name: labels}
state:
  fields:
    day: {type: str, required: true}
    reviews: {type: "list[str]", required: true}
    labels: {type: "list[str]", choices: [good, bad]}
nodes:
  - id: label
    map: {over: reviews, as: review}
    prompt: "Label the review of {day}: {review}"
    outputs: [labels]
edges:
  - {from: START, to: label}
  - {from: label, to: END}
config:
  llm: {batch: {poll_s: 0.05}, max_retries: 0}
orchestration:
  partitions:
    daily: {start: "2026-11-01", field: day}
  backfill: {max_partitions_per_run: 12, max_concurrency: 3}
  inputs: {reviews: [great, awful, fine, meh]}
  retry: {max_retries: RETRIES, delay_s: 0}
"""
# An interactive node at the flex tier, backfilled beside LABELS by the same daemon.
VERDICTS = """\
schema_version: "1"
flow: {name: verdicts}
state:
  fields:
    day: {type: str, required: true}
    verdict: {type: str}
nodes:
  - id: verdict
    prompt: "One word for the day {day}."
    outputs: [verdict]
edges:
  - {from: START, to: verdict}
  - {from: verdict, to: END}
config:
  llm: {service_tier: flex, max_retries: 0}
orchestration:
  partitions:
    daily: {start: "2026-11-01", field: day}
  backfill: {max_partitions_per_run: 12, max_concurrency: 3}
"""
# gemini-2.5-flash's batch tier in MLflow's bundled catalog, USD per million tokens,
# written out so the test is not circular (cached reads stay at 0.03).
BATCH = {"input": 0.15, "output": 1.25, "cached": 0.03}
CACHED, CANDIDATES, THOUGHTS = 20, 60, 25


def prompt_tokens(day: str) -> int:
    """Each day's calls report a usage of their own, so a mix-up between partitions shows."""
    return 100 + 50 * DAYS.index(day)


def call_cost(day: str) -> float:
    fresh = prompt_tokens(day) - CACHED
    output = CANDIDATES + THOUGHTS
    return (fresh * BATCH["input"] + CACHED * BATCH["cached"] + output * BATCH["output"]) / 1e6


def answer(request: RecordedRequest) -> Reply:
    day = next(day for day in DAYS if day in request.prompt_text)
    if "One word" in request.prompt_text:  # VERDICTS: interactive, at the flex tier
        usage = Usage(prompt=prompt_tokens(day), candidates=10, thoughts=0, cached=0)
        return Reply.text_reply("calm", usage=usage)
    label = "bad" if "awful" in request.prompt_text else "good"
    usage = Usage(prompt=prompt_tokens(day), candidates=CANDIDATES, thoughts=THOUGHTS)
    return Reply.json_reply({"labels": label}, usage=usage)


def materialize(tmp_path: Path, retries: int) -> tuple[dg.ExecuteInProcessResult, dict]:
    workflow = load_workflow(write(tmp_path, LABELS.replace("RETRIES", str(retries))))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [build_workflow_asset(workflow)],
            instance=instance,
            resources=RESOURCES,
            tags=RANGE,
            raise_on_error=False,
        )
    events = result.asset_materializations_for_node("labels") if result.success else []
    return result, {str(e.partition): metadata_values(e.metadata) for e in events}


def assert_one_job_of_twelve(gemini: GeminiLoopbackServer) -> None:
    (job,) = gemini.batch_jobs
    assert job.state == "SUCCEEDED" and job.source == "inline"
    assert len(job.keys) == 12
    # Each partition's four requests under a key prefix of its own.
    prefixes = Counter(key.rsplit("-", 1)[0] for key in job.keys)
    assert sorted(prefixes.values()) == [4, 4, 4]
    requests = [r for r in gemini.requests if r.batch is not None]
    days = Counter(next(d for d in DAYS if d in r.prompt_text) for r in requests)
    assert days == dict.fromkeys(DAYS, 4)  # each request answered, and billed, once


def assert_each_partition_its_own_share(metas: dict, attached: bool) -> None:
    assert sorted(metas) == DAYS
    for day, meta in metas.items():
        assert meta["llm_calls"] == 4
        assert meta["total_cost_usd"] == pytest.approx(4 * call_cost(day), abs=1e-12)
        assert meta["total_tokens"] == 4 * (prompt_tokens(day) + CANDIDATES + THOUGHTS)
        (job,) = [row.data for row in meta["batch_jobs"].records]
        assert (job["requests"], job["failures"], job["attached"]) == (4, 0, attached)
        assert job["state"] == "SUCCEEDED"


def test_a_range_runs_its_partitions_batch_calls_in_one_job(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    gemini.set_default(answer)
    result, metas = materialize(tmp_path, retries=0)
    assert result.success
    assert_one_job_of_twelve(gemini)
    assert_each_partition_its_own_share(metas, attached=False)
    jobs = {meta["batch_jobs"].records[0].data["name"] for meta in metas.values()}
    assert jobs == {gemini.batch_jobs[0].name}


def test_partitions_beyond_max_concurrency_bring_their_calls_to_the_same_job(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    """One partition at a time: each makes an interactive call, then its map's calls wait
    on the batch job and it gives its slot up, so the next one starts and joins the job.
    One job of 12, and never two partitions' interactive calls at once."""
    text = LABELS.replace("RETRIES", "0").replace("max_concurrency: 3}", "max_concurrency: 1}")
    text = text.replace(
        "nodes:\n",
        'nodes:\n  - id: intro\n    prompt: "Introduce {day}"\n    outputs: [intro]\n'
        "    llm: {batch: false}\n",
    )
    text = text.replace("  fields:\n", '  fields:\n    intro: {type: str, default: ""}\n')
    text = text.replace(
        "{from: START, to: label}", "{from: START, to: intro}\n  - {from: intro, to: label}"
    )

    def reply(request: RecordedRequest) -> Reply:
        if request.prompt_text.startswith("Introduce"):
            return Reply.text_reply("hello", delay_s=0.3)
        return answer(request)

    gemini.set_default(reply)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [build_workflow_asset(load_workflow(write(tmp_path, text)))],
            instance=instance,
            resources=RESOURCES,
            tags=RANGE,
        )
    assert result.success
    (job,) = gemini.batch_jobs
    assert job.state == "SUCCEEDED" and len(job.keys) == 12
    intros = [r for r in gemini.requests if r.prompt_text.startswith("Introduce")]
    assert len(intros) == 3
    assert gemini.max_in_flight == 1  # max_concurrency: 1, though all three share the job


def test_a_step_retry_after_a_failed_poll_attaches_to_the_ranges_one_job(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    """The shared job's second poll fails (503): every partition waiting on it fails, and
    the step's retry finds the job's name in each partition's checkpoint: no new job."""
    gemini.set_default(answer)
    gemini.plan_batches(BatchScript(failed_polls=(2,)))
    result, metas = materialize(tmp_path, retries=1)
    assert result.success
    assert_one_job_of_twelve(gemini)
    assert_each_partition_its_own_share(metas, attached=True)
    for meta in metas.values():
        outcomes = [row.data["outcome"] for row in meta["attempts"].records]
        assert outcomes == ["retried", "succeeded"]


@pytest.mark.slow
def test_a_daemon_backfill_of_a_range_sends_one_job_and_a_terminate_cancels_a_job(
    tmp_path: Path, migrated_mlflow_db: Path, gemini: GeminiLoopbackServer
) -> None:
    """The UI's backfill of three days, launched by `dagster dev`'s daemon as one run of the
    range (BackfillPolicy.multi_run): one job of 12 requests, each day its own share. Beside
    it, a backfill of an interactive workflow at the flex tier: each call sent and priced at
    flex. Then, on the same deployment, the UI's Terminate of a run whose job is still
    running cancels that job at Gemini, and the run ends CANCELED."""
    gemini.set_default(answer)
    workflows = {"labels.yaml": LABELS.replace("RETRIES", "0"), "verdicts.yaml": VERDICTS}
    env = {"AGENTS_PIPELINES_LLM_BACKEND": "gemini"}
    with running_dagster_dev(tmp_path, migrated_mlflow_db, workflows, env) as (url, home):
        # Both backfills before the daemon's first tick, which then launches both.
        backfills = {asset: launch_backfill(url, asset) for asset in ("labels", "verdicts")}
        for launched in backfills.values():
            assert launched["__typename"] == "LaunchBackfillSuccess", launched
        with dg.DagsterInstance.from_config(str(home)) as instance:

            def finished(backfill_id: str) -> Sequence[dg.DagsterRun] | None:
                tag = {"dagster/backfill": backfill_id}
                runs = instance.get_runs(filters=dg.RunsFilter(tags=tag))
                return runs if runs and all(r.is_finished for r in runs) else None

            for asset, launched in backfills.items():
                runs = wait_until(
                    functools.partial(finished, launched["backfillId"]),
                    300,
                    f"the backfill's run of {asset} to finish",
                    every=1.0,
                )
                assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS]
            records = instance.fetch_materializations(dg.AssetKey("labels"), limit=10).records
            verdicts = instance.fetch_materializations(dg.AssetKey("verdicts"), limit=10).records
        assert_one_job_of_twelve(gemini)
        assert_flex_verdicts(gemini, verdicts)

        gemini.plan_batches(BatchScript.never_done())
        run_id = launch_run(url, "labels", {"dagster/partition": "2026-11-04"})
        wait_until(
            lambda: len(gemini.batch_jobs) == 2 and gemini.batch_jobs[1].polls >= 2,
            240,
            "the second run's job to be running",
        )
        terminated = graphql(url, TERMINATE, {"runId": run_id})["terminateRun"]
        assert terminated["__typename"] == "TerminateRunSuccess", terminated
        assert final_status(url, run_id) == "CANCELED"
        stopped = gemini.batch_jobs[1]
        assert (stopped.state, stopped.cancel_requests, len(stopped.keys)) == ("CANCELLED", 1, 4)
        assert len(gemini.batch_jobs) == 2  # no retry submitted a third
    materializations = [r.event_log_entry.asset_materialization for r in records]
    metas = {str(m.partition): metadata_values(m.metadata) for m in materializations if m}
    assert_each_partition_its_own_share(metas, attached=False)


def launch_backfill(url: str, asset: str) -> dict[str, Any]:
    """The UI's backfill of ``asset`` over DAYS, once the code location has loaded."""
    params = {"partitionNames": DAYS, "assetSelection": [{"path": [asset]}]}
    launched: dict[str, Any] = wait_until(
        lambda: graphql(url, BACKFILL, {"params": params})["launchPartitionBackfill"],
        120,
        "the code location to load",
    )
    return launched


def assert_flex_verdicts(gemini: GeminiLoopbackServer, records: Sequence[Any]) -> None:
    """VERDICTS' backfill: one interactive call per day, sent at the flex tier, and each
    day's materialization priced at the flex price (0.15 and 1.25 per million tokens,
    gemini-2.5-flash, as the batch tier)."""
    calls = [r for r in gemini.requests if r.batch is None]
    assert sorted(r.service_tier for r in calls) == ["flex"] * 3
    metas = {
        str(m.partition): metadata_values(m.metadata)
        for r in records
        if (m := r.event_log_entry.asset_materialization)
    }
    assert sorted(metas) == DAYS
    for day, meta in metas.items():
        ((node, tier, cost),) = [
            (row.data["node"], row.data["tier"], row.data["cost_usd"])
            for row in meta["node_calls"].records
        ]
        flex_usd = (prompt_tokens(day) * BATCH["input"] + 10 * BATCH["output"]) / 1e6
        assert (node, tier) == ("verdict", "flex")
        assert cost == pytest.approx(flex_usd, abs=1e-12)
        assert meta["total_cost_usd"] == pytest.approx(flex_usd, abs=1e-12)


TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) { __typename }
}
"""


def test_each_partitions_budget_judges_its_own_share_before_the_job_is_submitted(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    """Partition `long`'s four reviews would pass its budget at the batch price (about
    $0.00015 of prompt each); `short`'s and `other`'s fit. `long` fails before anything is
    submitted for it, and the one job goes ahead with the other two's eight requests."""
    review = "word " * 800
    partitions = (
        f"static: {{short: {{day: '{DAYS[0]}'}}, other: {{day: '{DAYS[2]}'}}, "
        f"long: {{day: '{DAYS[1]}', reviews: ['{review}a', '{review}b', '{review}c', "
        f"'{review}d']}}}}"
    )
    text = (
        LABELS.replace("RETRIES", "0")
        .replace('daily: {start: "2026-11-01", field: day}', partitions)
        .replace("  retry:", "  budget: {max_cost_usd: 0.0003}\n  retry:")
    )
    gemini.set_default(answer)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [build_workflow_asset(load_workflow(write(tmp_path, text)))],
            instance=instance,
            resources=RESOURCES,
            tags={
                "dagster/asset_partition_range_start": "short",
                "dagster/asset_partition_range_end": "long",
            },
            raise_on_error=False,
        )
    assert not result.success
    (job,) = gemini.batch_jobs
    assert len(job.keys) == 8 and job.state == "SUCCEEDED"
    assert {r.prompt_text.count("word") for r in gemini.requests} == {0}  # none of long's
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None
    assert "stopped before submitting the batch job of `label` (4 requests)" in failure.message
    rows = {row.data["partition"]: row.data for row in failure_partitions(result)}
    for kept in ("short", "other"):
        assert (rows[kept]["status"], rows[kept]["llm_calls"]) == ("finished", 4)
    long = rows["long"]
    assert (long["status"], long["total_tokens"], long["cost_usd"]) == ("failed", 0, 0.0)


def failure_partitions(result: dg.ExecuteInProcessResult) -> list[dg.TableRecord]:
    (event,) = result.get_step_failure_events()
    data = event.step_failure_data
    assert data.user_failure_data is not None
    return list(metadata_values(data.user_failure_data.metadata)["partitions"].records)
