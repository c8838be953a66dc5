"""Rules on the graph: node ids and outputs, edges and routes, and that every node can run
and can finish."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Any

from agents_pipelines.spec import field_types
from agents_pipelines.spec.choice_rules import condition_choices
from agents_pipelines.spec.findings import Finding, Hint, article, type_error
from agents_pipelines.spec.models import END, START, Condition, WorkflowSpec


def node_ids_and_outputs(spec: WorkflowSpec) -> Iterator[Finding]:
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


def edges_and_routes(spec: WorkflowSpec) -> Iterator[Finding]:
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
            yield from condition(spec, route.when, (*path, "when"))


def condition(spec: WorkflowSpec, cond: Condition, path: tuple[Any, ...]) -> Iterator[Finding]:
    """What is wrong with a route condition (or a rule using its operators) at ``path``."""
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
    if operator in ("equals", "not_equals") and (err := type_error(field.type, value)):
        yield (
            (*path, operator),
            f"`{value!r}` cannot equal {article(field.type)} field: {err}",
            f"compare with {article(field.type)} value",
        )
    if operator == "in":
        # Like equals: a value of another type can never match, so the route is dead.
        bad = [(item, err) for item in value if (err := type_error(field.type, item))]
        if bad:
            listed = ", ".join(repr(item) for item, _ in bad)
            yield (
                (*path, operator),
                f"`in` lists {listed}, which cannot equal {article(field.type)} field: {bad[0][1]}",
                f"list only {field.type} values",
            )
    yield from condition_choices(field, cond, path)


def reachability(spec: WorkflowSpec) -> Iterator[Finding]:
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
