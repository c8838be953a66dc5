"""The one evaluator of rules: an eval's `rule` and an output check (orchestration.checks)
are both tested here. Route operators keep the routes' meaning (graph.routes.holds)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agents_pipelines.graph.routes import holds
from agents_pipelines.spec.models import EXTRA_RULE_OPERATORS, Rule

_SHOWN_CHARS = 80  # of a value quoted in a rationale


@dataclass(frozen=True)
class RuleOutcome:
    passed: bool
    measured: Any  # what was compared: the value, or its length for min_length/max_length
    rationale: str


def check_rule(rule: Rule, state: Mapping[str, Any]) -> RuleOutcome:
    operator, expected = rule.operator
    value = state.get(rule.field)
    if operator not in EXTRA_RULE_OPERATORS:
        passed = holds(rule.as_condition(), state)
        return RuleOutcome(passed, value, _rationale(rule, f"is {_shown(value)}", passed))
    if operator in ("min_length", "max_length"):
        if value is None:
            return RuleOutcome(False, None, f"`{rule.field}` is not set: no length to test")
        length = len(value)
        passed = length >= expected if operator == "min_length" else length <= expected
        return RuleOutcome(passed, length, _rationale(rule, f"has length {length}", passed))
    if operator == "not_empty":
        passed = bool(value) == expected
        return RuleOutcome(passed, value, _rationale(rule, f"is {_shown(value)}", passed))
    if value is None:
        return RuleOutcome(False, None, f"`{rule.field}` is not set: no number to compare")
    passed = value >= expected if operator == "min" else value <= expected
    return RuleOutcome(passed, value, _rationale(rule, f"is {_shown(value)}", passed))


def _rationale(rule: Rule, measured: str, passed: bool) -> str:
    operator, expected = rule.operator
    return f"`{rule.field}` {measured}: {'meets' if passed else 'fails'} `{operator}: {expected}`"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
