"""Schedules and file-drop sensors built from ``orchestration.schedule`` and ``.sensor``.

The sensor starts one run per input found in new files, at most ``max_runs_per_tick`` a
tick; which files are new, and the bounded cursor that says so, is ``inbox.py``'s. A file
that is not valid input is reported once by name and skipped; it never stops the files
after it. Files are never deleted or moved. Inbox files meet the limits of workflow files
(``inbox_inputs.py``), and a link that leads out of the inbox is refused unread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from agents_pipelines.orchestration.inbox import Found, InboxCursor, scan_inbox
from agents_pipelines.orchestration.inbox_inputs import (
    InputFileError,
    InputRecord,
    read_inputs,
    read_records,
)
from agents_pipelines.spec import Workflow

__all__ = [
    "InputFileError",
    "build_inbox_sensor",
    "build_schedule",
    "read_inputs",
    "run_config",
    "workflow_job",
]

_STATUS = {"running": dg.DefaultScheduleStatus.RUNNING, "stopped": dg.DefaultScheduleStatus.STOPPED}
_SENSOR_STATUS = {
    "running": dg.DefaultSensorStatus.RUNNING,
    "stopped": dg.DefaultSensorStatus.STOPPED,
}


def workflow_job(workflow: Workflow, asset: dg.AssetsDefinition) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{workflow.name}_job",
        selection=[asset.key],
        description=f"Materializes workflow {workflow.name}.",
    )


def run_config(asset: dg.AssetsDefinition, inputs: dict[str, Any]) -> dict[str, Any]:
    return {"ops": {asset.op.name: {"config": inputs}}}


def build_schedule(
    workflow: Workflow, asset: dg.AssetsDefinition, job: dg.UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition | None:
    """A schedule on ``orchestration.schedule.cron``: one run per tick, one per static
    partition, or, for time partitions, one run of the latest complete partition."""
    config = workflow.spec.orchestration.schedule
    if config is None:
        return None
    partitions = asset.partitions_def
    timed = partitions if isinstance(partitions, dg.TimeWindowPartitionsDefinition) else None
    statics = partitions if isinstance(partitions, dg.StaticPartitionsDefinition) else None
    keys = list(statics.get_partition_keys()) if statics is not None else [None]

    @dg.schedule(
        name=f"{workflow.name}_schedule",
        cron_schedule=config.cron,
        execution_timezone=config.timezone,
        job=job,
        default_status=_STATUS[config.default_status],
        description=f"Materializes {workflow.name} on `{config.cron}` ({config.timezone})"
        + (", the latest complete partition." if timed is not None else "."),
    )
    def _schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> Iterator[dg.RunRequest | dg.SkipReason]:
        if timed is not None:
            yield _latest_partition(context, timed, asset, config.inputs)
            return
        tick = (
            context.scheduled_execution_time.isoformat()
            if context.scheduled_execution_time
            else "manual"
        )
        for key in keys:
            yield dg.RunRequest(
                run_key=f"{tick}:{key}" if key else tick,
                run_config=run_config(asset, dict(config.inputs)),
                partition_key=key,
            )

    return _schedule


def _latest_partition(
    context: dg.ScheduleEvaluationContext,
    partitions: dg.TimeWindowPartitionsDefinition,
    asset: dg.AssetsDefinition,
    inputs: dict[str, Any],
) -> dg.RunRequest | dg.SkipReason:
    """The run of the last partition that ended by the tick, as Dagster's own partitioned
    schedules (``build_schedule_from_partitioned_job``) pick it, but with the schedule's
    inputs. The key is the run key too: a cron that ticks more often than the partitions
    (hourly ticks on daily partitions) runs each partition once."""
    with dg.partition_loading_context(effective_dt=context.scheduled_execution_time):
        key = partitions.get_last_partition_key()
    if key is None:
        return dg.SkipReason("no partition has ended yet (the first starts in the future)")
    return dg.RunRequest(run_key=key, run_config=run_config(asset, dict(inputs)), partition_key=key)


def build_inbox_sensor(
    workflow: Workflow, asset: dg.AssetsDefinition, job: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition | None:
    config = workflow.spec.orchestration.sensor
    if config is None:
        return None
    partitions = asset.partitions_def
    dynamic = partitions if isinstance(partitions, dg.DynamicPartitionsDefinition) else None

    @dg.sensor(
        name=f"{workflow.name}_inbox",
        job=job,
        minimum_interval_seconds=config.minimum_interval_seconds,
        default_status=_SENSOR_STATUS[config.default_status],
        description=f"One run of {workflow.name} per input dropped in `{config.path}`.",
    )
    def _inbox(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        def read(path: Path, raw: bytes, start: int) -> list[InputRecord]:
            return read_records(path, raw, workflow, start)

        cursor = InboxCursor.from_json(context.cursor)
        tick = scan_inbox(
            config.path, cursor, read, limit=config.max_runs_per_tick, now_ns=time.time_ns()
        )
        problems = [_skip(context, path, problem) for path, problem in tick.problems]
        if tick.waiting:
            context.log.info(
                f"{len(tick.found)} run(s) requested, the most a tick requests "
                f"(max_runs_per_tick: {config.max_runs_per_tick}): the next tick goes on"
            )
        requests = [_request(asset, found, dynamic is not None) for found in tick.found]
        if not requests:
            reason = "; ".join(problems) if problems else f"no new files in {config.path}"
            return dg.SensorResult(skip_reason=reason, cursor=tick.cursor.to_json())
        partition_requests = []
        if dynamic is not None:
            keys = [r.partition_key for r in requests if r.partition_key]
            partition_requests.append(dynamic.build_add_request(keys))
        return dg.SensorResult(
            run_requests=requests,
            cursor=tick.cursor.to_json(),
            dynamic_partitions_requests=partition_requests,
        )

    return _inbox


def _skip(context: dg.SensorEvaluationContext, path: Path, problem: str) -> str:
    context.log.warning(f"Skipped input file {path}: {problem}")
    return f"{path}: {problem}"


def _request(asset: dg.AssetsDefinition, found: Found, dynamic: bool) -> dg.RunRequest:
    suffix = f"-{found.line}" if found.line is not None else ""
    return dg.RunRequest(
        run_key=found.run_key,
        run_config=run_config(asset, found.inputs),
        partition_key=f"{found.path.stem}-{found.run_key[:8]}{suffix}" if dynamic else None,
        tags={"agents_pipelines/input_file": str(found.path)},
    )
