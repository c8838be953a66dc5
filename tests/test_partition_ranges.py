"""Several partitions per run (`orchestration.backfill`): Dagster's multi-run backfill
policy, each partition of a range run a workflow run of its own (metadata, MLflow run,
trace, cost_summary.json), and a range that partly fails paying again only for the
partitions that had not finished. Through `dg.materialize`, a re-execution from failure and
the `dagster` CLI, with the real Gemini client and the loopback server."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow import MlflowClient

from agents_pipelines.errors import WorkflowConfigError
from agents_pipelines.orchestration import (
    WorkflowIOManager,
    WorkflowRunner,
    build_workflow_asset,
)
from agents_pipelines.orchestration.metadata_sets import RangeMetadata, UsageMetadata
from agents_pipelines.orchestration.spend_windows import spent
from agents_pipelines.spec import load_workflow, load_workflow_text
from agents_pipelines.testing import Fault, GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.testing.gemini_server import default_reply
from conftest import DAGSTER, REPO, metadata_values, write
from reexecutable_job import WORKFLOWS_ENV, workflows_job
from test_time_partitions import FLASH_COST, assert_one_truth, digest

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
# Dagster's run tags of a partition range (what a multi-run backfill sets on each run).
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
RANGE = {RANGE_START: DAYS[0], RANGE_END: DAYS[-1]}
BACKFILL = "  backfill: {max_partitions_per_run: 12, max_concurrency: 2}\n"
RESOURCES = {"workflow_runner": WorkflowRunner(), "io_manager": WorkflowIOManager()}


def ranged(name: str = "digest", retries: int = 0, extra: str = "") -> str:
    retry = f"  retry: {{max_retries: {retries}, delay_s: 0}}\n"
    # The client's own retries off: the step's retries are what is tested.
    return digest(name, extra=BACKFILL + retry + extra) + "config:\n  llm: {max_retries: 0}\n"


def day_of(request: RecordedRequest) -> str:
    return next(day for day in DAYS if day in request.prompt_text)


def fail_day(gemini: GeminiLoopbackServer, day: str, fault: Fault, times: int = 1) -> None:
    failed = Counter[str]()

    def answer(request: RecordedRequest) -> Reply | Fault:
        if day in request.prompt_text and failed[day] < times:
            failed[day] += 1
            return fault
        return default_reply(request)

    gemini.set_default(answer)


def by_partition(events: list[dg.AssetMaterialization]) -> dict[str, dict]:
    return {str(event.partition): metadata_values(event.metadata) for event in events}


def stored_state(instance: dg.DagsterInstance, day: str) -> dict:
    path = Path(instance.storage_directory()) / "digest" / day
    return pickle.loads(path.read_bytes())


# The policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "partitions",
    ['daily: {start: "2026-11-01", field: day}', 'static: {a: {day: "1"}, b: {day: "2"}}'],
)
def test_backfill_gives_the_asset_a_multi_run_policy(tmp_path: Path, partitions: str) -> None:
    text = digest(partitions=partitions, extra=BACKFILL)
    asset = build_workflow_asset(load_workflow(write(tmp_path, text)))
    assert asset.backfill_policy == dg.BackfillPolicy.multi_run(12)
    plain = build_workflow_asset(load_workflow(write(tmp_path, digest(partitions=partitions))))
    assert plain.backfill_policy is None  # Dagster's default: one run per partition


def test_backfill_settings_are_checked_with_file_and_line(tmp_path: Path) -> None:
    text = digest(extra="  backfill: {max_partitions_per_run: 0, max_concurrency: 4}\n")
    with pytest.raises(WorkflowConfigError) as caught:
        load_workflow(write(tmp_path, text))
    message = str(caught.value)
    assert "wf.yaml:16:14" in message
    assert "orchestration.backfill.max_partitions_per_run" in message
    assert "Fix: use a whole number between 1 and 1000" in message


def test_backfill_needs_static_or_time_partitions() -> None:
    text = digest().split("  partitions:")[0] + "  backfill: {max_partitions_per_run: 4}\n"
    with pytest.raises(WorkflowConfigError) as caught:
        load_workflow_text(text.replace("required: true", "default: x"), "wf.yaml")
    message = str(caught.value)
    assert "orchestration.backfill" in message
    assert "this workflow has no partitions" in message
    assert "add static or time partitions" in message


# A range run ---------------------------------------------------------------------------


def test_a_range_run_gives_each_partition_its_own_run_metadata_and_mlflow_run(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer, monkeypatch: Any
) -> None:
    asset = build_workflow_asset(load_workflow(write(tmp_path, ranged())))
    gemini.set_default(lambda request: Reply.text_reply(day_of(request), delay_s=0.3))
    # Storing each partition's value builds no Dagster instance of its own (each cost
    # about 90 ms of CPU: a new SQLite storage and its migrations).
    ephemeral = []
    built = dg.DagsterInstance.ephemeral
    monkeypatch.setattr(
        dg.DagsterInstance, "ephemeral", lambda *a, **k: ephemeral.append(1) or built(*a, **k)
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize([asset], instance=instance, resources=RESOURCES, tags=RANGE)
        assert ephemeral == []
        assert result.success
        states = {day: stored_state(instance, day) for day in DAYS}
        (run,) = instance.get_runs()
    assert sorted(day_of(r) for r in gemini.requests) == DAYS  # one call per partition
    assert gemini.max_in_flight == 2  # backfill.max_concurrency
    assert {day: state["summary"] for day, state in states.items()} == {d: d for d in DAYS}
    assert run.tags[RANGE_START] == DAYS[0]
    metas = by_partition(result.asset_materializations_for_node("digest"))
    assert sorted(metas) == DAYS
    client = MlflowClient()
    for day, meta in metas.items():
        mlflow_run = client.get_run(meta["mlflow_run_id"])
        assert mlflow_run.data.tags["dagster.partition"] == day
        assert mlflow_run.data.tags["dagster.run_id"] == result.run_id
        assert (meta["llm_calls"], meta["total_tokens"]) == (1, 120 + 85)
        assert meta["total_cost_usd"] == pytest.approx(FLASH_COST, abs=1e-12)
        assert json.loads(meta["output_preview"].split("```json\n")[1].split("```")[0]) == {
            "day": day,
            "summary": day,
            "topic": "news",
        }
    assert len({meta["mlflow_run_id"] for meta in metas.values()}) == 3


def test_each_partition_of_a_range_keeps_its_cost_summary_and_trace(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    asset = build_workflow_asset(load_workflow(write(tmp_path, ranged())))
    with dg.instance_for_test() as instance:
        result = dg.materialize([asset], instance=instance, resources=RESOURCES, tags=RANGE)
    client = MlflowClient()
    for meta in by_partition(result.asset_materializations_for_node("digest")).values():
        assert_one_truth(client, meta, client.get_run(meta["mlflow_run_id"]))


def test_a_range_that_partly_fails_retries_only_its_unfinished_partitions(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    asset = build_workflow_asset(load_workflow(write(tmp_path, ranged(retries=1))))
    fail_day(gemini, DAYS[1], Fault.server_error(500, "backend unavailable"))
    with dg.instance_for_test() as instance:
        result = dg.materialize([asset], instance=instance, resources=RESOURCES, tags=RANGE)
        assert result.success
        observed = instance.fetch_observations(dg.AssetKey("digest"), limit=10).records
        # What the spend limits count: each paid call once (the failed one is unpriced).
        spent_today = spent(instance, dg.AssetKey("digest"), datetime(2026, 1, 1, tzinfo=UTC))
    assert spent_today == pytest.approx(3 * FLASH_COST, abs=1e-12)
    # The failed day is called again, the two that finished are not.
    assert Counter(day_of(r) for r in gemini.requests) == {DAYS[0]: 1, DAYS[1]: 2, DAYS[2]: 1}
    metas = by_partition(result.asset_materializations_for_node("digest"))
    assert sorted(metas) == DAYS
    for day in (DAYS[0], DAYS[2]):
        meta = metas[day]
        assert meta["llm_calls"] == 0 and meta["total_cost_usd"] == 0.0
        assert meta["resumed_cost_usd"] == pytest.approx(FLASH_COST, abs=1e-12)
        assert [r.data["outcome"] for r in meta["attempts"].records] == ["finished", "succeeded"]
        assert meta["all_attempts_cost_usd"] == pytest.approx(FLASH_COST, abs=1e-12)
    assert metas[DAYS[1]]["llm_calls"] == 1
    assert [r.data["outcome"] for r in metas[DAYS[1]]["attempts"].records] == [
        "retried",
        "succeeded",
    ]
    # Attempt 1 recorded each partition's spend once: two paid calls, one failed call.
    spend = {
        str(r.asset_observation.partition): metadata_values(r.asset_observation.metadata)
        for r in observed
    }
    assert {day: (m["outcome"], m["llm_calls"]) for day, m in spend.items()} == {
        DAYS[0]: ("finished", 1),
        DAYS[1]: ("retried", 1),
        DAYS[2]: ("finished", 1),
    }


def test_a_failed_range_lists_each_partition_and_its_re_execution_pays_for_the_rest(
    tmp_path: Path,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    write(folder, ranged())
    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    job = dg.reconstructable(workflows_job)
    fail_day(gemini, DAYS[2], Fault.bad_request("the prompt is refused"))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        with dg.execute_job(job, instance, tags=RANGE, raise_on_error=False) as first:
            assert not first.success
            (failure,) = [e for e in first.all_events if e.is_step_failure]
        error = failure.step_failure_data.user_failure_data
        assert error is not None
        figures = UsageMetadata.extract(error.metadata)
        table = RangeMetadata.extract(error.metadata)
        assert figures.llm_calls == 3
        assert figures.total_cost_usd == pytest.approx(2 * FLASH_COST, abs=1e-12)
        assert table.failed_partitions == DAYS[2]
        assert table.partitions is not None
        rows = {r.data["partition"]: r.data for r in table.partitions.records}
        assert {d: (r["status"], r["llm_calls"]) for d, r in rows.items()} == {
            DAYS[0]: ("finished", 1),
            DAYS[1]: ("finished", 1),
            DAYS[2]: ("failed", 1),
        }
        assert rows[DAYS[0]]["cost_usd"] == pytest.approx(FLASH_COST, abs=1e-12)
        assert "the prompt is refused" in rows[DAYS[2]]["error"]
        assert not instance.fetch_materializations(dg.AssetKey("digest"), limit=5).records

        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        # The run's tags go with it, as the UI's "Re-execute from failure" carries them.
        with dg.execute_job(job, instance, tags=RANGE, reexecution_options=options) as second:
            assert second.success
            metas = by_partition(second.asset_materializations_for_node("digest"))
        assert {day: stored_state(instance, day)["day"] for day in DAYS} == {d: d for d in DAYS}
    assert Counter(day_of(r) for r in gemini.requests) == {DAYS[0]: 1, DAYS[1]: 1, DAYS[2]: 2}
    assert {day: meta["llm_calls"] for day, meta in metas.items()} == {
        DAYS[0]: 0,
        DAYS[1]: 0,
        DAYS[2]: 1,
    }


def test_the_cli_runs_a_range_in_one_run(tmp_path: Path, gemini: GeminiLoopbackServer) -> None:
    """`dagster asset materialize --partition-range` takes single-run policies only
    (Dagster 1.13); the workflow's job takes a range as a user launches it."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    write(workflows, ranged())
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AGENTS_PIPELINES_WORKFLOWS_DIR": str(workflows),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    command = [str(DAGSTER), "job", "execute", "-m", "agents_pipelines.definitions"]
    command += ["-j", "digest_job", "--tags", json.dumps(RANGE)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(day_of(r) for r in gemini.requests) == DAYS
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        records = instance.fetch_materializations(dg.AssetKey("digest"), limit=5).records
        states = {day: stored_state(instance, day) for day in DAYS}
    assert sorted(str(r.asset_materialization.partition) for r in records) == DAYS
    assert {r.run_id for r in records} == {run.run_id}
    assert {day: state["day"] for day, state in states.items()} == {d: d for d in DAYS}
    for record in records:
        meta = metadata_values(record.asset_materialization.metadata)
        assert meta["total_cost_usd"] == pytest.approx(FLASH_COST, abs=1e-12)


BRIEF = """\
schema_version: "1"
flow: {name: brief}
state:
  fields:
    day: {type: str, required: true}
    summary: {type: str}
    brief: {type: str}
nodes:
  - {id: shorten, prompt: "Shorten {summary}.", outputs: [brief]}
edges:
  - {from: START, to: shorten}
  - {from: shorten, to: END}
orchestration:
  partitions:
    daily: {start: "2026-11-01", field: day}
  deps:
    - {workflow: digest, map: {summary: summary}}
"""


def test_a_downstream_range_reads_each_partition_of_its_upstream_range(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    """The upstream range comes in as `{partition: state}`; each partition of the
    downstream range reads its own day."""
    digest_asset = build_workflow_asset(load_workflow(write(tmp_path, ranged())))
    brief_path = write(tmp_path, BRIEF + BACKFILL, "brief.yaml")
    brief_asset = build_workflow_asset(load_workflow(brief_path))
    gemini.set_default(lambda request: Reply.text_reply(f"news of {day_of(request)}"))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [digest_asset, brief_asset], instance=instance, resources=RESOURCES, tags=RANGE
        )
        assert result.success
    shortened = sorted(r.prompt_text for r in gemini.requests if "Shorten" in r.prompt_text)
    assert shortened == [f"Shorten news of {day}." for day in DAYS]
    metas = by_partition(result.asset_materializations_for_node("brief"))
    assert {day: meta["llm_calls"] for day, meta in metas.items()} == dict.fromkeys(DAYS, 1)


def test_a_check_of_a_range_fails_for_the_partitions_it_failed_for(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    """Dagster 1.13 checks a step, not a partition: one result per check, naming the
    partitions it failed for."""
    text = ranged(extra="  checks:\n    - {field: summary, min_length: 5}\n")
    asset = build_workflow_asset(load_workflow(write(tmp_path, text)))
    gemini.set_default(
        lambda request: Reply.text_reply("x" if DAYS[1] in request.prompt_text else "a summary")
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize([asset], instance=instance, resources=RESOURCES, tags=RANGE)
    assert result.success  # not blocking: the partitions are materialized
    (check,) = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == ("summary_min_length_5", False)
    figures = RangeMetadata.extract(check.metadata)
    assert (figures.failed_partitions, figures.checked_partitions) == (DAYS[1], 3)
    assert check.metadata["measured"].value == 1  # the failing partition's figures
