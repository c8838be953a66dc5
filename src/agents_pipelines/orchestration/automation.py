"""Schedules and file-drop sensors built from ``orchestration.schedule`` and ``.sensor``.

The sensor starts one run per input found in new files. Its cursor holds the SHA-256 of
every file it has read, so a restart or a rename never runs a file twice (run keys are
derived from the same digest, so Dagster would drop a repeat anyway). A file that is not
valid input is reported by name and skipped; it never stops the files after it. Files are
never deleted or moved. Inbox files meet the limits of workflow files (``spec.files`` and the
YAML reader): a poison file is reported once, by its digest; a file that cannot be read at all
has no digest, and is reported on every tick until it is fixed, for the cost of a stat.
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from agents_pipelines.errors import ConfigIssue, InvalidInputsError, WorkflowConfigError
from agents_pipelines.spec import Workflow
from agents_pipelines.spec.files import UnreadableFileError, read_limited
from agents_pipelines.spec.yaml_source import MAX_DEPTH, parse_yaml

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


class InputFileError(ValueError):
    """A dropped file does not hold valid input for the workflow."""


def read_inputs(path: Path, raw: bytes, workflow: Workflow) -> list[dict[str, Any]]:
    """The input objects in ``raw``, the bytes of ``path`` (JSON or YAML: one object; JSONL:
    one per line), held to the limits of workflow files: YAML goes through the workflow
    reader (aliases, depth), and JSON is held to the same depth."""
    # The graph package pulls in LangGraph: import on a sensor tick, not at load.
    from agents_pipelines.graph.state import initial_state

    records = _records(path, raw)
    for index, record in enumerate(records):
        where = f"line {index + 1}: " if len(records) > 1 else ""
        if not isinstance(record, dict):
            raise InputFileError(f"{where}an input must be a mapping of field to value")
        try:
            initial_state(workflow.spec, record)
        except InvalidInputsError as exc:
            raise InputFileError(f"{where}{exc}") from None
    if not records:
        raise InputFileError("it holds no input")
    return records


def _records(path: Path, raw: bytes) -> list[Any]:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        try:
            return [parse_yaml(raw, str(path)).data]
        except WorkflowConfigError as exc:
            raise InputFileError(_yaml_problem(exc.issues[0])) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8"
        ) from None
    if suffix == ".json":
        return [_parse_json(text, "the file")]
    lines = enumerate(text.splitlines(), start=1)
    return [_parse_json(line, f"line {number}") for number, line in lines if line.strip()]


def _yaml_problem(issue: ConfigIssue) -> str:
    """The problem the YAML reader found; its fix speaks of workflow files, so it is left out."""
    return f"line {issue.line}: {issue.problem}" if issue.line else issue.problem


def _parse_json(text: str, where: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{where} is not valid JSON/YAML ({exc})") from None
    except ValueError as exc:  # a 5,000-digit integer: Python's int-string conversion limit
        raise InputFileError(f"{where} cannot be read ({str(exc).split(';')[0]})") from None
    except RecursionError:  # json recurses once per bracket: 200 KB of `[` is enough
        raise InputFileError(f"{where} nests deeper than {MAX_DEPTH} levels") from None
    if _deeper_than(value, MAX_DEPTH):
        raise InputFileError(f"{where} nests deeper than {MAX_DEPTH} levels")
    return value


def _deeper_than(value: Any, depth: int) -> bool:
    """Whether a value lies more than ``depth`` levels down (the YAML reader's count)."""
    level = [value]
    for _ in range(depth + 1):
        level = [child for item in level for child in _children(item)]
        if not level:
            return False
    return True


def _children(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        return value.values()
    return value if isinstance(value, list) else ()


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
        seen: set[str] = set(json.loads(context.cursor)) if context.cursor else set()
        requests: list[dg.RunRequest] = []
        problems: list[str] = []
        for name in sorted(glob.glob(config.path)):
            path = Path(name)
            if path.is_dir():
                continue  # a subfolder, such as one for processed files
            try:
                raw = read_limited(path)
            except UnreadableFileError as exc:
                # No digest without the bytes: reported on every tick until it is fixed or
                # removed, which costs a stat (and an open), never a read.
                problems.append(_skip(context, path, exc.problem))
                continue
            digest = hashlib.sha256(raw).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)  # a bad file is reported once; fixing it changes its digest
            try:
                records = read_inputs(path, raw, workflow)
            except InputFileError as exc:
                problems.append(_skip(context, path, str(exc)))
                continue
            requests += _requests(asset, path, digest, records, dynamic is not None)
        cursor = json.dumps(sorted(seen))
        if not requests:
            reason = "; ".join(problems) if problems else f"no new files in {config.path}"
            return dg.SensorResult(skip_reason=reason, cursor=cursor)
        partition_requests = []
        if dynamic is not None:
            keys = [r.partition_key for r in requests if r.partition_key]
            partition_requests.append(dynamic.build_add_request(keys))
        return dg.SensorResult(
            run_requests=requests, cursor=cursor, dynamic_partitions_requests=partition_requests
        )

    return _inbox


def _skip(context: dg.SensorEvaluationContext, path: Path, problem: str) -> str:
    context.log.warning(f"Skipped input file {path}: {problem}")
    return f"{path}: {problem}"


def _requests(
    asset: dg.AssetsDefinition,
    path: Path,
    digest: str,
    records: list[dict[str, Any]],
    dynamic: bool,
) -> list[dg.RunRequest]:
    requests = []
    for index, record in enumerate(records):
        suffix = f"-{index + 1}" if len(records) > 1 else ""
        requests.append(
            dg.RunRequest(
                run_key=f"{digest}{suffix}",
                run_config=run_config(asset, record),
                partition_key=f"{path.stem}-{digest[:8]}{suffix}" if dynamic else None,
                tags={"agents_pipelines/input_file": str(path)},
            )
        )
    return requests
