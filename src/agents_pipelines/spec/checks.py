"""Checks that span sections of a workflow: they run after the models validate.

Each check yields ``(path, problem, fix)``; the caller locates the path in the file.
All checks run, so a file with five problems reports five.

A did-you-mean fix compares a name against every option with difflib: for a generated
file with thousands of bad edges that is quadratic, so only the first MAX_HINTS findings
get one; the rest name the options (or, when there are many, just say what to check).
"""

from __future__ import annotations

import difflib
import functools
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from agents_pipelines.spec import field_types
from agents_pipelines.spec.cron import cron_problem, timezone_problem
from agents_pipelines.spec.models import END, START, Condition, OnCron, WorkflowSpec
from agents_pipelines.spec.placeholders import PlaceholderError, parse_template

MAX_HINTS = 20  # findings that get a did-you-mean search
MAX_LISTED = 10  # options a fix lists in full


@dataclass(frozen=True)
class Hint:
    """A fix that suggests the closest of ``options`` to ``word``, worked out on demand."""

    word: str
    options: Sequence[str]
    what: str  # "nodes", "state fields"...
    then: str = ""  # appended to the suggestion

    def text(self, search: bool) -> str:
        match = difflib.get_close_matches(self.word, self.options, 1, 0.5) if search else []
        if match:
            found = f"did you mean `{match[0]}`?"
        elif len(self.options) <= MAX_LISTED:
            found = f"use one of the {self.what}: " + ", ".join(f"`{o}`" for o in self.options)
        else:
            found = f"check the name against the {len(self.options)} {self.what}"
        return found + self.then


Path = tuple[str | int, ...]
Finding = tuple[Path, str, str | Hint]
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


def run_checks(spec: WorkflowSpec) -> list[tuple[Path, str, str]]:
    checks = (_state, _nodes, _prompts, _edges, _inputs, _orchestration, _tracking)
    findings = [finding for check in checks for finding in check(spec)]
    if not any(path[0] == "edges" for path, _, _ in findings):
        # Reachability only means something once every edge names a real node.
        findings += _graph(spec)
    return [
        (path, problem, fix if isinstance(fix, str) else fix.text(search=i < MAX_HINTS))
        for i, (path, problem, fix) in enumerate(findings)
    ]


def _a(type_name: str) -> str:
    """`a str`, `an int`: the article for a field type."""
    return ("an " if type_name.startswith("int") else "a ") + type_name


def _state(spec: WorkflowSpec) -> Iterator[Finding]:
    written = spec.written_fields
    for name, field in spec.state.fields.items():
        path = ("state", "fields", name)
        if field.required and field.default is not None:
            yield (
                (*path, "default"),
                "a required field takes no default",
                ("drop `default`, or drop `required: true`"),
            )
        if field.required and name in written:
            yield (
                (*path, "required"),
                f"`{name}` is required as an input, but a node writes it",
                ("drop `required: true`; required marks fields a run is given"),
            )
        if field.default is not None and (err := _type_error(field.type, field.default)):
            yield (
                (*path, "default"),
                f"the default does not fit type {field.type}: {err}",
                f"give {_a(field.type)} value",
            )


def _type_error(type_name: str, value: Any) -> str | None:
    try:
        _adapter(type_name).validate_python(value, strict=True)
    except ValidationError as exc:
        return exc.errors(include_url=False)[0]["msg"]
    return None


@functools.cache
def _adapter(type_name: str) -> TypeAdapter[Any]:
    """Building a TypeAdapter costs far more than using it; there are a dozen type names."""
    return TypeAdapter(field_types.python_type(type_name))


def _nodes(spec: WorkflowSpec) -> Iterator[Finding]:
    fields = list(spec.state.fields)
    first_index: dict[str, int] = {}
    writers: dict[str, list[str]] = defaultdict(list)
    for i, node in enumerate(spec.nodes):
        if node.id in first_index:
            first = first_index[node.id]
            yield (
                ("nodes", i, "id"),
                f"duplicate node id `{node.id}` (also nodes[{first}])",
                ("give each node its own id"),
            )
        first_index.setdefault(node.id, i)
        for j, output in enumerate(node.outputs):
            writers[output].append(node.id)
            if output not in spec.state.fields:
                yield (
                    ("nodes", i, "outputs", j),
                    f"output `{output}` is not a state field",
                    Hint(
                        output,
                        fields,
                        "state fields",
                        f" Or declare `{output}` under state.fields.",
                    ),
                )
        if len(set(node.outputs)) != len(node.outputs):
            yield ("nodes", i, "outputs"), "an output is listed twice", "list each field once"


def _prompts(spec: WorkflowSpec) -> Iterator[Finding]:
    fields = list(spec.state.fields)
    for i, node in enumerate(spec.nodes):
        for key in ("prompt", "system"):
            text = getattr(node, key)
            if text is None:
                continue
            try:
                template = parse_template(text)
            except PlaceholderError as exc:
                yield ("nodes", i, key), exc.problem, exc.fix
                continue
            for name in template.fields:
                if name not in spec.state.fields:
                    yield (
                        ("nodes", i, key),
                        f"placeholder {{{name}}} names no state field",
                        (Hint(name, fields, "state fields")),
                    )


def _edges(spec: WorkflowSpec) -> Iterator[Finding]:
    ids = [node.id for node in spec.nodes]
    sources = [*ids, START]
    targets = [*ids, END]
    known_sources, known_targets = set(sources), set(targets)
    routed: dict[str, int] = {}
    plain: dict[str, int] = {}
    for i, edge in enumerate(spec.edges):
        for j, source in enumerate(edge.sources):
            where = ("edges", i, "from") + ((j,) if isinstance(edge.source, list) else ())
            if source not in known_sources:
                yield (
                    where,
                    f"edge starts at unknown node `{source}`",
                    Hint(source, sources, "nodes"),
                )
            (routed if edge.routes else plain).setdefault(source, i)
        if edge.to is not None and edge.to not in known_targets:
            yield (
                ("edges", i, "to"),
                f"edge goes to unknown node `{edge.to}`",
                Hint(edge.to, targets, "nodes"),
            )
        if START in edge.sources and isinstance(edge.source, list):
            yield ("edges", i, "from"), "START cannot be part of a join", "use `from: START`"
        yield from _routes(spec, i, targets)
    for source, i in routed.items():
        if source in plain:
            yield (
                ("edges", i, "from"),
                (f"`{source}` has both routes and a plain edge (edges[{plain[source]}])"),
                "move the plain edge into the routes, as the last route without `when`",
            )
    if START not in plain and START not in routed:
        yield (
            ("edges",),
            "nothing starts the graph",
            ("add an edge from START, such as `{from: START, to: " + ids[0] + "}`"),
        )


def _routes(spec: WorkflowSpec, i: int, targets: list[str]) -> Iterator[Finding]:
    routes = spec.edges[i].routes or []
    for k, route in enumerate(routes):
        path = ("edges", i, "routes", k)
        if route.to not in targets:
            yield (
                (*path, "to"),
                f"route goes to unknown node `{route.to}`",
                Hint(route.to, targets, "nodes"),
            )
        last = k == len(routes) - 1
        if route.when is None and not last:
            yield (
                path,
                "only the last route may leave out `when`",
                ("move the default route to the end"),
            )
        if route.when is not None:
            if last:
                yield (
                    path,
                    "the last route needs no `when`: it is the default",
                    ("add a final route without `when`, e.g. `{to: END}`"),
                )
            yield from _condition(spec, route.when, (*path, "when"))


def _condition(spec: WorkflowSpec, cond: Condition, path: tuple[Any, ...]) -> Iterator[Finding]:
    field = spec.state.fields.get(cond.field)
    if field is None:
        yield (
            (*path, "field"),
            f"condition names unknown state field `{cond.field}`",
            Hint(cond.field, list(spec.state.fields), "state fields"),
        )
        return
    ((operator, value),) = cond.operators().items()
    if operator in ("gt", "gte", "lt", "lte") and not field_types.is_numeric(field.type):
        problem = f"`{operator}` compares numbers, but `{cond.field}` is {field.type}"
        yield (*path, operator), problem, "use equals, not_equals, in, contains or is_empty"
    if (
        operator == "contains"
        and field_types.element_name(field.type) is None
        and (field.type != "str")
    ):
        problem = f"`contains` needs a str, list or dict field; `{cond.field}` is {field.type}"
        yield (*path, operator), problem, "use equals or not_equals"
    if operator in ("equals", "not_equals") and (err := _type_error(field.type, value)):
        yield (
            (*path, operator),
            f"`{value!r}` cannot equal {_a(field.type)} field: {err}",
            f"compare with {_a(field.type)} value",
        )
    if operator == "in":
        # Like equals: a value of another type can never match, so the route is dead.
        bad = [(item, err) for item in value if (err := _type_error(field.type, item))]
        if bad:
            listed = ", ".join(repr(item) for item, _ in bad)
            yield (
                (*path, operator),
                f"`in` lists {listed}, which cannot equal {_a(field.type)} field: {bad[0][1]}",
                f"list only {field.type} values",
            )


def _graph(spec: WorkflowSpec) -> Iterator[Finding]:
    successors: dict[str, set[str]] = defaultdict(set)
    for edge in spec.edges:
        targets = [r.to for r in edge.routes] if edge.routes else [edge.to or END]
        for source in edge.sources:
            successors[source].update(targets)
    reachable = _reach(START, successors)
    for i, node in enumerate(spec.nodes):
        if node.id not in reachable:
            yield (
                ("nodes", i, "id"),
                f"node `{node.id}` can never run: no edge leads to it",
                (f"add an edge to `{node.id}` (from START or another node), or delete the node"),
            )
    # A node with no outgoing edge ends its branch, as in LangGraph.
    ends = {n.id for n in spec.nodes if not successors.get(n.id)} | {END}
    predecessors: dict[str, set[str]] = defaultdict(set)
    for source, nexts in successors.items():
        for target in nexts:
            predecessors[target].add(source)
    finishing: set[str] = set().union(*(_reach(end, predecessors) for end in ends))
    for i, node in enumerate(spec.nodes):
        if node.id in reachable and node.id not in finishing:
            problem = f"node `{node.id}` has no path to END: the graph loops forever once there"
            yield ("nodes", i, "id"), problem, "add a route to END (e.g. `{to: END}` as default)"


def _reach(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, queue = {start}, deque([start])
    while queue:
        for nxt in graph.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def _inputs(spec: WorkflowSpec) -> Iterator[Finding]:
    orchestration = spec.orchestration
    yield from _input_values(spec, orchestration.inputs, ("orchestration", "inputs"))
    if orchestration.schedule is not None:
        path = ("orchestration", "schedule")
        yield from _input_values(spec, orchestration.schedule.inputs, (*path, "inputs"))
    if orchestration.partitions is not None and orchestration.partitions.static:
        for key, values in orchestration.partitions.static.items():
            yield from _input_values(spec, values, ("orchestration", "partitions", "static", key))


def _input_values(
    spec: WorkflowSpec, values: dict[str, Any], at: tuple[Any, ...]
) -> Iterator[Finding]:
    inputs = spec.input_fields
    for name, value in values.items():
        path = (*at, name)
        if name not in inputs:
            why = "is written by a node" if name in spec.state.fields else "is not a state field"
            yield path, f"input `{name}` {why}", Hint(name, inputs, "input fields")
        elif err := _type_error(spec.state.fields[name].type, value):
            field_type = spec.state.fields[name].type
            yield (
                path,
                f"input `{name}` does not fit type {field_type}: {err}",
                f"give {_a(field_type)} value",
            )


def _orchestration(spec: WorkflowSpec) -> Iterator[Finding]:
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


def _tracking(spec: WorkflowSpec) -> Iterator[Finding]:
    uri = spec.config.observability.mlflow.tracking_uri
    if not uri.startswith(_TRACKING_SCHEMES):
        yield (
            ("config", "observability", "mlflow", "tracking_uri"),
            (f"`{uri}` is not a tracking URI MLflow knows"),
            "use sqlite:///mlflow.db, postgresql://..., http(s)://host:port or file:///path",
        )
