"""Asset checks of a workflow: its budget, and rules on its output fields."""

from __future__ import annotations

from typing import Any

import dagster as dg

from agents_pipelines.spec import Workflow
from agents_pipelines.spec.models import OutputCheck
from agents_pipelines.usage import Budget, UsageSummary

BUDGET_CHECK = "budget"


def check_specs(workflow: Workflow, key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    orchestration = workflow.spec.orchestration
    specs = []
    if (budget := orchestration.budget) is not None:
        limits = _limits(budget.max_cost_usd, budget.max_total_tokens)
        specs.append(
            dg.AssetCheckSpec(
                BUDGET_CHECK,
                asset=key,
                blocking=budget.blocking,
                description=f"Spend within {limits}",
            )
        )
    specs += [
        dg.AssetCheckSpec(
            check.name, asset=key, blocking=check.blocking, description=_describe(check)
        )
        for check in orchestration.checks
    ]
    return specs


def budget_result(workflow: Workflow, usage: UsageSummary) -> dg.AssetCheckResult | None:
    config = workflow.spec.orchestration.budget
    if config is None:
        return None
    over = Budget(workflow.name, config.max_cost_usd, config.max_total_tokens).overrun(usage)
    metadata: dict[str, Any] = {
        "total_cost_usd": usage.total_cost_usd,
        "total_tokens": usage.tokens.total,
        "max_cost_usd": config.max_cost_usd,
        "max_total_tokens": config.max_total_tokens,
    }
    if over:
        metadata["over"] = over
    return dg.AssetCheckResult(
        check_name=BUDGET_CHECK,
        passed=over is None,
        metadata={k: v for k, v in metadata.items() if v is not None},
        severity=dg.AssetCheckSeverity.ERROR,
    )


def output_results(workflow: Workflow, state: dict[str, Any]) -> list[dg.AssetCheckResult]:
    return [
        _evaluate(check, state.get(check.field)) for check in workflow.spec.orchestration.checks
    ]


def _evaluate(check: OutputCheck, value: Any) -> dg.AssetCheckResult:
    ((rule, limit),) = check.rules().items()
    measured: Any = len(value) if rule.endswith("_length") else value
    passed = {
        "min_length": lambda: measured >= limit,
        "max_length": lambda: measured <= limit,
        "min": lambda: measured >= limit,
        "max": lambda: measured <= limit,
        "not_empty": lambda: bool(value) == limit,
    }[rule]()
    return dg.AssetCheckResult(
        check_name=check.name,
        passed=bool(passed),
        metadata={
            "field": check.field,
            "rule": f"{rule} {limit}",
            "measured": measured if not isinstance(measured, list | dict) else len(measured),
        },
    )


def _describe(check: OutputCheck) -> str:
    ((rule, limit),) = check.rules().items()
    return f"`{check.field}` {rule.replace('_', ' ')} {limit}"


def _limits(cost: float | None, tokens: int | None) -> str:
    parts = ([f"${cost}"] if cost is not None else []) + (
        [f"{tokens} tokens"] if tokens is not None else []
    )
    return " and ".join(parts)
