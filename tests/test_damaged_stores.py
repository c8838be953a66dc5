"""Damaged or deleted stores beside a Dagster instance: the checkpoints, the spend journal
and the development cache.

Each test starts on a brand-new Dagster instance (a temporary storage folder) whose store
file is then damaged (garbage written over it) or deleted, and runs through Dagster, with
the real Gemini client against the loopback server."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from agents_pipelines.llm.cache import CACHE_FILE
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.orchestration.stores import checkpoints
from agents_pipelines.orchestration.stores.spend_journal import SQLITE_FILE as JOURNAL_FILE
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.testing.gemini_server import default_reply
from conftest import metadata_of, metadata_values, workflow_yaml, write
from reexecutable_job import WORKFLOWS_ENV, workflows_job

UNTRACKED = "observability: {mlflow: {enabled: false}}"
GARBAGE = b"this is not a SQLite database, it was overwritten\n" * 40
PROMPTS = ("Outline cats.", "Summarize the outline.", "Title the summary.")


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A brand-new instance: nothing in its storage folder yet."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def damage(instance: dg.DagsterInstance, name: str) -> Path:
    path = Path(instance.storage_directory(), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(GARBAGE)
    return path


def one_call(tmp_path: Path, name: str, orchestration: str = "", execution: str = "") -> Path:
    config = UNTRACKED + (f"\nexecution: {execution}" if execution else "")
    text = workflow_yaml(
        name,
        ("summarize", "Summarize {topic}.", "summary"),
        orchestration="inputs: {topic: cats}" + (f"\n{orchestration}" if orchestration else ""),
        config=config,
    )
    return write(tmp_path, text, f"{name}.yaml")


def materialize(path: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [build_workflow_asset(load_workflow(path))],
        instance=instance,
        resources={"workflow_runner": WorkflowRunner()},
        raise_on_error=False,
    )


def failure_message(result: dg.ExecuteInProcessResult, node: str) -> str:
    failure = result.failure_data_for_node(node)
    assert failure is not None and failure.user_failure_data is not None, failure
    assert failure.error.cause is None  # no sqlite3 traceback under it
    return failure.error.message


def test_a_damaged_checkpoint_store_fails_before_any_call_naming_the_file(
    tmp_path: Path, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    path = damage(instance, checkpoints.SQLITE_FILE)
    result = materialize(one_call(tmp_path, "checkpointed"), instance)
    assert not result.success and gemini.requests == []
    message = failure_message(result, "checkpointed")
    assert f"Workflow checkpointed ({tmp_path / 'checkpointed.yaml'}): The checkpoint" in message
    assert f"The checkpoint store {path} is damaged (SQLite: file is not a database)" in message
    assert f"Fix: move it aside (mv {path} {path}.damaged) and run again" in message
    assert "config.execution.resume: false" in message
    assert path.read_bytes() == GARBAGE  # left where it is, for the operator to look at


def test_a_damaged_spend_journal_fails_before_any_call_naming_the_file(
    tmp_path: Path, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    path = damage(instance, JOURNAL_FILE)
    limited = one_call(tmp_path, "limited", "spend_limits:\n  - {per: day, max_cost_usd: 5}")
    result = materialize(limited, instance)
    assert not result.success and gemini.requests == []
    message = failure_message(result, "limited")
    assert f"The spend journal {path} is damaged (SQLite: file is not a database)" in message
    assert f"Fix: move it aside (mv {path} {path}.damaged) and run again" in message


def test_a_damaged_development_cache_is_set_aside_and_rebuilt_with_a_warning(
    tmp_path: Path, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    path = damage(instance, CACHE_FILE)
    cached = one_call(tmp_path, "cached", execution="{cache: {ttl_s: 3600}}")
    first = materialize(cached, instance)
    assert first.success and len(gemini.requests) == 1
    (aside,) = path.parent.glob(f"{CACHE_FILE}.damaged-*")
    assert aside.read_bytes() == GARBAGE
    warning = metadata_of(first, "cached")["cache_warning"]
    assert warning.startswith(f"The development cache {path} was damaged (SQLite: file is not")
    assert f"moved to {aside}, and a new, empty one made" in warning
    logged = [
        record.user_message
        for record in instance.all_logs(first.run_id)
        if record.level == logging.WARNING and "development cache" in record.user_message
    ]
    assert len(logged) == 1 and warning in logged[0]
    # The new cache works: the same request is answered from it.
    second = materialize(cached, instance)
    assert second.success and len(gemini.requests) == 1
    meta = metadata_of(second, "cached")
    assert meta["cache_hits"] == 1 and "cache_warning" not in meta


def fail_the_title(gemini: GeminiLoopbackServer) -> None:
    """The title call fails with a 500 on the first run (both tries); then it is answered."""
    failed = Counter[str]()

    def answer(request: RecordedRequest) -> Reply | Fault:
        if PROMPTS[2] in request.prompt_text and failed["title"] < 2:
            failed["title"] += 1
            return Fault.server_error(500, "backend unavailable")
        return default_reply(request)

    gemini.set_default(answer)


def test_a_deleted_checkpoint_store_is_said_when_a_re_execution_starts_over(
    tmp_path: Path,
    gemini: GeminiLoopbackServer,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    nodes = [("outline", PROMPTS[0], "outline"), ("summarize", PROMPTS[1], "summary")]
    text = workflow_yaml(
        "again",
        *nodes,
        ("title", PROMPTS[2], "title"),
        orchestration="inputs: {topic: cats}\nretry: {max_retries: 0}",
        config=f"llm: {{max_retries: 1}}\n{UNTRACKED}",
    )
    write(folder, text, "again.yaml")
    monkeypatch.setenv(WORKFLOWS_ENV, str(folder))
    job = dg.reconstructable(workflows_job)
    fail_the_title(gemini)
    with dg.execute_job(job, instance, raise_on_error=False) as first:
        assert not first.success
    store = Path(instance.storage_directory(), checkpoints.SQLITE_FILE)
    for file in store.parent.glob(f"{store.name}*"):  # the file and its WAL files
        file.unlink()
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    with dg.execute_job(job, instance, reexecution_options=options) as second:
        assert second.success
        (event,) = second.asset_materializations_for_node("again")
        run_id = second.run_id
    # Paid again for the two nodes the first run finished, and said so.
    sent = Counter(next(p for p in PROMPTS if p in r.prompt_text) for r in gemini.requests)
    assert sent == {PROMPTS[0]: 2, PROMPTS[1]: 2, PROMPTS[2]: 3}
    note = metadata_values(event.metadata)["resume"]
    assert note.startswith(f"Started over: no checkpoint of thread {first.run_id}|again| ")
    assert f"was found in {store}, although an earlier attempt of this step " in note
    assert "(attempt 1, failed, 4 LLM call(s), $0.000486) left one" in note
    logged = [r.user_message for r in instance.all_logs(run_id) if r.level == logging.WARNING]
    assert any(note in message for message in logged)


def test_a_step_retry_that_finds_its_checkpoints_deleted_says_it_starts_over(
    tmp_path: Path, gemini: GeminiLoopbackServer, instance: dg.DagsterInstance
) -> None:
    store = Path(instance.storage_directory(), checkpoints.SQLITE_FILE)
    failed = Counter[str]()

    def answer(request: RecordedRequest) -> Reply | Fault:
        """The title fails on both tries of the first attempt; as the second fails, the
        store is deleted (the attempt's connection writes on to the unlinked file)."""
        if PROMPTS[2] in request.prompt_text and failed["title"] < 2:
            failed["title"] += 1
            if failed["title"] == 2:
                for file in store.parent.glob(f"{store.name}*"):
                    file.unlink()
            return Fault.server_error(500, "backend unavailable")
        return default_reply(request)

    gemini.set_default(answer)
    text = workflow_yaml(
        "retried",
        ("outline", PROMPTS[0], "outline"),
        ("summarize", PROMPTS[1], "summary"),
        ("title", PROMPTS[2], "title"),
        orchestration="inputs: {topic: cats}\nretry: {max_retries: 1, delay_s: 0}",
        config=f"llm: {{max_retries: 1}}\n{UNTRACKED}",
    )
    result = materialize(write(tmp_path, text, "retried.yaml"), instance)
    assert result.success
    sent = Counter(next(p for p in PROMPTS if p in r.prompt_text) for r in gemini.requests)
    assert sent == {PROMPTS[0]: 2, PROMPTS[1]: 2, PROMPTS[2]: 3}
    note = metadata_of(result, "retried")["resume"]
    assert note.startswith(f"Started over: no checkpoint of thread {result.run_id}|retried| ")
    assert "(attempt 1, retried, 4 LLM call(s), $0.000486) left one" in note
    logged = [
        r.user_message for r in instance.all_logs(result.run_id) if r.level == logging.WARNING
    ]
    assert any(note in message for message in logged)
