"""The shipped workflows/ (what `make dev` serves): every example runs, and together they show
what a newcomer looks for in the Dagster UI.

Examples are found by glob, so a new file in workflows/ is materialized here the day it is
added, in process, under the simulated backend. An example follows one convention: it runs
with no run config, as the UI's Materialize button runs it. Its inputs come from

- `orchestration.inputs`;
- its partition: the first partition key runs (a static partition's inputs; a time
  partition's key, written to its `field`; a dynamic partition `example` is added first);
- its upstream workflows (`orchestration.deps[].map`): they are materialized first, in the same
  Dagster instance, whose IO manager hands their final state down.

A Python step or tool imports its module (`shop/`) from the folder the code location runs in:
the repository, for `make dev`. The definitions are loaded from there, as Dagster loads them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from agents_pipelines.graph.state import initial_state
from agents_pipelines.orchestration import build_definitions
from agents_pipelines.orchestration.automation import read_inputs
from agents_pipelines.orchestration.inputs import resolve_inputs
from agents_pipelines.spec import Workflow, load_workflow
from conftest import EXAMPLES, REPO, docs_section, metadata_of

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
STOPPED = (dg.DefaultScheduleStatus.STOPPED, dg.DefaultSensorStatus.STOPPED)


@contextlib.contextmanager
def in_repository() -> Iterator[None]:
    """Where `make dev` runs the code location: sensor globs and `shop/` are relative to it."""
    with contextlib.chdir(REPO):
        yield


def shipped() -> tuple[dg.Definitions, dict[str, Workflow]]:
    with in_repository():
        workflows = {w.name: w for w in map(load_workflow, EXAMPLE_FILES)}
        return build_definitions(EXAMPLES), workflows


def upstream_first(workflow: Workflow, workflows: dict[str, Workflow]) -> list[Workflow]:
    order: list[Workflow] = []
    for dep in workflow.spec.orchestration.deps:
        order += [w for w in upstream_first(workflows[dep.workflow], workflows) if w not in order]
    return [*order, workflow]


def partition_key(asset: dg.AssetsDefinition, instance: dg.DagsterInstance) -> str | None:
    partitions = asset.partitions_def
    if partitions is None:
        return None
    if isinstance(partitions, dg.DynamicPartitionsDefinition):
        instance.add_dynamic_partitions(partitions.name or "", ["example"])
        return "example"
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        return partitions.get_first_partition_key()


def expected_inputs(
    workflow: Workflow, key: str | None, upstream: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The inputs the convention above gives the run."""
    orchestration = workflow.spec.orchestration
    inputs = dict(orchestration.inputs)
    partitions = orchestration.partitions
    if key is not None and partitions is not None:
        if partitions.static:
            inputs |= partitions.static[key]
        if (time := partitions.time) is not None:
            inputs[time[1].field] = key
    for dep in orchestration.deps:
        inputs |= {target: upstream[dep.workflow][source] for target, source in dep.map.items()}
    return {name: value for name, value in inputs.items() if name in workflow.spec.input_fields}


def materialize(
    defs: dg.Definitions,
    name: str,
    instance: dg.DagsterInstance,
    key: str | None = None,
    run_config: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey(name)],
        instance=instance,
        partition_key=key,
        run_config=run_config or {},
        raise_on_error=False,
    )
    assert result.success, [event.message for event in result.get_step_failure_events()]
    assert metadata_of(result, name)["llm_backend"] == "simulated"
    return result


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: path.stem)
def test_each_example_materializes_on_its_own_inputs(
    path: Path, tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    defs, workflows = shipped()
    target = workflows[load_workflow(path).name]
    states: dict[str, dict[str, Any]] = {}
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        for workflow in upstream_first(target, workflows):
            key = partition_key(defs.resolve_assets_def(workflow.name), instance)
            result = materialize(defs, workflow.name, instance, key)
            state = result.asset_value(workflow.name)
            expected = expected_inputs(workflow, key, states)
            assert {name: state[name] for name in expected} == expected
            assert set(state) == set(workflow.spec.state.fields)
            states[workflow.name] = state


def test_the_examples_show_what_a_newcomer_looks_for() -> None:
    """A schedule and a sensor (stopped until turned on: nothing runs, nothing is spent by
    itself), a partitioned workflow, and lineage between two workflows."""
    defs, _ = shipped()
    automations = [*(defs.schedules or []), *(defs.sensors or [])]
    statuses = {d.name: d.default_status for d in automations}
    assert {"release_notes_schedule", "support_triage_inbox"} <= set(statuses)
    assert set(statuses.values()) <= set(STOPPED), statuses
    blurb = defs.resolve_assets_def("product_blurb")
    assert blurb.partitions_def is not None
    assert blurb.partitions_def.get_partition_keys() == ["en", "fr", "de"]
    assert {key.name for key in blurb.check_keys} == {"blurb_not_empty_true", "budget"}
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("release_announcement")).parent_keys == {
        dg.AssetKey("release_notes")
    }


def state_of_request(defs: dg.Definitions, workflow: Workflow, request: dg.RunRequest) -> Any:
    """The first state of the run ``request`` starts: its run config, checked by Dagster as
    the daemon would launch it, then merged as the asset merges it. (Each example's
    materialization is tested above: running the request again would only repeat it.)"""
    job = defs.resolve_job_def(f"{workflow.name}_job")
    config = dg.validate_run_config(job, dict(request.run_config))["ops"][workflow.name]["config"]
    inputs = resolve_inputs(workflow.spec, request.partition_key, config, {})
    return initial_state(workflow.spec, inputs)


def test_each_schedule_tick_starts_a_valid_run() -> None:
    defs, workflows = shipped()
    tick = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    schedules = [s for s in defs.schedules or [] if isinstance(s, dg.ScheduleDefinition)]
    assert schedules
    with dg.instance_for_test() as instance:
        for schedule in schedules:
            workflow = workflows[schedule.name.removesuffix("_schedule")]
            # Closed with `with`: an open context leaves the instance set as Dagster's current
            # state storage, which later definitions in this process would then read.
            with dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=tick,
                repository_def=defs.get_repository_def(),  # a partitioned job is looked up
            ) as context:
                (request, *_) = schedule.evaluate_tick(context).run_requests or []
            state = state_of_request(defs, workflow, request)
            config = workflow.spec.orchestration.schedule
            assert config is not None
            expected = expected_inputs(workflow, request.partition_key, {}) | config.inputs
            assert {name: state[name] for name in expected} == expected


def test_each_sample_inbox_file_starts_a_valid_run() -> None:
    defs, workflows = shipped()
    sensed = [w for w in workflows.values() if w.spec.orchestration.sensor is not None]
    assert sensed
    with dg.instance_for_test() as instance:
        for workflow in sensed:
            config = workflow.spec.orchestration.sensor
            assert config is not None
            path = config.path
            sensor = defs.resolve_sensor_def(f"{workflow.name}_inbox")
            context = dg.build_sensor_context(instance=instance, definitions=defs)
            with in_repository():
                samples = sorted(Path().glob(path))
                result = sensor.evaluate_tick(context)
            assert samples, f"no sample file matches {path}"
            assert result.skip_message is None
            records = [
                (str(sample), record)
                for sample in samples
                for record in read_inputs(sample, (REPO / sample).read_bytes(), workflow)
            ]
            requests = result.run_requests or []
            assert [r.tags["agents_pipelines/input_file"] for r in requests] == [
                sample for sample, _ in records
            ]
            for request, (_, record) in zip(requests, records, strict=True):
                state = state_of_request(defs, workflow, request)
                assert {name: state[name] for name in record} == record


def test_the_readme_says_what_each_example_shows() -> None:
    table = docs_section("The shipped examples")
    listed = re.findall(r"^\| `([\w.]+\.yaml)` \|", table, re.M)
    assert sorted(listed) == [path.name for path in EXAMPLE_FILES]  # each file, once
