"""Token usage and USD cost of a run's LLM calls: one truth for every report."""

from agents_pipelines.usage.ledger import UsageLedger
from agents_pipelines.usage.records import (
    CallRecord,
    Price,
    Pricer,
    TokenUsage,
    UsageSummary,
    round_usd,
)
from agents_pipelines.usage.report import cost_summary

__all__ = [
    "CallRecord",
    "Price",
    "Pricer",
    "TokenUsage",
    "UsageLedger",
    "UsageSummary",
    "cost_summary",
    "round_usd",
]
