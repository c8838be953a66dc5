"""Dagster features configured under `orchestration:`: schedules, the file-drop sensor,
partitions, lineage, retries, budgets and output checks."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._utils.schedules import is_valid_cron_string
from mlflow import MlflowClient

from agents_pipelines.errors import WorkflowConfigError
from agents_pipelines.orchestration import WorkflowRunner, WorkflowTranslator, build_definitions
from agents_pipelines.spec import Workflow, load_workflow_text
from agents_pipelines.spec.cron import cron_problem
from agents_pipelines.testing import Fault, GeminiLoopbackServer
from conftest import LINEAR, metadata_of, workflow_yaml, write

RUNNER = {"workflow_runner": WorkflowRunner()}


def flow(name: str, orchestration: str, extra_state: str = "") -> str:
    text = LINEAR.replace("flow: {name: linear}", f"flow: {{name: {name}}}")
    text = text.replace("    summary: {type: str}", "    summary: {type: str}" + extra_state)
    return text.replace(
        "orchestration:\n  inputs: {topic: cats}\n",
        "orchestration:\n  inputs: {topic: cats}\n" + orchestration,
    )


def defs_for(
    tmp_path: Path, *texts: str, translator: WorkflowTranslator | None = None
) -> dg.Definitions:
    folder = tmp_path / "workflows"
    folder.mkdir(exist_ok=True)
    for i, text in enumerate(texts):
        write(folder, text, f"wf{i}.yaml")
    return build_definitions(folder, translator=translator)


def materialize(defs: dg.Definitions, *keys: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        asset_selection=[dg.AssetKey(k) for k in keys], raise_on_error=False, **kwargs
    )


# Schedules ----------------------------------------------------------------------------


def test_schedule_materializes_with_its_inputs(tmp_path: Path) -> None:
    text = flow(
        "daily",
        "  schedule: {cron: '0 9 * * *', timezone: Europe/Paris, "
        "inputs: {topic: owls}, default_status: running}\n",
    )
    defs = defs_for(tmp_path, text)
    schedule = defs.resolve_schedule_def("daily_schedule")
    assert schedule.cron_schedule == "0 9 * * *"
    assert schedule.execution_timezone == "Europe/Paris"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    tick = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    with dg.build_schedule_context(scheduled_execution_time=tick) as context:
        (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.run_config == {"ops": {"daily": {"config": {"topic": "owls"}}}}
    assert request.run_key == tick.isoformat()


@pytest.mark.parametrize(
    ("cron", "timezone", "expected"),
    [
        ("0 25 * * *", "UTC", r"invalid cron expression `0 25 \* \* \*`: `25` is not a valid hour"),
        ("0 9 * *", "UTC", r"invalid cron expression `0 9 \* \*`: a cron expression has 5 fields"),
        ("0 9 * * *", "Mars/Olympus", r"`Mars/Olympus` is not an IANA time zone"),
    ],
)
def test_invalid_cron_or_time_zone_fails_validation(
    cron: str, timezone: str, expected: str
) -> None:
    text = flow("bad", f"  schedule: {{cron: '{cron}', timezone: {timezone}}}\n")
    with pytest.raises(
        WorkflowConfigError,
        match=r"x\.yaml:16:\d+: orchestration\.schedule\."
        r"(cron|timezone): " + expected,
    ):
        load_workflow_text(text, "x.yaml")


@pytest.mark.parametrize(
    "cron",
    [
        "0 9 * * *",
        "*/15 * * * *",
        "0 0 1 jan *",
        "0 9 * * mon-fri",
        "5,35 1-3 * * 0",
        "@daily",
        "0 9 * * 7",
        "61 * * * *",
        "0 9 * *",
        "0 9 32 * *",
        "0 9 * 13 *",
        "*/0 * * * *",
        "a b c d e",
        "0 9-3 * * *",
        "@every5",
        "0 0 30 2 *",
        "0 0 31 feb *",
        "0 0 29 2 *",
        "0 0 L * *",
        "0 9 ? * MON#2",
        "0 9 * * L5",
        "0 0 15W * *",
    ],
)
def test_cron_validation_agrees_with_dagster(cron: str) -> None:
    assert (cron_problem(cron) is None) == is_valid_cron_string(cron)


@pytest.mark.parametrize(
    ("orchestration", "at"),
    [
        ("  schedule: {cron: '0 0 30 2 *'}\n", r"16:\d+: orchestration\.schedule\.cron"),
        ("  automation: {on_cron: '0 0 30 2 *'}\n", r"16:\d+: orchestration\.automation\.on_cron"),
    ],
)
def test_a_cron_that_never_fires_is_refused_at_validate_as_dagster_would(
    orchestration: str, at: str
) -> None:
    with pytest.raises(WorkflowConfigError) as refused:
        load_workflow_text(flow("never", orchestration), "x.yaml")
    assert re.search(
        r"x\.yaml:" + at + r": invalid cron expression `0 0 30 2 \*`: "
        r"February has no day 30: the schedule would never run",
        str(refused.value),
    ), str(refused.value)
    # What the code location would otherwise have met, with no file or line.
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="invalid cron schedule"):
        dg.ScheduleDefinition(name="never", cron_schedule="0 0 30 2 *", target="*")


def test_last_day_nth_weekday_and_any_are_accepted_as_in_dagster(tmp_path: Path) -> None:
    monthly = flow("monthly", "  schedule: {cron: '0 9 L * *', timezone: Europe/Paris}\n")
    second_monday = flow("weekly", "  automation: {on_cron: '30 8 ? * MON#2'}\n")
    defs = defs_for(tmp_path, monthly, second_monday)
    assert defs.resolve_schedule_def("monthly_schedule").cron_schedule == "0 9 L * *"
    condition = defs.resolve_assets_def("weekly").automation_conditions_by_key[
        dg.AssetKey("weekly")
    ]
    assert condition.get_label() == "on_cron(30 8 ? * MON#2, UTC)"


def test_lower_case_utc_is_a_time_zone_as_in_dagster(tmp_path: Path) -> None:
    # zoneinfo has no `utc`, but Dagster's get_timezone takes it.
    defs = defs_for(tmp_path, flow("daily", "  schedule: {cron: '0 9 * * *', timezone: utc}\n"))
    assert defs.resolve_schedule_def("daily_schedule").execution_timezone == "utc"


# The file-drop sensor ------------------------------------------------------------------


def inbox_defs(tmp_path: Path, partitions: str = "") -> tuple[dg.Definitions, Path]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sensor = f"  sensor: {{path: '{inbox}/*', minimum_interval_seconds: 5}}\n{partitions}"
    return defs_for(tmp_path, flow("drop", sensor)), inbox


def tick(defs: dg.Definitions, cursor: str | None, instance: dg.DagsterInstance) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def("drop_inbox")
    context = dg.build_sensor_context(cursor=cursor, instance=instance, definitions=defs)
    # As the daemon does: new dynamic partition keys are checked against the instance.
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        return sensor.evaluate_tick(context)


def test_sensor_runs_each_new_input_once(tmp_path: Path) -> None:
    defs, inbox = inbox_defs(tmp_path)
    (inbox / "a.json").write_text(json.dumps({"topic": "otters"}))
    (inbox / "many.jsonl").write_text('{"topic": "x"}\n\n{"topic": "y"}\n')
    (inbox / "c.yaml").write_text("topic: zebras\n")
    with dg.instance_for_test() as instance:
        first = tick(defs, None, instance)
        topics = [r.run_config["ops"]["drop"]["config"]["topic"] for r in first.run_requests]
        assert sorted(topics) == ["otters", "x", "y", "zebras"]
        assert len({r.run_key for r in first.run_requests}) == 4
        # Restart: the same cursor sees nothing new; a renamed file is the same file.
        again = tick(defs, first.cursor, instance)
        assert again.run_requests == [] and "no new files" in (again.skip_message or "")
        (inbox / "a.json").rename(inbox / "renamed.json")
        assert tick(defs, first.cursor, instance).run_requests == []
        assert sorted(p.name for p in inbox.iterdir()) == [
            "c.yaml",
            "many.jsonl",
            "renamed.json",
        ]  # nothing deleted


def test_sensor_reports_bad_files_and_goes_on(tmp_path: Path) -> None:
    defs, inbox = inbox_defs(tmp_path)
    (inbox / "1_broken.json").write_text("{not json")
    (inbox / "2_wrong.json").write_text(json.dumps({"topic": 3}))
    with dg.instance_for_test() as instance:
        skipped = tick(defs, None, instance)
        assert skipped.run_requests == []
        message = skipped.skip_message or ""
        assert "1_broken.json: the file is not valid JSON/YAML" in message
        assert "2_wrong.json: Invalid inputs for workflow drop: `topic` must be str" in message
        (inbox / "3_good.json").write_text(json.dumps({"topic": "ok"}))
        later = tick(defs, skipped.cursor, instance)
        assert [r.run_config["ops"]["drop"]["config"] for r in later.run_requests] == [
            {"topic": "ok"}
        ]


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [*{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}]\n"
    for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_poison_files_are_skipped_with_a_reason_and_the_good_one_runs(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    defs, inbox = inbox_defs(tmp_path)
    poison = {
        "brackets.json": (b"[" * 100_000 + b"]" * 100_000, "the file nests deeper than 40 levels"),
        "digits.json": (
            b'{"topic": ' + b"9" * 5_000 + b"}",
            "the file cannot be read (Exceeds the limit (4300 digits) for integer string "
            "conversion: value has 5000 digits)",
        ),
        "bomb.yaml": (
            ALIAS_BOMB.encode(),
            "line 1: the document expands to more than 50,000 values (YAML aliases can "
            "multiply a small file)",
        ),
        "utf16.json": (
            '{"topic": "otters"}'.encode("utf-16"),
            "byte 0xff at offset 0 is not UTF-8",
        ),
    }
    for name, (raw, _) in poison.items():
        (inbox / name).write_bytes(raw)
    assert len(ALIAS_BOMB) < 500 and (inbox / "brackets.json").stat().st_size == 200_000
    # Files never read have no digest to remember: reported on every tick, for a stat.
    os.mkfifo(inbox / "pipe.json")
    (inbox / "big.json").write_bytes(b" " * 1_000_001)
    unread = {
        "pipe.json": "it is a named pipe (FIFO), not a regular file",
        "big.json": "the file is 1,000,001 bytes, over the 1,000,000-byte limit",
    }
    reasons = {name: reason for name, (_, reason) in poison.items()} | unread
    expected = sorted(f"{inbox / name}: {reason}" for name, reason in reasons.items())
    with dg.instance_for_test() as instance:
        # Only poison: the skip reason names each file.
        skipped = tick(defs, None, instance)
        assert skipped.run_requests == []
        assert sorted((skipped.skip_message or "").split("; ")) == expected
        capfd.readouterr()
        # With a good file beside them: it runs, and the tick log names each poison file.
        (inbox / "good.json").write_text(json.dumps({"topic": "otters"}))
        first = tick(defs, None, instance)
        assert [r.run_config["ops"]["drop"]["config"] for r in first.run_requests] == [
            {"topic": "otters"}
        ]
        logged = capfd.readouterr().err
        for reason in expected:
            assert f"Skipped input file {reason}" in logged
        assert len(json.loads(first.cursor or "")["digests"]) == 5  # the poison is not read again
        # The next tick neither fails, nor runs or reports anything again.
        again = tick(defs, first.cursor, instance)
        assert again.run_requests == []
        assert "no new files" in (again.skip_message or "")
        # A fixed file has a new change time: it is read again.
        (inbox / "big.json").write_text(json.dumps({"topic": "trimmed"}))
        fixed = tick(defs, first.cursor, instance)
        assert [r.run_config["ops"]["drop"]["config"] for r in fixed.run_requests] == [
            {"topic": "trimmed"}
        ]


def test_sensor_adds_dynamic_partitions(tmp_path: Path) -> None:
    defs, inbox = inbox_defs(tmp_path, "  partitions: {dynamic: true}\n")
    (inbox / "batch.jsonl").write_text('{"topic": "a"}\n{"topic": "b"}\n')
    with dg.instance_for_test() as instance:
        # Called directly: evaluate_tick would check the keys before the daemon adds them.
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        result = defs.resolve_sensor_def("drop_inbox")(context)
        assert isinstance(result, dg.SensorResult)
        keys = [r.partition_key for r in result.run_requests or []]
        assert len(keys) == 2 and all(k and k.startswith("batch-") for k in keys)
        (add,) = result.dynamic_partitions_requests or []
        assert list(add.partition_keys) == keys


# Partitions, lineage, retries, budgets, checks ------------------------------------------


def test_static_partitions_have_their_own_inputs_runs_and_costs(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    text = flow(
        "batch", "  partitions:\n    static:\n      fr: {topic: fromage}\n      de: {topic: kase}\n"
    )
    defs = defs_for(tmp_path, text)
    asset = defs.resolve_assets_def("batch")
    assert asset.partitions_def.get_partition_keys() == ["fr", "de"]
    assert asset.op.pool == "gemini"
    runs = {}
    for key in ("fr", "de"):
        result = materialize(defs, "batch", partition_key=key)
        assert result.success
        meta = metadata_of(result, "batch")
        run = MlflowClient().get_run(meta["mlflow_run_id"])
        assert run.data.tags["dagster.partition"] == key
        runs[key] = (result.asset_value("batch")["topic"], meta["mlflow_run_id"])
    assert runs["fr"][0] == "fromage" and runs["de"][0] == "kase"
    assert runs["fr"][1] != runs["de"][1]


def digest_and_article() -> tuple[str, str]:
    """`article` takes its `brief` from the `summary` of the `digest` workflow."""
    upstream = flow("digest", "")
    downstream = flow(
        "article",
        "  deps: [{workflow: digest, map: {brief: summary}}]\n  automation: eager\n",
        "\n    brief: {type: str}",
    )
    downstream = downstream.replace(
        'prompt: "Summarize {topic}."', 'prompt: "Expand {brief} about {topic}."'
    )
    return upstream, downstream


def test_lineage_feeds_upstream_outputs_into_inputs(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    defs = defs_for(tmp_path, *digest_and_article())
    asset = defs.resolve_assets_def("article")
    assert asset.asset_deps[dg.AssetKey("article")] == {dg.AssetKey("digest")}
    assert asset.automation_conditions_by_key[dg.AssetKey("article")] is not None
    result = materialize(defs, "digest", "article")
    assert result.success
    digest_summary = result.asset_value("digest")["summary"]
    assert result.asset_value("article")["brief"] == digest_summary


RAW_REVIEWS = dg.AssetKey("raw_reviews")
OWNERS = ["team:insights", "ana@example.com"]


class ReviewsTranslator(WorkflowTranslator):
    """A team's translator: an external table upstream of every workflow, owners, a tag.
    With ``replace``, it sets the deps outright, dropping the upstream workflow."""

    def __init__(self, replace: bool = False):
        self.replace = replace

    def get_asset_spec(self, workflow: Workflow) -> dg.AssetSpec:
        spec = super().get_asset_spec(workflow)
        if self.replace:
            spec = spec.replace_attributes(deps=[RAW_REVIEWS])
        else:
            spec = spec.merge_attributes(deps=[RAW_REVIEWS])
        return spec.merge_attributes(owners=OWNERS, tags={"tier": "gold"})


@pytest.mark.parametrize("replace", [False, True], ids=["added", "replaced"])
def test_a_translators_deps_and_owners_reach_the_asset_and_it_still_runs(
    tmp_path: Path, mlflow_uri: str, simulated: None, replace: bool
) -> None:
    defs = defs_for(tmp_path, *digest_and_article(), translator=ReviewsTranslator(replace))
    article, digest = dg.AssetKey("article"), dg.AssetKey("digest")
    asset = defs.resolve_assets_def("article")
    spec = asset.specs_by_key[article]
    # The translator's dep is a plain dep; the upstream workflow stays an input.
    assert {dep.asset_key for dep in spec.deps} == {digest, RAW_REVIEWS}
    assert asset.keys_by_input_name == {"digest": digest, "raw_reviews": RAW_REVIEWS}
    assert asset.op.ins["raw_reviews"].dagster_type.is_nothing
    assert not asset.op.ins["digest"].dagster_type.is_nothing
    assert spec.owners == OWNERS and spec.tags["tier"] == "gold"
    assert spec.kinds == {"langgraph", "gemini", "mlflow"}
    node = defs.resolve_asset_graph().get(article)
    assert node.parent_keys == {digest, RAW_REVIEWS}
    assert node.owners == OWNERS
    assert defs.resolve_asset_graph().get(RAW_REVIEWS).is_external
    result = materialize(defs, "digest", "article")
    assert result.success
    assert result.asset_value("article")["brief"] == result.asset_value("digest")["summary"]
    assert metadata_of(result, "article")["llm_backend"] == "simulated"


def test_lineage_to_an_unknown_workflow_fails_validation(tmp_path: Path) -> None:
    text = flow("article", "  deps: [{workflow: digset, map: {topic: summary}}]\n")
    with pytest.raises(
        WorkflowConfigError,
        match=r"orchestration\.deps\[0\]\.workflow: no "
        r"workflow named `digset` is loaded",
    ):
        defs_for(tmp_path, text)


@pytest.mark.parametrize(
    "fault", [Fault.server_error(503), Fault.rate_limit(retry_after_s=0.1)], ids=["503", "429"]
)
def test_transient_failure_is_retried_by_dagster_and_each_attempt_recorded(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer, fault: Fault
) -> None:
    text = flow("flaky", "  retry: {max_retries: 2, delay_s: 0}\n")
    text += "config:\n  llm: {max_retries: 0}\n"
    gemini.plan(fault)
    result = materialize(defs_for(tmp_path, text), "flaky")
    assert result.success
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("flaky").experiment_id]
    )
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    assert sum(r.data.metrics["llm_calls"] for r in runs) == 2


def test_permanent_failure_is_not_retried(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    text = flow("denied", "  retry: {max_retries: 2, delay_s: 0}\n")
    gemini.plan(Fault.permission_denied("no access to model"))
    result = materialize(defs_for(tmp_path, text), "denied")
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    failure = result.failure_data_for_node("denied")
    assert failure is not None and "Gemini 403" in failure.user_failure_data.description
    assert len(gemini.requests) == 1


def three_calls(budget: str) -> str:
    """Three calls in a row, of 205 tokens each (the loopback server's default usage)."""
    return workflow_yaml(
        "costly",
        ("one", "One {topic}", "a"),
        ("two", "Two {a}", "b"),
        ("three", "Three {b}", "c"),
        orchestration=f"inputs: {{topic: t}}\nbudget: {budget}",
    )


def test_budget_stops_calls_and_keeps_the_spend(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    text = three_calls("{max_total_tokens: 300}")
    result = materialize(defs_for(tmp_path, text), "costly")
    assert not result.success
    assert len(gemini.requests) == 2  # the third call was never made
    failure = result.failure_data_for_node("costly")
    assert failure is not None and failure.user_failure_data is not None
    assert "budget spent (410 of max_total_tokens 300)" in failure.user_failure_data.description
    assert failure.user_failure_data.metadata["total_tokens"].value == 410
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "budget" and not check.passed
    run = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("costly").experiment_id]
    )[0]
    assert run.info.status == "FAILED" and run.data.metrics["total_tokens"] == 410


def test_blocking_budget_check_stops_downstream(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    # Three calls of 205 tokens: the last call crosses 500, so the run finishes but the
    # check fails, and a blocking check keeps the downstream workflow from running.
    upstream = three_calls("{max_total_tokens: 500, blocking: true}")
    downstream = flow("after", "  deps: [{workflow: costly, map: {topic: c}}]\n")
    result = materialize(defs_for(tmp_path, upstream, downstream), "costly", "after")
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["budget"].passed
    assert checks["budget"].metadata["total_tokens"].value == 615
    assert result.asset_value("costly")["c"]
    assert not result.asset_materializations_for_node("after")


def test_output_checks(tmp_path: Path, mlflow_uri: str, simulated: None) -> None:
    text = flow(
        "checked",
        "  checks:\n    - {field: summary, min_length: 20}\n"
        "    - {field: summary, max_length: 5}\n"
        "  budget: {max_cost_usd: 1.0}\n",
    )
    result = materialize(defs_for(tmp_path, text), "checked")
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"budget": True, "summary_min_length_20": True, "summary_max_length_5": False}


def test_dagster_retry_of_a_rate_limit_waits_for_retry_after(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    import time as clock

    text = flow("limited", "  retry: {max_retries: 2, delay_s: 0}\n")
    text += "config:\n  llm: {max_retries: 0}\n"
    gemini.plan(Fault.rate_limit(retry_after_s=2.0))
    started = clock.monotonic()
    result = materialize(defs_for(tmp_path, text), "limited")
    assert result.success
    assert clock.monotonic() - started >= 2.0  # delay_s is 0: only Retry-After explains it
    assert len([e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]) == 1
    assert len(gemini.requests) == 2
