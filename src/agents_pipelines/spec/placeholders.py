"""Prompt templates: ``{field}`` placeholders and nothing else.

Parsing happens when a workflow loads, so a bad template never reaches a run. Rendering
joins literal text and values; a value is never parsed again, so a model reply that
contains ``{topic}`` stays the literal text ``{topic}`` in the next prompt.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PlaceholderError(ValueError):
    """A template uses something other than plain ``{field}`` placeholders."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True)
class Template:
    """A parsed prompt: alternating literal text and field names."""

    parts: tuple[tuple[str, str | None], ...]  # (literal, field or None)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(field for _, field in self.parts if field))

    def render(self, values: Mapping[str, Any]) -> str:
        return "".join(
            literal + as_text(values[field]) if field else literal for literal, field in self.parts
        )


def parse_template(text: str) -> Template:
    """Parse ``text``; raise PlaceholderError for anything but ``{field}``."""
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise PlaceholderError(
            f"the prompt template is malformed ({exc})",
            "write literal braces as {{ and }}, placeholders as {field}",
        ) from None
    parts: list[tuple[str, str | None]] = []
    for literal, field, format_spec, conversion in pieces:
        if field is not None:
            _check_placeholder(field, format_spec, conversion)
        parts.append((literal, field))
    return Template(tuple(parts))


def _check_placeholder(field: str, format_spec: str | None, conversion: str | None) -> None:
    shown = "{" + field + (f"!{conversion}" if conversion else "")
    shown += (f":{format_spec}" if format_spec else "") + "}"
    if field == "" or field.isdigit():
        raise PlaceholderError(
            f"placeholder {shown} has no field name", "name a state field, as in {topic}"
        )
    if field != field.strip() and _IDENTIFIER.match(field.strip()):
        raise PlaceholderError(
            f"placeholder {shown} has spaces inside the braces",
            "remove the spaces: {" + field.strip() + "}",
        )
    if re.search(r"[.\[]", field):
        raise PlaceholderError(
            f"placeholder {shown} uses attribute or index access, which prompts do not allow",
            "use a plain state field name such as {"
            + re.split(r"[.\[]", field)[0].strip()
            + "}; prompts cannot reach into Python objects",
        )
    if not _IDENTIFIER.match(field):
        raise PlaceholderError(
            f"placeholder {shown} is not a state field name",
            "name a state field (lower-case letters, digits and underscores), as in {topic}; "
            "write literal braces as {{ and }}",
        )
    if conversion or format_spec:
        raise PlaceholderError(
            f"placeholder {shown} has a conversion or format spec, which prompts do not allow",
            "use {" + field + "} alone",
        )


def as_text(value: Any) -> str:
    """How a state value reads inside a prompt: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
