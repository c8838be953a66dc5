"""Resume after a failure: a retried step calls again only what did not finish.

Real runs: the Gemini client against the loopback server, Dagster's in-process executor
on an instance whose storage is SQLite or PostgreSQL (the checkpoints go to the same
place), MLflow in a SQLite store. The server's request log is the proof of what was paid.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow import MlflowClient

from agents_pipelines.errors import WorkflowRunError
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.orchestration.stores import checkpoints
from agents_pipelines.runner import Checkpointing, run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.testing.gemini_server import default_reply
from conftest import (
    REPO,
    assert_usage_agrees,
    metadata_of,
    metadata_values,
    wait_until,
    workflow_yaml,
    write,
)
from reexecutable_job import WORKFLOWS_ENV, workflows_job
from test_map_nodes import item_of, map_workflow, reviews

CALL_TOKENS = 205  # the loopback server's usage per answered call
PROMPTS = ("Outline cats.", "Summarize the outline.", "Title the summary.")


def three_calls(name: str, execution: str = "") -> str:
    """Three calls in a row; each node retries a failed call once (llm.max_retries), and
    the Dagster step once (orchestration.retry)."""
    return workflow_yaml(
        name,
        ("outline", PROMPTS[0], "outline"),
        ("summarize", PROMPTS[1], "summary"),
        ("title", PROMPTS[2], "title"),
        orchestration="inputs: {topic: cats}\nretry: {max_retries: 1, delay_s: 0}",
        config="llm: {max_retries: 1}" + (f"\nexecution: {execution}" if execution else ""),
    )


def fail_first(
    gemini: GeminiLoopbackServer, marker: str, times: int, once_received: int = 0
) -> None:
    """The first ``times`` requests whose prompt holds ``marker`` fail with a 500, each once
    the server has received ``once_received`` requests in all (so that they are in flight)."""
    failed = Counter[str]()

    def answer(request: RecordedRequest) -> Reply | Fault:
        if marker in request.prompt_text and failed[marker] < times:
            failed[marker] += 1
            wait_until(
                lambda: len(gemini.requests) >= once_received, 60, "the calls in flight", 0.01
            )
            return Fault.server_error(500, "backend unavailable")
        return default_reply(request)

    gemini.set_default(answer)


def prompts_sent(gemini: GeminiLoopbackServer) -> Counter[str]:
    return Counter(next(p for p in PROMPTS if p in r.prompt_text) for r in gemini.requests)


@pytest.fixture(params=["sqlite", "postgres"])
def instance(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on SQLite (its storage folder), or on PostgreSQL as the team
    profile configures it (deploy/team/dagster.yaml)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    if request.param == "postgres":
        database = request.getfixturevalue("postgres_database_factory")()
        url = database.replace("postgresql://", "postgresql+psycopg2://")
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
        shutil.copy(REPO / "deploy" / "team" / "dagster.yaml", home / "dagster.yaml")
        with dg.DagsterInstance.from_config(str(home)) as pg_instance:
            assert type(pg_instance.run_storage).__name__ == "PostgresRunStorage"
            yield pg_instance
        return
    with dg.instance_for_test(temp_dir=str(home)) as sqlite_instance:
        yield sqlite_instance


def materialize(path: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_workflow_asset(load_workflow(path))],
        resources={"workflow_runner": WorkflowRunner()},
        raise_on_error=False,
        instance=instance,
    )


def mlflow_runs(experiment: str) -> dict[str, Any]:
    """The experiment's MLflow runs by status."""
    client = MlflowClient()
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return {run.info.status: run for run in found}


def cost_summary(run_id: str) -> dict[str, Any]:
    path = MlflowClient().download_artifacts(run_id, "cost_summary.json")
    return dict(json.loads(Path(path).read_text(encoding="utf-8")))


def test_a_step_retry_calls_only_the_node_that_failed(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    fail_first(gemini, PROMPTS[2], times=2)  # both tries of the node in the first attempt
    result = materialize(write(tmp_path, three_calls("resumed")), instance)
    assert result.success
    # The first two prompts were paid for once, across both attempts.
    assert prompts_sent(gemini) == {PROMPTS[0]: 1, PROMPTS[1]: 1, PROMPTS[2]: 3}
    meta = metadata_of(result, "resumed")
    assert [(r.data["node"], r.data["item"]) for r in meta["resumed"].records] == [
        ("outline", None),
        ("summarize", None),
    ]
    runs = mlflow_runs("resumed")
    failed, finished = runs["FAILED"], runs["FINISHED"]
    # The failed attempt keeps its spend: two answered calls and two failed tries.
    assert failed.data.metrics["llm_calls"] == 4
    assert failed.data.metrics["total_tokens"] == 2 * CALL_TOKENS
    # The resumed attempt reports its one call; the reused nodes' cost is apart.
    assert meta["llm_calls"] == 1 and meta["total_tokens"] == CALL_TOKENS
    assert meta["resumed_cost_usd"] == failed.data.metrics["total_cost_usd"] > 0
    assert [r.data["cost_usd"] for r in meta["resumed"].records] == [meta["total_cost_usd"]] * 2
    assert meta["mlflow_run_id"] == finished.info.run_id
    assert_usage_agrees(meta, finished.info.run_id)
    assert finished.data.metrics["resumed_cost_usd"] == meta["resumed_cost_usd"]
    summary = cost_summary(finished.info.run_id)
    assert summary["resumed_cost_usd"] == meta["resumed_cost_usd"]
    assert [r["node"] for r in summary["resumed"]] == ["outline", "summarize"]
    assert [c["node"] for c in summary["calls"]] == ["title"]
    assert "Resumed after the last finished step" in meta["resume"]
    attempts = [(r.data["attempt"], r.data["outcome"]) for r in meta["attempts"].records]
    assert attempts == [(1, "retried"), (2, "succeeded")]
    assert meta["all_attempts_total_tokens"] == 3 * CALL_TOKENS
    # The run succeeded: its thread is gone.
    with checkpoints.open_saver(instance) as saver:
        assert list(saver.list(None)) == []


def test_a_map_retry_calls_only_the_failed_item(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    # Ten calls in flight at once: the 7th item's failure comes once every item is called
    # (none waits for a slot; those that do are the next test's case), and ends the pass.
    text = map_workflow(reviews(10), map_extra=", max_concurrency: 10")
    text = text.replace("max_concurrency: 3, ", "").replace(
        "orchestration:\n", "orchestration:\n  retry: {max_retries: 1, delay_s: 0}\n"
    )
    fail_first(gemini, "review 6", times=1, once_received=10)
    result = materialize(write(tmp_path, text), instance)
    assert result.success
    items = Counter(item_of(r) for r in gemini.requests)
    assert items == {**dict.fromkeys(range(10), 1), 6: 2}  # the retry called item 7 only
    meta = metadata_of(result, "reviews")
    assert meta["llm_calls"] == 1
    resumed = sorted(r.data["item"] for r in meta["resumed"].records)
    assert resumed == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert len(result.asset_value("reviews")["labels"]) == 10
    assert_usage_agrees(meta, meta["mlflow_run_id"])
    failed = mlflow_runs("reviews")["FAILED"]
    assert meta["resumed_cost_usd"] == failed.data.metrics["total_cost_usd"]


def test_items_stopped_by_a_failed_item_are_called_on_the_retry(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    """One call at a time: item 3 fails the pass, and the items still waiting for the slot
    make no call. They did not finish, so the retry calls them (and item 3), and reuses the
    items called before item 3 (the items take the slot in no set order)."""
    text = map_workflow(reviews(10), map_extra=", max_concurrency: 1")
    text = text.replace("max_concurrency: 3, ", "").replace(
        "orchestration:\n", "orchestration:\n  retry: {max_retries: 1, delay_s: 0}\n"
    )
    fail_first(gemini, "review 3", times=1)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = materialize(write(tmp_path, text), instance)
    assert result.success
    called = [item_of(r) for r in gemini.requests]
    assert Counter(called) == {**dict.fromkeys(range(10), 1), 3: 2}
    first_attempt = called[: called.index(3)]
    meta = metadata_of(result, "reviews")
    assert sorted(r.data["item"] for r in meta["resumed"].records) == sorted(first_attempt)
    assert meta["llm_calls"] == 10 - len(first_attempt)


def test_re_execute_from_failure_resumes_the_failed_run(
    tmp_path: Path,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "Re-execute from failure" makes a new run whose root is the failed one: it finds the
    failed run's checkpoint."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    write(
        folder, three_calls("again").replace("max_retries: 1, delay_s", "max_retries: 0, delay_s")
    )
    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    job = dg.reconstructable(workflows_job)
    fail_first(gemini, PROMPTS[2], times=2)
    with dg.execute_job(job, instance, raise_on_error=False) as first:
        assert not first.success
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    with dg.execute_job(job, instance, reexecution_options=options) as second:
        assert second.success
        assert second.dagster_run.root_run_id == first.run_id
        (event,) = second.asset_materializations_for_node("again")
    assert prompts_sent(gemini) == {PROMPTS[0]: 1, PROMPTS[1]: 1, PROMPTS[2]: 3}
    meta = metadata_values(event.metadata)
    assert [r.data["node"] for r in meta["resumed"].records] == ["outline", "summarize"]
    assert meta["llm_calls"] == 1
    assert_usage_agrees(meta, meta["mlflow_run_id"])


def test_a_new_materialization_starts_fresh(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    path = write(
        tmp_path, three_calls("fresh").replace("max_retries: 1, delay_s", "max_retries: 0, delay_s")
    )
    fail_first(gemini, PROMPTS[2], times=2)
    assert not materialize(path, instance).success  # no step retry: the run fails
    with checkpoints.open_saver(instance) as saver:
        assert len({c.config["configurable"]["thread_id"] for c in saver.list(None)}) == 1
    result = materialize(path, instance)
    assert result.success
    assert prompts_sent(gemini) == {PROMPTS[0]: 2, PROMPTS[1]: 2, PROMPTS[2]: 3}
    meta = metadata_of(result, "fresh")
    assert meta["llm_calls"] == 3 and "resumed" not in meta and "resume" not in meta


def test_resume_false_calls_every_node_again_and_writes_no_checkpoint(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    fail_first(gemini, PROMPTS[2], times=2)
    path = write(tmp_path, three_calls("again", execution="{resume: false}"))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = materialize(path, instance)
        assert result.success
        assert not Path(instance.storage_directory(), checkpoints.SQLITE_FILE).exists()
    assert prompts_sent(gemini) == {PROMPTS[0]: 2, PROMPTS[1]: 2, PROMPTS[2]: 3}
    assert "resumed" not in metadata_of(result, "again")


def test_a_checkpoint_of_another_file_version_is_not_resumed(
    tmp_path: Path, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    text = three_calls("edited").replace("llm: {max_retries: 1}", "llm: {max_retries: 0}")
    text += "  observability: {mlflow: {enabled: false}}\n"
    fail_first(gemini, PROMPTS[2], times=1)
    with checkpoints.open_saver(instance) as saver:
        checkpointing = Checkpointing(saver, "run-1|edited|")
        with pytest.raises(WorkflowRunError, match="Gemini 500"):
            run_workflow(load_workflow(write(tmp_path, text)), checkpointing=checkpointing)
        edited = load_workflow(write(tmp_path, text + "# a comment is another version\n"))
        result = run_workflow(edited, checkpointing=checkpointing)
    assert prompts_sent(gemini) == {PROMPTS[0]: 2, PROMPTS[1]: 2, PROMPTS[2]: 2}
    assert result.usage.resumed == () and result.usage.llm_calls == 3
    (warning,) = result.warnings
    assert warning == result.resume_note
    assert warning.startswith("Not resumed: the checkpoint of this run (thread run-1|edited|)")


def test_checkpoints_older_than_the_ttl_are_pruned(
    tmp_path: Path, gemini: GeminiLoopbackServer
) -> None:
    text = three_calls("pruned").replace("llm: {max_retries: 1}", "llm: {max_retries: 0}")
    text += "  observability: {mlflow: {enabled: false}}\n"
    fail_first(gemini, PROMPTS[2], times=1)
    with (
        dg.instance_for_test(temp_dir=str(tmp_path)) as instance,
        checkpoints.open_saver(instance) as saver,
    ):
        with pytest.raises(WorkflowRunError):
            run_workflow(
                load_workflow(write(tmp_path, text)), checkpointing=Checkpointing(saver, "old")
            )
        assert checkpoints.prune(saver, ttl_days=1) == []
        later = time.time() + 2 * 86_400
        assert checkpoints.prune(saver, ttl_days=1, now=later) == ["old"]
        assert saver.get_tuple(Checkpointing(saver, "old").config()) is None


STEP_THEN_CALL = """\
schema_version: "1"
flow: {{name: recoded}}
state:
  fields:
    topic: {{type: str, required: true}}
    outline: {{type: str}}
    summary: {{type: str}}
nodes:
  - {{id: outline, function: "{module}:outline", outputs: [outline]}}
  - {{id: summarize, prompt: "Summarize the outline.", outputs: [summary]}}
edges:
  - {{from: START, to: outline}}
  - {{from: outline, to: summarize}}
  - {{from: summarize, to: END}}
config:
  llm: {{max_retries: 0}}
  observability: {{mlflow: {{enabled: false}}}}
orchestration:
  inputs: {{topic: cats}}
"""


def test_a_checkpoint_of_other_step_code_is_not_resumed(
    tmp_path: Path, gemini: GeminiLoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the step's module is imported from the working directory
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = f"steps_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{module}.py"
    source.write_text("def outline(topic: str) -> dict:\n    return {'outline': 'old'}\n")
    path = write(tmp_path, STEP_THEN_CALL.format(module=module))
    gemini.plan(Fault.server_error(500))  # the attempt fails after the step has finished
    home = tmp_path / "home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        before = build_workflow_asset(load_workflow(path)).specs
        with checkpoints.open_saver(instance) as saver:
            checkpointing = Checkpointing(saver, "run-1|recoded|")
            with pytest.raises(WorkflowRunError, match="Gemini 500"):
                run_workflow(load_workflow(path), checkpointing=checkpointing)
            # The step's code changes; the next attempt's process imports it anew. (Another
            # size: a rewrite within the same second of the same size would import the
            # bytecode Python cached for the old source, which it checks by mtime and size.)
            source.write_text(
                "def outline(topic: str) -> dict:\n    return {'outline': 'renewed'}\n"
            )
            del sys.modules[module]
            result = run_workflow(load_workflow(path), checkpointing=checkpointing)
        after = build_workflow_asset(load_workflow(path)).specs
    assert result.state["outline"] == "renewed"  # not the old code's, from the checkpoint
    assert result.usage.resumed == ()
    (warning,) = result.warnings
    assert warning.startswith("Not resumed: the checkpoint of this run (thread run-1|recoded|)")
    assert "or of the Python its steps and tools name" in warning
    # Dagster shows the asset as changed too.
    (old_spec,), (new_spec,) = before, after
    assert old_spec.code_version != new_spec.code_version


def test_a_tool_module_change_is_a_new_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = f"tools_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{module}.py"
    tool = 'def lookup(order_id: str) -> str:\n    """Look an order up."""\n    return "{}"\n'
    source.write_text(tool.format("shipped"))
    text = workflow_yaml("tooled", ("answer", "Where is {topic}?", "reply"))
    text = text.replace("outputs: [reply]", f"tools: [{module}:lookup], outputs: [reply]")
    path = write(tmp_path, text)
    before = load_workflow(path).version_sha256()
    assert before != load_workflow(path).sha256  # the tool's module is part of it
    source.write_text(tool.format("lost"))
    assert load_workflow(path).version_sha256() != before
