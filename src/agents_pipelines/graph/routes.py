"""Declarative routes: field comparisons evaluated against the state. No code, no eval."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agents_pipelines.spec.models import END, Condition, Route

_LANGGRAPH_END = "__end__"  # langgraph.graph.END, without importing langgraph


def holds(condition: Condition, state: Mapping[str, Any]) -> bool:
    ((operator, expected),) = condition.operators().items()
    value = state.get(condition.field)
    match operator:
        case "equals":
            return bool(value == expected)
        case "not_equals":
            return bool(value != expected)
        case "gt":
            return value is not None and value > expected
        case "gte":
            return value is not None and value >= expected
        case "lt":
            return value is not None and value < expected
        case "lte":
            return value is not None and value <= expected
        case "in":
            return value in expected
        case "contains":
            return value is not None and expected in value
        case "is_empty":
            return (not value) == expected
    raise AssertionError(f"unknown operator {operator}")  # the model allows no other


def target(name: str) -> str:
    return _LANGGRAPH_END if name == END else name


def router(routes: list[Route]) -> Callable[[Mapping[str, Any]], str]:
    """The first route whose condition holds; the last route is the default."""

    def route(state: Mapping[str, Any]) -> str:
        for candidate in routes:
            if candidate.when is None or holds(candidate.when, state):
                return target(candidate.to)
        return target(routes[-1].to)

    return route
