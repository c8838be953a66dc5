"""Rules on time partitions (``orchestration.partitions.hourly|daily|weekly|monthly``), and
the dates they take.

The partition key is written to one input field, so that field must be a ``str`` input
that nothing else fills. Dates are parsed here, without Dagster, and the Dagster layer
builds its partitions definition from the same parsed values: what `validate` accepts is
what the code location builds.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from datetime import datetime, timedelta
from typing import Any

from agents_pipelines.spec.cron import timezone_problem
from agents_pipelines.spec.findings import Finding, Hint
from agents_pipelines.spec.models import TimePartitions, WorkflowSpec

# Every kind takes a date; hourly partitions may also start at an hour, written as
# Dagster writes hourly partition keys.
_DATE = "%Y-%m-%d"
_FORMATS = {"hourly": (_DATE, "%Y-%m-%d-%H:%M")}
_EXAMPLES = {"hourly": '"2026-11-01" or "2026-11-01-06:00"'}

# Bounds (issue 20, item 5): `start: "9999-12-31"` made Dagster raise OverflowError as it
# listed partitions, and `start: "0001-01-01"` gave 739,954 daily keys, 9.6 s to list.
# Dagster lists 104,564 hourly keys in 1.2 s (get_partition_keys, measured on the dev
# machine), so the limit keeps a listing near 0.6 s: 5.7 years of hourly partitions.
EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(2100, 1, 1)
MAX_PARTITIONS = 50_000
_PERIODS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}


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
    start = yield from _parsed(kind, config.start, (*path, "start"))
    end = yield from _parsed(kind, config.end, (*path, "end"))
    if start is None or (config.end is not None and end is None):
        return
    if end is None:
        yield from _partition_count(kind, start, datetime.now(), (*path, "start"))
    elif end <= start:
        yield (
            (*path, "end"),
            f"end `{config.end}` is not after start `{config.start}`: there would be no "
            "partitions (the end is exclusive)",
            "set `end` after `start`, or leave it out for partitions that go on",
        )
    else:
        yield from _partition_count(kind, start, min(end, datetime.now()), (*path, "start"))


def _parsed(
    kind: str, text: str | None, path: tuple[str, ...]
) -> Generator[Finding, None, datetime | None]:
    """The time ``text`` stands for, when it is one within the bounds."""
    if text is None:
        return None
    try:
        when = partition_time(kind, text)
    except ValueError as exc:
        yield path, str(exc), f"write it as {_example(kind)}"
        return None
    if not EARLIEST <= when <= LATEST:
        yield (
            path,
            f"`{text}` is outside the years partitions may span, {EARLIEST:%Y-%m-%d} to "
            f"{LATEST:%Y-%m-%d}",
            f"give a date from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} (is the year a typo?)",
        )
        return None
    return when


def _partition_count(
    kind: str, start: datetime, until: datetime, path: tuple[str, ...]
) -> Iterator[Finding]:
    """Dagster lists every key from start to now (or the end) whenever a schedule, a backfill
    or the UI asks. Within the bounds only hourly ones can pass the limit (daily ones reach
    47,482 at most; monthly ones, 1,560)."""
    period = _PERIODS.get(kind)
    if period is None or (count := (until - start) // period) <= MAX_PARTITIONS:
        return
    yield (
        path,
        f"{kind} partitions from {start:%Y-%m-%d} would be {count:,} by {until:%Y-%m-%d}, "
        f"over the limit of {MAX_PARTITIONS:,}",
        f"start on {until - MAX_PARTITIONS * period:%Y-%m-%d} or later, or use coarser "
        "partitions (daily, weekly or monthly)",
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
