"""What a cross-section rule reports, and the fix hints it shares.

Each rule yields ``(path, problem, fix)``; the caller locates the path in the file.

A did-you-mean fix compares a name against every option with difflib: for a generated
file with thousands of bad edges that is quadratic, so only the first MAX_HINTS findings
get one; the rest name the options (or, when there are many, just say what to check).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from agents_pipelines.spec import field_types

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


def article(type_name: str) -> str:
    """`a str`, `an int`: the article for a field type."""
    return ("an " if type_name.startswith("int") else "a ") + type_name


def type_error(type_name: str, value: Any) -> str | None:
    """Why ``value`` does not fit the field type ``type_name`` (strictly); None if it fits."""
    try:
        _adapter(type_name).validate_python(value, strict=True)
    except ValidationError as exc:
        return exc.errors(include_url=False)[0]["msg"]
    return None


# Module-level, not in the registry: a pure memo of type names.
@functools.cache
def _adapter(type_name: str) -> TypeAdapter[Any]:
    """Building a TypeAdapter costs far more than using it; there are a dozen type names."""
    return TypeAdapter(field_types.python_type(type_name))
