"""A spending limit, checked before every LLM call and against every finished run.

The budget only judges; whoever runs the calls decides what stopping means (the runner
raises ``BudgetExceededError``), so ``usage`` imports nothing from ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents_pipelines.usage.records import UsageSummary


@dataclass(frozen=True)
class NextPrompt:
    """The LLM call about to be made, as the usage ledger sizes it before it is sent: its
    prompt's tokens by characters / 4 (no request to count them), and their price."""

    node: str
    tokens: int
    cost_usd: float | None  # None: the model has no price
    requests: int = 1  # more than one: a batch job's calls, judged together (llm.batch)

    @property
    def is_job(self) -> bool:
        return self.requests > 1

    def what(self) -> str:
        """The call or the job, in words."""
        if self.is_job:
            return f"the batch job of `{self.node}` ({self.requests} requests)"
        return f"the next LLM call of `{self.node}`"


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

    def prompt_overrun(self, usage: UsageSummary, prompt: NextPrompt) -> str | None:
        """What the next call's prompt alone would take over the limit, in words; None
        while it fits. A prompt swollen by a large input or tool result stops here, before
        it is sent and billed."""
        over = []
        tokens = usage.tokens.total + prompt.tokens
        if self.max_total_tokens is not None and tokens > self.max_total_tokens:
            over.append(
                f"{usage.tokens.total} tokens spent and about {prompt.tokens} in its prompt, "
                f"over max_total_tokens {self.max_total_tokens}"
            )
        cost = usage.total_cost_usd + (prompt.cost_usd or 0.0)
        if self.max_cost_usd is not None and cost > self.max_cost_usd:
            over.append(
                f"${usage.total_cost_usd:.6f} spent and about ${prompt.cost_usd or 0.0:.6f} for "
                f"its prompt, over max_cost_usd ${self.max_cost_usd:.6f}"
            )
        if not over:
            return None
        if prompt.is_job:
            return (
                f"Workflow {self.workflow} stopped before submitting {prompt.what()}, "
                f"unsent: its prompts together would pass the budget ({'; '.join(over)}; "
                "prompts sized by characters / 4, at the batch price). Send fewer or "
                "shorter items, or raise orchestration.budget."
            )
        return (
            f"Workflow {self.workflow} stopped before {prompt.what()}, "
            f"unsent: its prompt would pass the budget ({'; '.join(over)}; prompt sized by "
            "characters / 4). Send less (a shorter input, a tool that returns less), or "
            "raise orchestration.budget."
        )

    def stop_message(self, over: str) -> str:
        """Why a run stops before its next call, given what ``overrun`` found."""
        return (
            f"Workflow {self.workflow} stopped before its next LLM call: budget spent "
            f"({over}). Raise orchestration.budget, or make the workflow cheaper "
            "(fewer loop iterations, a smaller model)."
        )
