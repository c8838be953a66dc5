"""A spending limit, checked before every LLM call and against every finished run.

The budget only judges; whoever runs the calls decides what stopping means (the runner
raises ``BudgetExceededError``), so ``usage`` imports nothing from ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents_pipelines.usage.records import UsageSummary


@dataclass(frozen=True)
class Budget:
    workflow: str
    max_cost_usd: float | None = None
    max_total_tokens: int | None = None

    def overrun(self, usage: UsageSummary) -> str | None:
        """What is over the limit, in words; None while within it."""
        over = []
        if self.max_cost_usd is not None and usage.total_cost_usd >= self.max_cost_usd:
            over.append(f"${usage.total_cost_usd:.6f} of max_cost_usd ${self.max_cost_usd:.6f}")
        tokens = usage.tokens.total
        if self.max_total_tokens is not None and tokens >= self.max_total_tokens:
            over.append(f"{tokens} of max_total_tokens {self.max_total_tokens}")
        return "; ".join(over) or None

    def stop_message(self, over: str) -> str:
        """Why a run stops before its next call, given what ``overrun`` found."""
        return (
            f"Workflow {self.workflow} stopped before its next LLM call: budget spent "
            f"({over}). Raise orchestration.budget, or make the workflow cheaper "
            "(fewer loop iterations, a smaller model)."
        )
