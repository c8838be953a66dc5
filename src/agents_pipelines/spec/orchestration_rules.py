"""Rules on orchestration and observability: cron and time zones, partitions, upstream
deps, asset checks, and the MLflow tracking URI."""

from __future__ import annotations

from collections.abc import Iterator

from agents_pipelines.spec import field_types
from agents_pipelines.spec.cron import cron_problem, timezone_problem
from agents_pipelines.spec.findings import Finding, Hint
from agents_pipelines.spec.models import OnCron, WorkflowSpec

_TRACKING_SCHEMES = (
    "sqlite:",
    "file:",
    "postgresql",
    "mysql",
    "mssql",
    "http:",
    "https:",
    "databricks",
)


def orchestration_settings(spec: WorkflowSpec) -> Iterator[Finding]:
    orchestration = spec.orchestration
    crons = []
    if orchestration.schedule is not None:
        schedule = orchestration.schedule
        crons.append((("orchestration", "schedule"), schedule.cron, schedule.timezone))
    if isinstance(orchestration.automation, OnCron):
        automation = orchestration.automation
        crons.append((("orchestration", "automation"), automation.on_cron, automation.timezone))
    for path, cron, timezone in crons:
        if problem := cron_problem(cron):
            key = "cron" if path[-1] == "schedule" else "on_cron"
            yield (
                (*path, key),
                f"invalid cron expression `{cron}`: {problem}",
                'use 5 fields, e.g. "0 9 * * *" for 09:00 every day, "0 9 L * *" for the '
                "last day of each month, or @daily",
            )
        if problem := timezone_problem(timezone):
            yield (*path, "timezone"), problem, "use a name such as UTC or Europe/Paris"
    partitions = orchestration.partitions
    if partitions is not None and partitions.dynamic and orchestration.sensor is None:
        yield (
            ("orchestration", "partitions", "dynamic"),
            ("dynamic partitions are added by the file-drop sensor, but there is no sensor"),
            'add `sensor: {path: "inbox/<flow>/*.json"}`, or use static partitions',
        )
    yield from _backfill(spec)
    inputs = spec.input_fields
    for i, dep in enumerate(orchestration.deps):
        for name in dep.map:
            if name not in inputs:
                yield (
                    ("orchestration", "deps", i, "map", name),
                    (f"`{name}` is not an input of this workflow"),
                    Hint(name, inputs, "input fields"),
                )
    yield from _output_checks(spec)
    yield from _spend_limits(spec)


def _spend_limits(spec: WorkflowSpec) -> Iterator[Finding]:
    seen: set[str] = set()
    for i, limit in enumerate(spec.orchestration.spend_limits):
        path = ("orchestration", "spend_limits", i)
        if limit.per in seen:
            yield (
                (*path, "per"),
                f"a second spend limit per {limit.per}: each window has one limit",
                f"keep one `per: {limit.per}` limit (the lower one applies anyway)",
            )
        seen.add(limit.per)
        if problem := timezone_problem(limit.timezone):
            yield (*path, "timezone"), problem, "use a name such as UTC or Europe/Paris"


def _output_checks(spec: WorkflowSpec) -> Iterator[Finding]:
    names: set[str] = set()
    for i, check in enumerate(spec.orchestration.checks):
        path = ("orchestration", "checks", i)
        field = spec.state.fields.get(check.field)
        if field is None:
            yield (
                (*path, "field"),
                f"check names unknown state field `{check.field}`",
                Hint(check.field, list(spec.state.fields), "state fields"),
            )
            continue
        ((rule, _),) = check.rules().items()
        sized = field.type == "str" or field_types.element_name(field.type) is not None
        if rule in ("min_length", "max_length") and not sized:
            problem = f"`{rule}` needs a str, list or dict field; `{check.field}` is {field.type}"
            yield (*path, rule), problem, "use min or max"
        if rule in ("min", "max") and not field_types.is_numeric(field.type):
            problem = f"`{rule}` needs an int or float field; `{check.field}` is {field.type}"
            yield (*path, rule), problem, "use min_length or max_length"
        if check.name in names:
            yield path, "the same check is listed twice", "list each check once"
        names.add(check.name)


def tracking_uri(spec: WorkflowSpec) -> Iterator[Finding]:
    uri = spec.config.observability.mlflow.tracking_uri
    if not uri.startswith(_TRACKING_SCHEMES):
        yield (
            ("config", "observability", "mlflow", "tracking_uri"),
            (f"`{uri}` is not a tracking URI MLflow knows"),
            "use sqlite:///mlflow.db, postgresql://..., http(s)://host:port or file:///path",
        )


def _backfill(spec: WorkflowSpec) -> Iterator[Finding]:
    """Ranges need keys known before the run: static or time partitions."""
    orchestration = spec.orchestration
    if orchestration.backfill is None:
        return
    partitions = orchestration.partitions
    if partitions is None or partitions.dynamic:
        what = "no partitions" if partitions is None else "dynamic partitions"
        yield (
            ("orchestration", "backfill"),
            f"`backfill` groups partitions into runs, but this workflow has {what}",
            "add static or time partitions, e.g. "
            '`partitions: {daily: {start: "2026-10-01", field: day}}`, or remove `backfill`',
        )
