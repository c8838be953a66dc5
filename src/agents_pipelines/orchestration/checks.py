"""Asset checks of a workflow: its budget (and its spend limits' windows), rules on its
output fields, and its evals (judges and rules on the final state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from agents_pipelines.orchestration.metadata_sets import (
    BudgetCheckMetadata,
    EvalCheckMetadata,
    OutputCheckMetadata,
)
from agents_pipelines.redaction import redact
from agents_pipelines.spec import Workflow
from agents_pipelines.spec.eval_rules import BUDGET_CHECK
from agents_pipelines.spec.models import EvalSpec, OutputCheck, RegistryPrompt
from agents_pipelines.usage import Budget, UsageSummary, WindowSpend

if TYPE_CHECKING:
    from agents_pipelines.state_evals import Verdict

_DESCRIBED_CHARS = 200  # of a judge's question in its check's description


def check_specs(workflow: Workflow, key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    orchestration = workflow.spec.orchestration
    specs = []
    budget = orchestration.budget
    if budget is not None or orchestration.spend_limits:
        limits = [_limits(budget.max_cost_usd, budget.max_total_tokens)] if budget else []
        limits += [f"${limit.max_cost_usd} per {limit.per}" for limit in orchestration.spend_limits]
        specs.append(
            dg.AssetCheckSpec(
                BUDGET_CHECK,
                asset=key,
                blocking=budget.blocking if budget is not None else False,
                description=f"Spend within {' and '.join(limits)}",
            )
        )
    specs += [
        dg.AssetCheckSpec(
            check.name, asset=key, blocking=check.blocking, description=_describe(check)
        )
        for check in orchestration.checks
    ]
    specs += [
        dg.AssetCheckSpec(
            entry.name,
            asset=key,
            blocking=entry.blocking,
            description=_describe_eval(workflow, entry),
        )
        for entry in workflow.spec.evals
    ]
    return specs


def budget_result(
    workflow: Workflow, usage: UsageSummary, windows: Sequence[WindowSpend] = ()
) -> dg.AssetCheckResult | None:
    """The run against its budget; the spend limits' windows are reported beside it (a run
    never passes a window's limit by more than its calls in flight: it is stopped)."""
    orchestration = workflow.spec.orchestration
    config = orchestration.budget
    if config is None and not orchestration.spend_limits:
        return None
    over = None
    figures: dict[str, Any] = {
        "total_cost_usd": usage.total_cost_usd,
        "total_tokens": usage.tokens.total,
    }
    if config is not None:
        budget = Budget(workflow.name, config.max_cost_usd, config.max_total_tokens)
        over = budget.overrun(usage)
        figures |= {
            "max_cost_usd": config.max_cost_usd,
            "max_total_tokens": config.max_total_tokens,
        }
    for window in windows:
        figures |= _window_figures(window, usage)
    return dg.AssetCheckResult(
        check_name=BUDGET_CHECK,
        passed=over is None,
        metadata=BudgetCheckMetadata(**figures, over=over).as_metadata(),
        severity=dg.AssetCheckSeverity.ERROR,
    )


def _window_figures(window: WindowSpend, usage: UsageSummary) -> dict[str, Any]:
    """``spent_this_day_usd`` (the workflow's window) or ``pool_spent_this_day_usd``, with
    its limit and when it resets: earlier runs' spend in the window plus this run's (the
    names are BudgetCheckMetadata's fields, which refuses any other)."""
    limit = window.limit
    prefix = f"{'pool_' if limit.scope == 'pool' else ''}spent_this_{limit.per}"
    return {
        f"{prefix}_usd": window.spent_usd(usage),
        f"{prefix}_limit_usd": limit.max_cost_usd,
        f"{prefix}_resets_at": window.resets_at.isoformat(),
    }


def output_results(workflow: Workflow, state: dict[str, Any]) -> list[dg.AssetCheckResult]:
    # The run's imports, not the load's.
    from agents_pipelines.state_evals.rule_check import check_rule

    results = []
    for check in workflow.spec.orchestration.checks:
        ((rule, limit),) = check.rules().items()
        outcome = check_rule(check.rule(), state)
        measured = outcome.measured
        if isinstance(measured, str):  # a field's own text: redact_pii masks it
            measured = redact(measured)
        results.append(
            dg.AssetCheckResult(
                check_name=check.name,
                passed=outcome.passed,
                metadata=OutputCheckMetadata(
                    field=check.field,
                    rule=f"{rule} {limit}",
                    measured=len(measured) if isinstance(measured, list | dict) else measured,
                ).as_metadata(),
            )
        )
    return results


def eval_results(verdicts: Sequence[Verdict]) -> list[dg.AssetCheckResult]:
    """One check result per eval: the verdict, the rationale and, for a judge, its model
    and what it cost."""
    results = []
    for verdict in verdicts:
        judge = verdict.kind == "judge"
        metadata = EvalCheckMetadata(
            verdict="pass" if verdict.passed else "fail",
            rationale=verdict.rationale,
            kind=verdict.kind,
            judge_model=verdict.model if judge else None,
            cost_usd=verdict.cost_usd if judge else None,
            input_tokens=verdict.input_tokens if judge else None,
            output_tokens=verdict.output_tokens if judge else None,
            total_tokens=verdict.total_tokens if judge else None,
            error=verdict.error,
        ).as_metadata()
        results.append(
            dg.AssetCheckResult(check_name=verdict.name, passed=verdict.passed, metadata=metadata)
        )
    return results


def _describe_eval(workflow: Workflow, entry: EvalSpec) -> str:
    if entry.rule is not None:
        operator, expected = entry.rule.operator
        return f"Rule: `{entry.rule.field}` {operator.replace('_', ' ')} {expected}"
    model = entry.model or workflow.spec.config.llm.model
    judge = entry.judge
    text = f"prompt {judge.registry}" if isinstance(judge, RegistryPrompt) else judge or ""
    question = " ".join(text.split())
    if len(question) > _DESCRIBED_CHARS:
        question = question[: _DESCRIBED_CHARS - 1] + "…"
    return f"LLM judge ({model}): {question}"


def _describe(check: OutputCheck) -> str:
    ((rule, limit),) = check.rules().items()
    return f"`{check.field}` {rule.replace('_', ' ')} {limit}"


def _limits(cost: float | None, tokens: int | None) -> str:
    parts = ([f"${cost}"] if cost is not None else []) + (
        [f"{tokens} tokens"] if tokens is not None else []
    )
    return " and ".join(parts)
