"""Time partitions (`orchestration.partitions.hourly|daily|weekly|monthly`): Dagster's own
definitions, a daily backfill through the real Gemini client, the schedule of the latest
complete partition, and the deps checks that partitions bring."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from mlflow import MlflowClient

from agents_pipelines.errors import WorkflowConfigError
from agents_pipelines.orchestration import WorkflowRunner, build_definitions, build_workflow_asset
from agents_pipelines.orchestration.asset_factory import run_config_schema
from agents_pipelines.spec import dependency_rules, load_workflow, load_workflow_text
from agents_pipelines.testing import GeminiLoopbackServer
from agents_pipelines.tracking import drain_trace_export
from conftest import metadata_of, write

RUNNER = {"workflow_runner": WorkflowRunner()}
# The loopback server's default usage per call, and MLflow's bundled gemini-2.5-flash
# prices (USD per million tokens), written out so the test is not circular.
PROMPT, CACHED, COMPLETION = 120, 20, 85
FLASH_COST = round(((PROMPT - CACHED) * 0.30 + CACHED * 0.03 + COMPLETION * 2.50) / 1e6, 9)

DIGEST = """\
schema_version: "1"
flow: {name: NAME}
state:
  fields:
    day: {type: str, required: true}
    topic: {type: str, default: news}
    summary: {type: str}
nodes:
  - {id: summarize, prompt: "Summarize the {topic} of {day}.", outputs: [summary]}
edges:
  - {from: START, to: summarize}
  - {from: summarize, to: END}
orchestration:
  partitions:
    PARTITIONS
"""
DAILY = 'daily: {start: "2026-11-01", field: day}'


def digest(name: str = "digest", partitions: str = DAILY, extra: str = "") -> str:
    return DIGEST.replace("NAME", name).replace("PARTITIONS", partitions) + extra


def defs_for(tmp_path: Path, *texts: str) -> dg.Definitions:
    folder = tmp_path / "workflows"
    folder.mkdir(exist_ok=True)
    for i, text in enumerate(texts):
        write(folder, text, f"wf{i}.yaml")
    return build_definitions(folder)


# Definitions ---------------------------------------------------------------------------


def test_daily_partitions_are_dagsters_with_start_end_and_time_zone(tmp_path: Path) -> None:
    partitions = (
        'daily: {start: "2026-11-01", end: "2026-11-04", timezone: Europe/Paris, field: day}'
    )
    asset = defs_for(tmp_path, digest(partitions=partitions)).resolve_assets_def("digest")
    definition = asset.partitions_def
    assert isinstance(definition, dg.DailyPartitionsDefinition)
    assert definition.timezone == "Europe/Paris"
    assert definition.start == datetime(2026, 10, 31, 23, tzinfo=UTC)  # midnight in Paris
    assert definition.end == datetime(2026, 11, 3, 23, tzinfo=UTC)
    assert keys_by_2030(definition) == ["2026-11-01", "2026-11-02", "2026-11-03"]


@pytest.mark.parametrize(
    ("partitions", "refused"),
    [
        # Dagster raised OverflowError as it listed these keys.
        ('daily: {start: "9999-12-31", field: day}', r"daily\.start: `9999-12-31` is outside"),
        # 739,954 daily keys: 9.6 s to list, whenever a schedule, a backfill or the UI asks.
        ('daily: {start: "0001-01-01", field: day}', r"daily\.start: `0001-01-01` is outside"),
        ('hourly: {start: "2000-01-01", field: day}', r"over the limit of 50,000"),
        # Accepted by zoneinfo, but no zone of the IANA database.
        ('daily: {start: "2026-11-01", timezone: localtime, field: day}', r"`localtime` is not"),
    ],
)
def test_partitions_out_of_bounds_fail_the_code_location_before_dagster_lists_them(
    tmp_path: Path, partitions: str, refused: str
) -> None:
    with pytest.raises(WorkflowConfigError) as caught:
        defs_for(tmp_path, digest(partitions=partitions))
    (issue,) = caught.value.issues
    assert re.match(r".*wf0\.yaml:15:\d+: orchestration\.partitions\.", str(issue)), issue
    assert re.search(refused, str(issue)) and issue.fix


def test_partitions_at_the_bounds_load_and_list(tmp_path: Path) -> None:
    partitions = 'daily: {start: "1970-01-01", end: "2100-01-01", timezone: US/Eastern, field: day}'
    definition = (
        defs_for(tmp_path, digest(partitions=partitions))
        .resolve_assets_def("digest")
        .partitions_def
    )
    assert definition is not None
    keys = keys_by_2030(definition)
    # US/Eastern, an IANA link name, is a zone: 2030-01-01 UTC is still Dec 31 in New York.
    assert (keys[0], keys[-1], len(keys)) == ("1970-01-01", "2029-12-30", 21_914)


def keys_by_2030(definition: dg.PartitionsDefinition) -> list[str]:
    """The keys once every partition has ended (Dagster lists only ended ones)."""
    with dg.partition_loading_context(effective_dt=datetime(2030, 1, 1, tzinfo=UTC)):
        return list(definition.get_partition_keys())


def test_the_key_field_is_left_out_of_the_run_config() -> None:
    spec = load_workflow_text(digest()).spec
    schema = run_config_schema(spec)
    assert list(schema) == ["topic"]  # `day` comes from the partition, never from config
    assert schema["topic"].default_value == "news"  # other inputs keep their defaults


@pytest.mark.parametrize(
    ("partitions", "kind", "keys"),
    [
        (
            'hourly: {start: "2026-11-01-22:00", end: "2026-11-02-01:00", field: day}',
            dg.HourlyPartitionsDefinition,
            ["2026-11-01-22:00", "2026-11-01-23:00", "2026-11-02-00:00"],
        ),
        (
            'hourly: {start: "2026-11-01", end: "2026-11-01-02:00", field: day}',
            dg.HourlyPartitionsDefinition,
            ["2026-11-01-00:00", "2026-11-01-01:00"],
        ),
        (  # 2026-11-01 is a Sunday, where Dagster's weeks start
            'weekly: {start: "2026-11-01", end: "2026-11-22", field: day}',
            dg.WeeklyPartitionsDefinition,
            ["2026-11-01", "2026-11-08", "2026-11-15"],
        ),
        (
            'monthly: {start: "2026-11-01", end: "2027-02-01", timezone: Asia/Tokyo, field: day}',
            dg.MonthlyPartitionsDefinition,
            ["2026-11-01", "2026-12-01", "2027-01-01"],
        ),
    ],
    ids=["hourly", "hourly-from-a-date", "weekly", "monthly"],
)
def test_hourly_weekly_and_monthly_partitions(
    tmp_path: Path, partitions: str, kind: type, keys: list[str]
) -> None:
    definition = (
        defs_for(tmp_path, digest(partitions=partitions))
        .resolve_assets_def("digest")
        .partitions_def
    )
    assert type(definition) is kind
    assert keys_by_2030(definition) == keys


# A 3-day backfill through the real Gemini client ------------------------------------------


def test_a_daily_backfill_runs_each_day_with_its_own_metadata_and_mlflow_run(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    asset = build_workflow_asset(load_workflow(write(tmp_path, digest())))
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    client = MlflowClient()
    run_ids = []
    for day in days:
        # What a date-range backfill launches: one run per partition.
        result = dg.materialize([asset], partition_key=day, resources=RUNNER)
        assert result.success
        assert gemini.requests[-1].prompt_text == f"Summarize the news of {day}."
        assert result.asset_value("digest")["day"] == day
        meta = metadata_of(result, "digest")
        run = client.get_run(meta["mlflow_run_id"])
        assert run.data.tags["dagster.partition"] == day
        assert run.data.tags["dagster.run_id"] == result.run_id
        run_ids.append(run.info.run_id)
        assert_one_truth(client, meta, run)
    assert len(gemini.requests) == 3 and len(set(run_ids)) == 3


def assert_one_truth(client: MlflowClient, meta: dict, run: mlflow.entities.Run) -> None:
    """One call's tokens and cost, equal in the metadata, MLflow, cost_summary.json and
    the trace."""
    assert (meta["llm_calls"], meta["total_tokens"]) == (1, PROMPT + COMPLETION)
    assert meta["total_cost_usd"] == pytest.approx(FLASH_COST, abs=1e-12)
    for key in ("total_tokens", "prompt_tokens", "completion_tokens", "total_cost_usd"):
        assert run.data.metrics[key] == meta[key], key
    summary = json.loads(
        Path(client.download_artifacts(run.info.run_id, "cost_summary.json")).read_text()
    )
    assert summary["totals"]["total_cost_usd"] == meta["total_cost_usd"]
    assert summary["totals"]["total_tokens"] == meta["total_tokens"]
    drain_trace_export()
    trace = mlflow.get_trace(meta["mlflow_trace_id"])
    assert trace.info.trace_metadata["mlflow.sourceRun"] == run.info.run_id
    assert trace.info.token_usage["total_tokens"] == meta["total_tokens"]
    cost = json.loads(trace.info.trace_metadata["mlflow.trace.cost"])
    assert cost["total_cost"] == meta["total_cost_usd"]


# The schedule ------------------------------------------------------------------------


def test_the_schedule_runs_the_latest_complete_partition(tmp_path: Path) -> None:
    schedule = 'schedule: {cron: "0 1 * * *", inputs: {topic: sport}}'
    text = digest(
        partitions='daily: {start: "2026-11-01", timezone: Europe/Paris, field: day}',
        extra=f"  {schedule}\n",
    )
    defs = defs_for(tmp_path, text)
    definition = defs.resolve_schedule_def("digest_schedule")
    assert definition.default_status == dg.DefaultScheduleStatus.STOPPED
    repository = defs.get_repository_def()

    def tick(at: datetime) -> dg.ScheduleExecutionData:
        with dg.build_schedule_context(scheduled_execution_time=at, repository_def=repository) as c:
            return definition.evaluate_tick(c)

    # 01:00 UTC on the 5th is 02:00 in Paris: the 4th is the last day that has ended.
    (request,) = tick(datetime(2026, 11, 5, 1, tzinfo=UTC)).run_requests or []
    assert (request.partition_key, request.run_key) == ("2026-11-04", "2026-11-04")
    assert request.run_config == {"ops": {"digest": {"config": {"topic": "sport"}}}}
    # 22:30 UTC on the 4th is already the 4th's last half hour in Paris: the 3rd.
    (request,) = tick(datetime(2026, 11, 4, 22, 30, tzinfo=UTC)).run_requests or []
    assert request.partition_key == "2026-11-03"
    before = tick(datetime(2026, 11, 1, 12, tzinfo=UTC))
    assert not before.run_requests
    assert before.skip_message == "no partition has ended yet (the first starts in the future)"


# Deps and partitions -------------------------------------------------------------------

POST = """\
schema_version: "1"
flow: {name: post}
state:
  fields:
    date: {type: str, required: true}
    brief: {type: BRIEF_TYPE, required: true}
    text: {type: str}
nodes:
  - {id: write, prompt: "Write about {brief} on {date}.", outputs: [text]}
edges:
  - {from: START, to: write}
  - {from: write, to: END}
orchestration:
  deps:
    - {workflow: digest, map: {brief: summary}}
PARTITIONS"""
DEP_LINE = 15  # the line of the `deps` entry in POST


def post(partitions: str = "", brief_type: str = "str") -> str:
    return POST.replace("BRIEF_TYPE", brief_type).replace("PARTITIONS", partitions)


def test_same_daily_partitions_map_a_day_to_the_same_day(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    downstream = post('  partitions:\n    daily: {start: "2026-11-01", field: date}\n')
    defs = defs_for(tmp_path, digest(), downstream)
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        partition_key="2026-11-02", asset_selection=[dg.AssetKey("digest"), dg.AssetKey("post")]
    )
    assert result.success
    upstream, state = result.asset_value("digest"), result.asset_value("post")
    assert state["date"] == upstream["day"] == "2026-11-02"
    assert state["brief"] == upstream["summary"]


@pytest.mark.parametrize(
    ("upstream", "downstream", "problem"),
    [
        (
            digest(),
            "",
            r"workflow `digest` is partitioned \(daily partitions from 2026-11-01 \(UTC\)\) "
            r"and this workflow is not: a run would be handed every partition of `digest` at "
            r"once.*Fix: give this workflow the same `orchestration\.partitions` as `digest`",
        ),
        (
            digest(),
            '  partitions:\n    daily: {start: "2026-11-02", field: date}\n',
            r"workflow `digest` has daily partitions from 2026-11-01 \(UTC\) but this workflow "
            r"has daily partitions from 2026-11-02 \(UTC\): each partition here must be exactly "
            r"one partition of `digest`",
        ),
        (
            digest(partitions="static: {a: {day: x}}"),
            "  partitions:\n    static: {a: {date: x}, b: {date: y}}\n",
            r"static partition\(s\) `b` of this workflow are not partitions of `digest`",
        ),
        (
            digest(partitions="dynamic: true", extra='  sensor: {path: "inbox/*.json"}\n'),
            "  partitions: {dynamic: true}\n  sensor: {path: 'inbox/*.json'}\n",
            r"workflow `digest` has dynamic partitions, which its sensor adds for it alone",
        ),
    ],
    ids=["not-partitioned", "other-start", "static-key-missing", "dynamic"],
)
def test_deps_on_a_partitioned_workflow_must_share_its_partitions(
    tmp_path: Path, upstream: str, downstream: str, problem: str
) -> None:
    with pytest.raises(WorkflowConfigError) as caught:
        defs_for(tmp_path, upstream, post(downstream))
    (issue,) = caught.value.issues
    assert (Path(issue.file).name, issue.line) == ("wf1.yaml", DEP_LINE)
    assert issue.path == "orchestration.deps[0].workflow"
    assert issue.fix
    assert re.search(problem, str(issue)), str(issue)


def test_deps_on_static_partitions_with_the_same_keys_load(tmp_path: Path) -> None:
    upstream = digest(partitions='static: {a: {day: "2026-11-01"}, b: {day: "2026-11-02"}}')
    downstream = post("  partitions:\n    static: {b: {date: x}}\n")
    defs = defs_for(tmp_path, upstream, downstream)
    assert defs.resolve_assets_def("post").partitions_def.get_partition_keys() == ["b"]


def test_a_dep_map_must_fit_the_input_type(tmp_path: Path) -> None:
    upstream = digest(partitions='daily: {start: "2026-11-01", field: day}')
    downstream = post(
        '  partitions:\n    daily: {start: "2026-11-01", field: date}\n', '"list[str]"'
    )
    with pytest.raises(WorkflowConfigError) as caught:
        defs_for(tmp_path, upstream, downstream)
    (issue,) = caught.value.issues
    assert (Path(issue.file).name, issue.line, issue.path) == (
        "wf1.yaml",
        DEP_LINE,
        "orchestration.deps[0].map.brief",
    )
    assert issue.problem == (
        "`summary` of workflow `digest` is str, but the input `brief` it feeds is list[str]: "
        "every run would fail on the input's type"
    )
    assert issue.fix == "declare `brief` as str, or map a list[str] field of `digest` to it"


@pytest.mark.parametrize(
    ("target", "source", "fits"),
    [
        ("float", "int", True),
        ("list[float]", "list[int]", True),
        ("dict[str, Any]", "dict[str, int]", True),
        ("int", "float", False),
        ("list[str]", "str", False),
        ("dict[str, str]", "list[str]", False),
        ("str", "dict[str, Any]", False),
    ],
)
def test_which_upstream_types_fit_an_input(target: str, source: str, fits: bool) -> None:
    assert dependency_rules.fits(target, source) is fits
