"""The run state: a TypedDict for LangGraph, and input validation before any call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agents_pipelines.errors import InvalidInputsError
from agents_pipelines.graph.value_limits import oversized
from agents_pipelines.spec import field_types
from agents_pipelines.spec.models import StateField, WorkflowSpec


def state_schema(spec: WorkflowSpec) -> type:
    """The TypedDict LangGraph keys its channels by (one last-value channel per field)."""
    annotations = {
        name: field_types.python_type(field.type) for name, field in spec.state.fields.items()
    }
    return TypedDict(f"{spec.flow.name}_state", annotations)  # type: ignore[operator]


def output_model(spec: WorkflowSpec, outputs: list[str], name: str) -> type[BaseModel]:
    """The pydantic model a structured reply must fit: one field per output.

    A field with choices is a ``Literal``: its JSON schema (sent to Gemini) has an ``enum``,
    and a reply outside the choices fails validation."""
    fields: dict[str, Any] = {
        out: (
            _annotation(spec.state.fields[out]),
            Field(
                description=spec.state.fields[out].description or out,
                json_schema_extra=_const_as_enum,
            ),
        )
        for out in outputs
    }
    return create_model(name, __config__=ConfigDict(extra="ignore"), **fields)


def _const_as_enum(schema: dict[str, Any]) -> None:
    """pydantic writes a one-value Literal as ``const``; Gemini's schema subset knows ``enum``."""
    for node in (schema, schema.get("items")):
        if isinstance(node, dict) and "const" in node:
            node["enum"] = [node.pop("const")]


def initial_state(spec: WorkflowSpec, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, then ``orchestration.inputs``, then ``inputs``; validated against the types.

    Raises InvalidInputsError naming every bad field. Nothing has been spent at this point.
    """
    problems = []
    allowed = set(spec.input_fields)
    for name in inputs:
        if name not in allowed:
            why = "a node writes it" if name in spec.state.fields else "it is not a state field"
            problems.append(f"`{name}` is not an input of this workflow ({why})")
    merged = {**spec.orchestration.inputs, **inputs}
    state: dict[str, Any] = {}
    for name, field in spec.state.fields.items():
        if name in merged and name in allowed:
            value = merged[name]
        elif field.required:
            problems.append(f"`{name}` is required: give it as an input")
            continue
        elif field.default is not None:
            value = field.default
        else:  # "not written yet": the type's empty value, which need not be a choice
            state[name] = field_types.zero_value(field.type)
            continue
        if (too_large := _too_large(spec, name, value)) is not None:
            problems.append(too_large)
            continue
        try:
            state[name] = checked_value(field, value)
        except ValueError as exc:
            problems.append(f"`{name}` {exc}")
    if problems:
        raise InvalidInputsError(
            f"Invalid inputs for workflow {spec.flow.name}: "
            + "; ".join(problems)
            + ". Inputs: "
            + ", ".join(spec.input_fields)
            + "."
        )
    return state


def _too_large(spec: WorkflowSpec, name: str, value: Any) -> str | None:
    """An input over the state value limit (graph.value_limits), in words; None if it fits."""
    limit = spec.config.execution.max_state_value_chars
    if (size := oversized(value, limit)) is None:
        return None
    return (
        f"`{name}` holds at least {size} characters, over "
        f"config.execution.max_state_value_chars {limit}: give less, or raise it"
    )


def checked_value(field: StateField, value: Any) -> Any:
    """``value`` as the field holds it. Raises ValueError saying what the field allows."""
    try:
        return _validator(field).model_validate({"v": value}, strict=True).v  # type: ignore[attr-defined]
    except ValidationError as exc:
        reason = exc.errors(include_url=False)[0]["msg"]
        raise ValueError(f"must be {field.type}: {reason} (got {value!r:.60})") from None


# Module-level, not in the registry: a pure memo of its key (types only), never stale.
_VALIDATORS: dict[tuple[str, tuple[str | int, ...]], type[BaseModel]] = {}


def _annotation(field: StateField) -> Any:
    return field_types.choice_type(field.type, field.choices)


def _validator(field: StateField) -> type[BaseModel]:
    key = (field.type, tuple(field.choices or ()))
    if key not in _VALIDATORS:
        _VALIDATORS[key] = create_model("Value", v=(_annotation(field), ...))
    return _VALIDATORS[key]
