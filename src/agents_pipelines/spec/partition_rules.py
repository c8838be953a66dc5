"""Rules on time partitions (``orchestration.partitions.hourly|daily|weekly|monthly``), and
the dates they take.

The partition key is written to one input field, so that field must be a ``str`` input
that nothing else fills. Dates are parsed here, without Dagster, and the Dagster layer
builds its partitions definition from the same parsed values: what `validate` accepts is
what the code location builds.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from agents_pipelines.spec.cron import timezone_problem
from agents_pipelines.spec.findings import Finding, Hint
from agents_pipelines.spec.models import TimePartitions, WorkflowSpec

# Every kind takes a date; hourly partitions may also start at an hour, written as
# Dagster writes hourly partition keys.
_DATE = "%Y-%m-%d"
_FORMATS = {"hourly": (_DATE, "%Y-%m-%d-%H:%M")}
_EXAMPLES = {"hourly": '"2026-11-01" or "2026-11-01-06:00"'}


def partition_time(kind: str, text: str) -> datetime:
    """The (naive, wall-clock) time ``text`` stands for; ValueError if it is none."""
    for fmt in _FORMATS.get(kind, (_DATE,)):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValueError(f"`{text}` is not a date in the form {_example(kind)}")


def _example(kind: str) -> str:
    return _EXAMPLES.get(kind, '"2026-11-01" (YYYY-MM-DD)')


def time_partitions(spec: WorkflowSpec) -> Iterator[Finding]:
    partitions = spec.orchestration.partitions
    time = partitions.time if partitions is not None else None
    if time is None:
        return
    kind, config = time
    path = ("orchestration", "partitions", kind)
    yield from _dates(kind, config, path)
    if problem := timezone_problem(config.timezone):
        yield (*path, "timezone"), problem, "use a name such as UTC or Europe/Paris"
    yield from _key_field(spec, kind, config.field, path)
    if spec.orchestration.sensor is not None:
        yield (
            ("orchestration", "sensor"),
            f"the file-drop sensor starts runs without a partition key, and every run of a "
            f"{kind}-partitioned workflow needs one",
            "drop the sensor (a schedule or a backfill runs the partitions), or use "
            "`partitions: {dynamic: true}` with the sensor",
        )


def _dates(kind: str, config: TimePartitions, path: tuple[str, ...]) -> Iterator[Finding]:
    fix = f"write it as {_example(kind)}"
    try:
        start = partition_time(kind, config.start)
    except ValueError as exc:
        yield (*path, "start"), str(exc), fix
        start = None
    if config.end is None:
        return
    try:
        end = partition_time(kind, config.end)
    except ValueError as exc:
        yield (*path, "end"), str(exc), fix
        return
    if start is not None and end <= start:
        yield (
            (*path, "end"),
            f"end `{config.end}` is not after start `{config.start}`: there would be no "
            "partitions (the end is exclusive)",
            "set `end` after `start`, or leave it out for partitions that go on",
        )


def _key_field(
    spec: WorkflowSpec, kind: str, name: str, path: tuple[str, ...]
) -> Iterator[Finding]:
    """The field the partition key goes to: a ``str`` input that nothing else fills."""
    field = spec.state.fields.get(name)
    declare = f"declare it under state.fields as `{name}: {{type: str, required: true}}`"
    if field is None:
        strs = [n for n in spec.input_fields if spec.state.fields[n].type == "str"]
        fix = Hint(name, strs, "str inputs", then=f" (or {declare})") if strs else declare
        yield (*path, "field"), f"`{name}` is not a state field", fix
        return
    if field.type != "str":
        yield (
            (*path, "field"),
            f"`{name}` is {field.type}, but the {kind} partition key is a str such as "
            f"{_example(kind).split(' ')[0]}",
            f"declare `{name}: {{type: str}}`, or name another field",
        )
    writers = [node.id for node in spec.nodes if name in node.outputs]
    if writers:
        yield (
            (*path, "field"),
            f"`{name}` is written by node `{writers[0]}`, but the partition key goes to an "
            "input (a field no node writes)",
            f"name an input field here, or remove `{name}` from the outputs of `{writers[0]}`",
        )
    yield from _also_given(spec, kind, name)


def _also_given(spec: WorkflowSpec, kind: str, name: str) -> Iterator[Finding]:
    """A value for the key field elsewhere would either never be used or contradict the
    partition a run belongs to: the key always wins, so any other value is refused."""
    places: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        (("orchestration", "inputs"), spec.orchestration.inputs)
    ]
    if (schedule := spec.orchestration.schedule) is not None:
        places.append((("orchestration", "schedule", "inputs"), schedule.inputs))
    for where, inputs in places:
        if name in inputs:
            yield (
                (*where, name),
                f"`{name}` receives the {kind} partition key, so a value here would never be used",
                f"remove `{name}` from {'.'.join(where)}",
            )
