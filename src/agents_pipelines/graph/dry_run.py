"""What the simulated backend is told about a node's outputs, beyond the JSON schema, so that
a dry run passes the workflow's checks and takes each of its routes.

Gemini is told none of it (see graph.nodes): these hints go to the simulated model only.
"""

from __future__ import annotations

from typing import Any

from agents_pipelines.llm.simulated_replies import ROUTE_THRESHOLDS, ROUTE_VALUES
from agents_pipelines.spec.models import EXTRA_RULE_OPERATORS, WorkflowSpec

_SIZE_KEYWORDS = {"str": "Length", "list": "Items", "dict": "Properties"}
_KEYWORDS = {
    **dict.fromkeys(("equals", "not_equals", "in", "contains"), ROUTE_VALUES),
    **dict.fromkeys(("gt", "gte", "lt", "lte"), ROUTE_THRESHOLDS),
}


def dry_run_hints(spec: WorkflowSpec, outputs: list[str]) -> dict[str, dict[str, Any]]:
    """Per output field: the checks' bounds as JSON Schema keywords (``{"maximum": 5}``),
    and the values routes compare it with (``{"x-route-thresholds": [8]}``)."""
    hints = _check_bounds(spec, outputs)
    for (field, keyword), values in _route_values(spec, outputs).items():
        hints.setdefault(field, {})[keyword] = values
    return hints


def _check_bounds(spec: WorkflowSpec, outputs: list[str]) -> dict[str, dict[str, Any]]:
    """The tightest bound where several checks (output checks, and evals' rules) bound one
    field."""
    bounds: dict[str, dict[str, Any]] = {}
    rules = [check.rule() for check in spec.orchestration.checks]
    rules += [entry.rule for entry in spec.evals if entry.rule is not None]
    for check in rules:
        rule, limit = check.operator
        if check.field not in outputs or rule not in EXTRA_RULE_OPERATORS:
            continue
        kind = spec.state.fields[check.field].type.split("[")[0]
        keyword = {"min": "minimum", "max": "maximum"}.get(rule)
        if rule.endswith("_length") and kind in _SIZE_KEYWORDS:
            keyword = rule[:3] + _SIZE_KEYWORDS[kind]  # minLength, maxItems...
        if keyword is None:  # not_empty: every simulated value is non-empty
            continue
        field = bounds.setdefault(check.field, {})
        tighter = max if keyword.startswith("min") else min
        field[keyword] = tighter(field.get(keyword, limit), limit)
    return bounds


def _route_values(spec: WorkflowSpec, outputs: list[str]) -> dict[tuple[str, str], list[Any]]:
    """(field, keyword) -> the values route conditions on ``outputs`` compare with."""
    found: dict[tuple[str, str], list[Any]] = {}
    for edge in spec.edges:
        for route in edge.routes or []:
            if route.when is None or route.when.field not in outputs:
                continue
            ((operator, value),) = route.when.operators().items()
            if operator not in _KEYWORDS:
                continue
            values = found.setdefault((route.when.field, _KEYWORDS[operator]), [])
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, bool) and item not in values:
                    values.append(item)
    return found
