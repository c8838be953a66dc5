"""Retention: `agents-pipelines prune` and the `agents_pipelines_prune` job delete what a
workflow keeps past its `retention_days`, and nothing younger or of another workflow.

Real records from real runs: Dagster materializations (the Gemini client against the
loopback server) on an instance whose storage is SQLite or PostgreSQL, tracked in a
brand-new MLflow SQLite store; then some are aged through each store's SQL
(tests/support/aged_stores.py) and pruned.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from aged_stores import (
    DAY_S,
    age_cache_entries,
    age_checkpoint_thread,
    age_journal_rows,
    age_mlflow_run,
    cache_entries,
)
from agents_pipelines import cli
from agents_pipelines.llm.cache import CACHE_FILE
from agents_pipelines.orchestration import WorkflowRunner, build_definitions, build_workflow_asset
from agents_pipelines.orchestration.automation import run_config
from agents_pipelines.orchestration.stores import checkpoints, spend_journal
from agents_pipelines.orchestration.stores.databases import instance_store
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import Fault, GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.testing.gemini_server import default_reply
from agents_pipelines.tracking import drain_trace_export
from conftest import REPO, workflow_yaml, write

TRACE_TAG = "agents_pipelines.trace_id"
OLD_S = 40 * DAY_S  # past a retention of 30 days


def kept_yaml(retention: str = "retention_days: 30") -> str:
    """Two calls; a month's spend limit (so attempts write the spend journal), the
    development cache, and no retries (a failed call leaves the run's checkpoint)."""
    return workflow_yaml(
        "kept",
        ("outline", "Outline {topic}.", "outline"),
        ("summarize", "Summarize the outline of {topic}.", "summary"),
        orchestration="inputs: {topic: cats}\nretry: {max_retries: 0}\n"
        "spend_limits: [{per: month, max_cost_usd: 100}]",
        config="llm: {max_retries: 0}\nexecution: {cache: {ttl_s: 31536000}}\n"
        f"observability: {{mlflow: {{{retention}}}}}",
    )


OTHER = workflow_yaml(  # no retention_days: never pruned
    "other",
    ("outline", "Outline {topic} again.", "outline"),
    config="execution: {cache: {ttl_s: 31536000}}",
)


@pytest.fixture(params=["sqlite", "postgres"])
def instance(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """The instance DAGSTER_HOME names (as the CLI finds it): storage in its folder, or in
    PostgreSQL as the team profile configures it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    if request.param == "postgres":
        database = request.getfixturevalue("postgres_database_factory")()
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", database.replace("://", "+psycopg2://", 1))
        shutil.copy(REPO / "deploy" / "team" / "dagster.yaml", home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text("telemetry: {enabled: false}\n", encoding="utf-8")
    with dg.DagsterInstance.get() as got:
        yield got


def materialize(path: Path, instance: dg.DagsterInstance, topic: str) -> dg.ExecuteInProcessResult:
    asset = build_workflow_asset(load_workflow(path))
    return dg.materialize(
        [asset],
        resources={"workflow_runner": WorkflowRunner()},
        run_config=run_config(asset, {"topic": topic}),
        raise_on_error=False,
        instance=instance,
    )


def mlflow_run(experiment: str, dagster_run_id: str) -> Any:
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (run,) = client.search_runs(
        [experiment_id], f"tags.`dagster.run_id` = '{dagster_run_id}'", ViewType.ALL
    )
    return run


def all_runs(experiment: str) -> set[str]:
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return {r.info.run_id for r in client.search_runs([experiment_id], "", ViewType.ALL)}


def trace_exists(trace_id: str) -> bool:
    return bool(MlflowClient().search_traces(filter_string=f"trace.request_id = '{trace_id}'"))


def prune(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main(["prune", *args]) == 0
    return capsys.readouterr().out


def fail_summaries_of(gemini: GeminiLoopbackServer, topic: str) -> None:
    """Calls for ``topic`` fail at the second node (its outline names the topic)."""

    def answer(request: RecordedRequest) -> Reply | Fault:
        if "Summarize" in request.prompt_text and topic in request.prompt_text:
            return Fault.server_error(500, "backend unavailable")
        return default_reply(request)

    gemini.set_default(answer)


def test_prune_lists_then_deletes_only_what_is_past_retention(
    tmp_path: Path,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    instance: dg.DagsterInstance,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    kept, other = write(folder, kept_yaml(), "kept.yaml"), write(folder, OTHER, "other.yaml")
    old = materialize(kept, instance, "cats")
    assert old.success
    cache = Path(instance.storage_directory()) / CACHE_FILE
    entries_before_young_runs = cache_entries(cache)
    assert entries_before_young_runs == 2
    young = materialize(kept, instance, "dogs")
    fail_summaries_of(gemini, "owls")
    failed = materialize(kept, instance, "owls")
    assert young.success and not failed.success
    other_run = materialize(other, instance, "cats")
    assert other_run.success
    drain_trace_export()

    # Age the first and the failed run of `kept` past 30 days, and `other`'s run too.
    db = Path(mlflow_uri.removeprefix("sqlite:///"))
    aged = {r.run_id: mlflow_run("kept", r.run_id) for r in (old, failed)}
    for run in [*aged.values(), mlflow_run("other", other_run.run_id)]:
        age_mlflow_run(db, run.info.run_id, run.data.tags[TRACE_TAG], OLD_S)
    thread = f"{failed.run_id}|kept|"
    assert age_checkpoint_thread(instance_store(instance, checkpoints.SQLITE_FILE), thread, OLD_S)
    journal = instance_store(instance, spend_journal.SQLITE_FILE)
    assert [age_journal_rows(journal, r.run_id, OLD_S) for r in (old, failed)] == [1, 1]
    assert age_cache_entries(cache, time_of_first_young_entry(cache), OLD_S) == 2
    everything = all_runs("kept")
    assert len(everything) == 3

    listing = prune(capsys, "--dry-run", str(folder))

    old_ids = sorted(run.info.run_id for run in aged.values())
    old_traces = sorted(run.data.tags[TRACE_TAG] for run in aged.values())
    assert (
        listing.splitlines()[0] == "2 workflow(s), 1 with retention_days (dry run: nothing deleted)"
    )
    assert "  would remove 2 MLflow runs\n" in listing
    assert "  would remove 2 MLflow traces\n" in listing
    assert "  would remove 1 checkpoint threads\n" in listing
    assert "  would remove 2 spend-journal rows\n" in listing
    assert f"  would remove 2 cache entries ({cache}; older than 30 day(s)" in listing
    for item in [*old_ids, *old_traces, thread, f"{old.run_id}#1", f"{failed.run_id}#1"]:
        assert f"    - {item}" in listing
    assert young.run_id not in listing and other_run.run_id not in listing
    assert all_runs("kept") == everything  # nothing deleted
    assert all(trace_exists(t) for t in old_traces)
    assert cache_entries(cache) == 6

    report = prune(capsys, str(folder))

    assert "kept:\n  removed 2 MLflow runs\n  removed 2 MLflow traces\n" in report
    assert "  removed 1 checkpoint threads\n  removed 2 spend-journal rows\n" in report
    assert report.splitlines()[-1] == "removed 9 item(s) in all"
    assert all_runs("kept") == everything - set(old_ids)
    assert len(all_runs("other")) == 1  # aged too, but `other` sets no retention_days
    for run in aged.values():
        assert not Path(run.info.artifact_uri.removeprefix("file://")).exists()
    assert not any(trace_exists(t) for t in old_traces)
    assert trace_exists(mlflow_run("kept", young.run_id).data.tags[TRACE_TAG])
    with checkpoints.open_saver(instance) as saver:
        assert checkpoints.expired_threads(saver, cutoff=float("inf")) == []
    with spend_journal.open_journal(instance) as rows:
        assert rows.expired("kept", float("inf")) == [f"{young.run_id}#1"]
    assert cache_entries(cache) == 4
    assert prune(capsys, str(folder)).splitlines()[-1] == "removed 0 item(s) in all"


def time_of_first_young_entry(cache: Path) -> float:
    """Entries stored before this are the first run's (its two calls)."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(cache)) as conn:
        stamps = sorted(row[0] for row in conn.execute("SELECT stored_at FROM responses"))
    return float(stamps[2])


def test_the_code_location_prunes_daily_with_a_job(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    write(folder, kept_yaml("retention_days: 7"), "kept.yaml")
    write(folder, OTHER, "other.yaml")
    defs = build_definitions(folder)
    schedule = defs.resolve_schedule_def("agents_pipelines_prune_schedule")
    assert schedule.cron_schedule == "17 3 * * *"
    assert schedule.job_name == "agents_pipelines_prune"
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        first = materialize(folder / "kept.yaml", instance, "cats")
        second = materialize(folder / "kept.yaml", instance, "dogs")
        drain_trace_export()
        run = mlflow_run("kept", first.run_id)
        db = Path(mlflow_uri.removeprefix("sqlite:///"))
        age_mlflow_run(db, run.info.run_id, run.data.tags[TRACE_TAG], 8 * DAY_S)

        job = defs.resolve_job_def("agents_pipelines_prune")
        result = job.execute_in_process(instance=instance)

    assert result.success
    assert result.output_for_node("agents_pipelines_prune") == 2  # the run and its trace
    assert all_runs("kept") == {mlflow_run("kept", second.run_id).info.run_id}
    assert not trace_exists(run.data.tags[TRACE_TAG])


def test_without_retention_days_the_code_location_has_no_prune_job(tmp_path: Path) -> None:
    write(tmp_path, OTHER, "other.yaml")
    defs = build_definitions(tmp_path)
    with pytest.raises(Exception, match="agents_pipelines_prune"):
        defs.resolve_job_def("agents_pipelines_prune")


def test_retention_days_must_be_a_day_or_more(tmp_path: Path) -> None:
    from agents_pipelines.errors import WorkflowConfigError

    path = write(tmp_path, kept_yaml("retention_days: 0"))
    with pytest.raises(WorkflowConfigError, match="retention_days"):
        load_workflow(path)


def test_an_unreachable_tracking_server_stops_prune_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    text = kept_yaml(f"retention_days: 30, tracking_uri: '{uri}'")
    path = write(tmp_path, text, "kept.yaml")

    assert cli.main(["prune", str(path)]) == 1

    error = capsys.readouterr().err
    assert f"error: Pruning workflow kept in MLflow at {uri} failed: " in error
    assert "run prune again: it picks up where it stopped." in error
    assert "DAGSTER_HOME is not set: checkpoints and the spend journal" in error


def test_in_a_shared_experiment_each_workflow_keeps_its_own_retention(
    tmp_path: Path,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agents_pipelines.runner import run_workflow

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    folder = tmp_path / "workflows"
    folder.mkdir()
    for name, days in (("short", 30), ("long", 90)):
        text = workflow_yaml(
            name,
            ("outline", "Outline {topic}.", "outline"),
            config=f"observability: {{mlflow: {{experiment_name: team, retention_days: {days}}}}}",
        )
        write(folder, text, f"{name}.yaml")
    done = {
        name: run_workflow(load_workflow(folder / f"{name}.yaml"), {"topic": name}).tracking
        for name in ("short", "long")
    }
    drain_trace_export()
    db = Path(mlflow_uri.removeprefix("sqlite:///"))
    for info in done.values():
        assert info is not None and info.trace_id is not None
        age_mlflow_run(db, info.run_id, info.trace_id, OLD_S)

    monkeypatch.setenv("AGENTS_PIPELINES_WORKFLOWS_DIR", str(folder))
    report = prune(capsys)

    assert "short:\n  removed 1 MLflow runs\n  removed 1 MLflow traces\n" in report
    assert "long:\n  removed 0 MLflow runs\n  removed 0 MLflow traces\n" in report
    assert all_runs("team") == {done["long"].run_id}
    assert trace_exists(done["long"].trace_id) and not trace_exists(done["short"].trace_id)
