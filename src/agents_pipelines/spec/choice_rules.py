"""Rules on fields with `choices` (a label set): the choices themselves, and every value the
file compares with or gives such a field (defaults, inputs, route conditions).

A value outside the choices can never be written by a node (replies are validated against
the choices), so a route that waits for it is dead and an input with it fails every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agents_pipelines.spec import field_types
from agents_pipelines.spec.findings import MAX_LISTED, Finding, Hint, Path, type_error
from agents_pipelines.spec.models import Condition, StateField, WorkflowSpec


@dataclass(frozen=True)
class ChoiceHint(Hint):
    """A did-you-mean that also lists the choices (when they are few), since a label set is
    short and the reader wants to see all of it."""

    what: str = "choices"

    def text(self, search: bool) -> str:
        found = super().text(search)
        if found.startswith("did you mean") and len(self.options) <= MAX_LISTED:
            found += " The choices: " + ", ".join(f"`{o}`" for o in self.options)
        return found


def choice_fields(spec: WorkflowSpec) -> Iterator[Finding]:
    for name, field in spec.state.fields.items():
        if field.choices is None:
            continue
        path: Path = ("state", "fields", name, "choices")
        if field.type not in field_types.CHOICE_TYPES:
            yield (
                path,
                f"`choices` apply to str, int, list[str] and list[int] fields; `{name}` is "
                f"{field.type}",
                "drop `choices`, or make the field a str or int (a list of them for several "
                "labels)",
            )
            continue
        yield from _each_choice(field, path)
        if field.default is not None and not type_error(field.type, field.default):
            yield from outside_choices(
                field,
                field.default,
                ("state", "fields", name, "default"),
                f"the default of `{name}` is `{{value}}`",
            )


def _each_choice(field: StateField, path: Path) -> Iterator[Finding]:
    element = field_types.element_name(field.type) or field.type
    seen: set[str | int] = set()
    for j, choice in enumerate(field.choices or ()):
        if err := type_error(element, choice):
            fix = f"write it as text: `'{choice}'`" if element == "str" else "use whole numbers"
            yield (
                (*path, j),
                f"choice `{choice!r}` does not fit the {element} elements: {err}"
                if element != field.type
                else f"choice `{choice!r}` does not fit type {field.type}: {err}",
                fix + f", or change the field's type from {field.type}",
            )
        elif choice in seen:
            yield (*path, j), f"choice `{choice}` is listed twice", "list each choice once"
        seen.add(choice)


def outside_choices(field: StateField, value: Any, path: Path, what: str) -> Iterator[Finding]:
    """A finding for ``value`` (of the field's type) when it, or an element of it, is not
    one of the field's choices; ``what`` says where the value is, with a ``{value}`` slot."""
    if not field.choices or field.type not in field_types.CHOICE_TYPES:
        return
    values = value if isinstance(value, list) else [value]
    for item in values:
        if item not in field.choices:
            yield (
                path,
                what.format(value=item) + ", which is not one of its choices",
                ChoiceHint(str(item), [str(c) for c in field.choices]),
            )
            return


def condition_choices(field: StateField, cond: Condition, path: Path) -> Iterator[Finding]:
    """A route condition on a choice field compares with choices only: any other value can
    never match (equals, in, contains) or always matches (not_equals)."""
    if not field.choices or field.type not in field_types.CHOICE_TYPES:
        return
    ((operator, value),) = cond.operators().items()
    element = field_types.element_name(field.type) or field.type
    what = f"`{operator}` compares `{cond.field}` with `{{value}}`"
    if operator in ("equals", "not_equals") and not type_error(field.type, value):
        yield from outside_choices(field, value, (*path, operator), what)
    elif operator == "in" and not any(type_error(field.type, item) for item in value):
        for j, item in enumerate(value):
            yield from outside_choices(field, item, (*path, operator, j), what)
    elif operator == "contains" and field.type == "str" and isinstance(value, str):
        if not any(value in choice for choice in field.choices if isinstance(choice, str)):
            yield (
                (*path, operator),
                what.format(value=value) + f", which no choice of `{cond.field}` contains",
                ChoiceHint(value, [str(c) for c in field.choices]),
            )
    elif operator == "contains" and element != field.type and not type_error(element, value):
        yield from outside_choices(field, value, (*path, operator), what)
