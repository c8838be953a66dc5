"""Rules on ``orchestration.deps`` across files: the upstream workflow is loaded, each
mapped field exists there and its type fits the input it feeds, partitions line up, and
the deps form no cycle.

Partitions line up when Dagster's default partition mapping hands each run exactly one
upstream state: the same time partitions (a time-window mapping), static keys the upstream
also has (an identity mapping), or an upstream that is not partitioned. Any other pairing
would hand the run every upstream partition at once, or none.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from agents_pipelines.errors import ConfigIssue
from agents_pipelines.spec import field_types
from agents_pipelines.spec.models import PartitionsConfig, WorkflowSpec

if TYPE_CHECKING:
    from agents_pipelines.spec.loader import Workflow

Problem = tuple[str, str]  # (what is wrong, how to fix it)


def dependency_issues(workflows: list[Workflow]) -> list[ConfigIssue]:
    by_name = {workflow.name: workflow for workflow in workflows}
    issues = [issue for workflow in workflows for issue in _deps(workflow, by_name)]
    if cycle := _dependency_cycle(by_name):
        first = by_name[cycle[0]]
        issues.append(
            first.issue(
                ("orchestration", "deps"),
                "workflow dependencies form a cycle: " + " → ".join(cycle),
                "remove one of the deps so that lineage flows one way",
            )
        )
    return issues


def _deps(workflow: Workflow, by_name: dict[str, Workflow]) -> Iterator[ConfigIssue]:
    for i, dep in enumerate(workflow.spec.orchestration.deps):
        path = ("orchestration", "deps", i)
        upstream = by_name.get(dep.workflow)
        if upstream is None:
            yield workflow.issue(
                (*path, "workflow"),
                f"no workflow named `{dep.workflow}` is loaded",
                "check the name against the upstream file's flow.name (both files must be "
                "in the same workflows folder)",
            )
            continue
        if problem := partitions_problem(upstream.spec, workflow.spec):
            yield workflow.issue((*path, "workflow"), *problem)
        for target, source in dep.map.items():
            if problem := _mapped_field_problem(upstream.spec, workflow.spec, target, source):
                yield workflow.issue((*path, "map", target), *problem)


def _mapped_field_problem(
    upstream: WorkflowSpec, spec: WorkflowSpec, target: str, source: str
) -> Problem | None:
    name = upstream.flow.name
    theirs = upstream.state.fields.get(source)
    if theirs is None:
        return (
            f"`{source}` is not a state field of workflow `{name}`",
            "map to one of: " + ", ".join(upstream.state.fields),
        )
    ours = spec.state.fields.get(target)
    if ours is None or fits(ours.type, theirs.type):
        return None  # an unknown target is reported by the workflow's own rules
    return (
        f"`{source}` of workflow `{name}` is {theirs.type}, but the input `{target}` it "
        f"feeds is {ours.type}: every run would fail on the input's type",
        f"declare `{target}` as {theirs.type}, or map a {ours.type} field of `{name}` to it",
    )


def fits(target: str, source: str) -> bool:
    """Whether every value of field type ``source`` is a valid ``target`` value, as inputs
    are validated (strictly; an int is a valid float)."""
    if target == source or (target == "dict[str, Any]" and source.startswith("dict[")):
        return True
    element, given = field_types.element_name(target), field_types.element_name(source)
    if element is not None and given is not None:
        return target.split("[")[0] == source.split("[")[0] and fits(element, given)
    return target == "float" and source == "int"


def partitions_problem(upstream: WorkflowSpec, spec: WorkflowSpec) -> Problem | None:
    """Why a run of ``spec`` would not get one state of ``upstream``, or None."""
    theirs, ours = upstream.orchestration.partitions, spec.orchestration.partitions
    if theirs is None:
        return None
    name = upstream.flow.name
    same = f"give this workflow the same `orchestration.partitions` as `{name}`"
    if theirs.dynamic:
        return (
            f"workflow `{name}` has dynamic partitions, which its sensor adds for it alone: "
            "no run of this workflow could be matched with one of them",
            f"drop this dep, or give `{name}` time or static partitions and this workflow "
            "the same ones",
        )
    if ours is None:
        return (
            f"workflow `{name}` is partitioned ({describe(theirs)}) and this workflow is not: "
            f"a run would be handed every partition of `{name}` at once, not one state to "
            "map fields from",
            f"{same} (keeping your own `field`), or drop this dep",
        )
    if theirs.static and ours.static:
        if missing := [key for key in ours.static if key not in theirs.static]:
            return (
                f"static partition(s) {', '.join(f'`{k}`' for k in missing)} of this workflow "
                f"are not partitions of `{name}`",
                f"give `{name}` these partitions too, or remove them here",
            )
        return None
    if _time_window(theirs) is not None and _time_window(theirs) == _time_window(ours):
        return None
    return (
        f"workflow `{name}` has {describe(theirs)} but this workflow has {describe(ours)}: "
        f"each partition here must be exactly one partition of `{name}`",
        f"{same} (kind, start, end and timezone; `field` may differ), or drop this dep",
    )


def _time_window(config: PartitionsConfig) -> tuple[str, str, str | None, str] | None:
    if (time := config.time) is None:
        return None
    kind, settings = time
    return kind, settings.start, settings.end, settings.timezone


def describe(config: PartitionsConfig) -> str:
    """`daily partitions from 2026-11-01 (UTC)`, `static partitions (fr, de)`..."""
    if config.static:
        return f"static partitions ({', '.join(config.static)})"
    if (time := config.time) is None:
        return "dynamic partitions"
    kind, settings = time
    until = f" until {settings.end}" if settings.end else ""
    return f"{kind} partitions from {settings.start}{until} ({settings.timezone})"


def _dependency_cycle(by_name: dict[str, Workflow]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> list[str] | None:
        if name in visiting:
            return [*visiting[visiting.index(name) :], name]
        if name in done or name not in by_name:
            return None
        visiting.append(name)
        for dep in by_name[name].spec.orchestration.deps:
            if found := visit(dep.workflow):
                return found
        visiting.pop()
        done.add(name)
        return None

    for name in by_name:
        if found := visit(name):
            return found
    return None
