"""The run state: a TypedDict for LangGraph, and input validation before any call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agents_pipelines.errors import InvalidInputsError
from agents_pipelines.spec import field_types
from agents_pipelines.spec.models import WorkflowSpec


def state_schema(spec: WorkflowSpec) -> type:
    """The TypedDict LangGraph keys its channels by (one last-value channel per field)."""
    annotations = {
        name: field_types.python_type(field.type) for name, field in spec.state.fields.items()
    }
    return TypedDict(f"{spec.flow.name}_state", annotations)  # type: ignore[operator]


def output_model(spec: WorkflowSpec, outputs: list[str], name: str) -> type[BaseModel]:
    """The pydantic model a structured reply must fit: one field per output."""
    fields: dict[str, Any] = {
        out: (
            field_types.python_type(spec.state.fields[out].type),
            Field(description=spec.state.fields[out].description or out),
        )
        for out in outputs
    }
    return create_model(name, __config__=ConfigDict(extra="ignore"), **fields)


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
        else:
            value = (
                field.default if field.default is not None else field_types.zero_value(field.type)
            )
        try:
            state[name] = _validator(field.type).model_validate({"v": value}, strict=True).v  # type: ignore[attr-defined]
        except ValidationError as exc:
            reason = exc.errors(include_url=False)[0]["msg"]
            problems.append(f"`{name}` must be {field.type}: {reason} (got {value!r:.60})")
    if problems:
        raise InvalidInputsError(
            f"Invalid inputs for workflow {spec.flow.name}: "
            + "; ".join(problems)
            + ". Inputs: "
            + ", ".join(spec.input_fields)
            + "."
        )
    return state


_VALIDATORS: dict[str, type[BaseModel]] = {}


def _validator(type_name: str) -> type[BaseModel]:
    if type_name not in _VALIDATORS:
        _VALIDATORS[type_name] = create_model("Value", v=(field_types.python_type(type_name), ...))
    return _VALIDATORS[type_name]
