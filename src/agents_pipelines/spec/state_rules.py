"""Rules on the state: field defaults, the placeholders prompts name, and the inputs that
orchestration gives a run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agents_pipelines.spec.choice_rules import outside_choices
from agents_pipelines.spec.findings import Finding, Hint, article, type_error
from agents_pipelines.spec.map_rules import item_placeholders
from agents_pipelines.spec.models import WorkflowSpec
from agents_pipelines.spec.placeholders import PlaceholderError, parse_template


def state_fields(spec: WorkflowSpec) -> Iterator[Finding]:
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
        if field.default is not None and (err := type_error(field.type, field.default)):
            yield (
                (*path, "default"),
                f"the default does not fit type {field.type}: {err}",
                f"give {article(field.type)} value",
            )


def prompt_placeholders(spec: WorkflowSpec) -> Iterator[Finding]:
    fields = list(spec.state.fields)
    # A map node's item ({review} for `as: review`) is no state field; map_rules checks
    # where it is used.
    items = item_placeholders(spec)
    for i, node in enumerate(spec.nodes):
        for key in ("prompt", "system"):
            text = getattr(node, key)
            if not isinstance(text, str):  # none, or in the registry (spec.prompt_refs)
                continue
            try:
                template = parse_template(text)
            except PlaceholderError as exc:
                yield ("nodes", i, key), exc.problem, exc.fix
                continue
            for name in template.fields:
                if name not in spec.state.fields and name not in items:
                    yield (
                        ("nodes", i, key),
                        f"placeholder {{{name}}} names no state field",
                        (Hint(name, fields, "state fields")),
                    )


def input_values(spec: WorkflowSpec) -> Iterator[Finding]:
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
        elif err := type_error(spec.state.fields[name].type, value):
            field_type = spec.state.fields[name].type
            yield (
                path,
                f"input `{name}` does not fit type {field_type}: {err}",
                f"give {article(field_type)} value",
            )
        else:
            field = spec.state.fields[name]
            yield from outside_choices(field, value, path, f"input `{name}` is `{{value}}`")
