"""Token usage and USD cost of a run's LLM calls: one truth for every report."""

from typing import TYPE_CHECKING, Any

from agents_pipelines.usage.budget import Budget
from agents_pipelines.usage.cost_summary_json import cost_summary
from agents_pipelines.usage.records import (
    SERVICE_TIERS,
    STANDARD,
    CallRecord,
    ItemFailure,
    Price,
    Pricer,
    ResumedNode,
    ServiceTier,
    TokenUsage,
    UsageSummary,
    round_usd,
)
from agents_pipelines.usage.spend_limits import SpendLimit, SpendLimits, WindowSpend

if TYPE_CHECKING:
    from agents_pipelines.usage.ledger import UsageLedger

__all__ = [
    "SERVICE_TIERS",
    "STANDARD",
    "Budget",
    "CallRecord",
    "ItemFailure",
    "Price",
    "Pricer",
    "ResumedNode",
    "ServiceTier",
    "SpendLimit",
    "SpendLimits",
    "TokenUsage",
    "UsageLedger",
    "UsageSummary",
    "WindowSpend",
    "cost_summary",
    "round_usd",
]


def __getattr__(name: str) -> Any:
    # The ledger is a LangChain callback; importing it pulls in langchain-core, which the
    # Dagster code location does not need at load time.
    if name == "UsageLedger":
        from agents_pipelines.usage.ledger import UsageLedger

        return UsageLedger
    raise AttributeError(f"module 'agents_pipelines.usage' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})  # the lazy UsageLedger too
