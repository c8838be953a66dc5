"""Rules on `evals:`: judge placeholders, the field and operator of each rule, and names
that must be unique among the asset's checks."""

from __future__ import annotations

from collections.abc import Iterator

from agents_pipelines.spec import field_types
from agents_pipelines.spec.findings import Finding, Hint, Path
from agents_pipelines.spec.graph_rules import condition
from agents_pipelines.spec.models import EXTRA_RULE_OPERATORS, Rule, WorkflowSpec
from agents_pipelines.spec.placeholders import PlaceholderError, parse_template

# The asset check of orchestration.budget and spend_limits; reserved, so that adding a
# budget later never clashes with an eval.
BUDGET_CHECK = "budget"


def evals(spec: WorkflowSpec) -> Iterator[Finding]:
    for i, entry in enumerate(spec.evals):
        path: Path = ("evals", i)
        if isinstance(entry.judge, str):  # a registry's: spec.prompt_refs
            yield from _judge_placeholders(spec, entry.judge, (*path, "judge"))
        if entry.rule is not None:
            yield from _rule(spec, entry.rule, (*path, "rule"))
    yield from _names(spec)


def _judge_placeholders(spec: WorkflowSpec, text: str, path: Path) -> Iterator[Finding]:
    try:
        template = parse_template(text)
    except PlaceholderError as exc:
        yield path, exc.problem, exc.fix
        return
    for name in template.fields:
        if name not in spec.state.fields:
            yield (
                path,
                f"placeholder {{{name}}} names no state field",
                Hint(name, list(spec.state.fields), "state fields"),
            )


def _rule(spec: WorkflowSpec, rule: Rule, path: Path) -> Iterator[Finding]:
    field = spec.state.fields.get(rule.field)
    if field is None:
        yield (
            (*path, "field"),
            f"rule names unknown state field `{rule.field}`",
            Hint(rule.field, list(spec.state.fields), "state fields"),
        )
        return
    operator, _ = rule.operator
    if operator not in EXTRA_RULE_OPERATORS:
        if operator == "in" and field_types.element_name(field.type) is not None:
            yield (
                (*path, operator),
                f"`in` tests one value against a list of values, but `{rule.field}` is "
                f"{field.type}",
                f"use `contains` to test for one element of `{rule.field}`",
            )
            return
        yield from condition(spec, rule.as_condition(), path)
        return
    sized = field.type == "str" or field_types.element_name(field.type) is not None
    if operator in ("min_length", "max_length") and not sized:
        problem = f"`{operator}` needs a str, list or dict field; `{rule.field}` is {field.type}"
        yield (*path, operator), problem, "use min or max for a number"
    if operator in ("min", "max") and not field_types.is_numeric(field.type):
        problem = f"`{operator}` needs an int or float field; `{rule.field}` is {field.type}"
        yield (*path, operator), problem, "use min_length or max_length for a text or list"


def _names(spec: WorkflowSpec) -> Iterator[Finding]:
    """Each eval is an asset check beside the output checks and `budget`: Dagster wants
    every check name of an asset to be unique."""
    taken = {
        check.name: "an output check (orchestration.checks)" for check in spec.orchestration.checks
    }
    taken[BUDGET_CHECK] = "the budget check (orchestration.budget, spend_limits)"
    for i, entry in enumerate(spec.evals):
        if (other := taken.get(entry.name)) is not None:
            yield (
                ("evals", i, "name"),
                f"eval name `{entry.name}` is also the name of {other}",
                "give each eval a name of its own: it is the asset check's name",
            )
        taken.setdefault(entry.name, f"evals[{i}]")
