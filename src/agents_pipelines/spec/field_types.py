"""The types a state field may have, and the Python types they stand for.

The set is closed on purpose: every type here has a JSON form (for structured output),
a Dagster config form (for the Launchpad) and a pydantic form (for validation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

FieldTypeName = Literal[
    "str",
    "int",
    "float",
    "bool",
    "list[str]",
    "list[int]",
    "list[float]",
    "list[bool]",
    "dict[str, str]",
    "dict[str, int]",
    "dict[str, float]",
    "dict[str, Any]",
]

FIELD_TYPE_NAMES: tuple[str, ...] = get_args(FieldTypeName)

_SCALARS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
_PYTHON_TYPES: dict[str, Any] = {
    **_SCALARS,
    "list[str]": list[str],
    "list[int]": list[int],
    "list[float]": list[float],
    "list[bool]": list[bool],
    "dict[str, str]": dict[str, str],
    "dict[str, int]": dict[str, int],
    "dict[str, float]": dict[str, float],
    "dict[str, Any]": dict[str, Any],
}


def python_type(name: str) -> Any:
    """The annotation pydantic validates values of field type ``name`` against."""
    return _PYTHON_TYPES[name]


# Types a field with `choices` may have: the choices are its values, or its elements' values.
CHOICE_TYPES = ("str", "int", "list[str]", "list[int]")


def choice_type(name: str, choices: Sequence[str | int] | None) -> Any:
    """``python_type(name)``, narrowed to ``Literal[*choices]`` (for lists, each element):
    pydantic then validates the choices and its JSON schema carries them as an ``enum``."""
    if not choices or name not in CHOICE_TYPES:
        return python_type(name)
    literal = Literal[tuple(choices)]  # type: ignore[valid-type]
    return list[literal] if name.startswith("list[") else literal  # type: ignore[valid-type]


def zero_value(name: str) -> Any:
    """The default of an optional field that declares none."""
    if name in _SCALARS:
        return _SCALARS[name]()
    return [] if name.startswith("list[") else {}


def element_name(name: str) -> str | None:
    """For ``list[T]`` and ``dict[str, T]``, the name of T; None for scalars."""
    if name.startswith("list["):
        return name[5:-1]
    if name.startswith("dict["):
        return name.removeprefix("dict[str, ").removesuffix("]")
    return None


def is_numeric(name: str) -> bool:
    return name in ("int", "float")
