"""cost_summary.json: the totals, one entry per call, subtotals per model, price sources."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agents_pipelines.usage.records import UsageSummary, round_usd


@dataclass(frozen=True)
class JsonWithRows:
    """A JSON object to write whose one list (``rows_key``) is made a row at a time as it
    is written: a large map's cost_summary.json has a row per call, and its rows, built
    whole beside the ledger's records, were the largest thing a tracked run held at its
    end (benchmark 7)."""

    head: dict[str, Any]  # the object, with ``rows_key`` where the rows go
    rows_key: str
    rows: Callable[[], Iterator[dict[str, Any]]]

    def as_dict(self) -> dict[str, Any]:
        return {k: list(self.rows()) if k == self.rows_key else v for k, v in self.head.items()}


def cost_summary(
    summary: UsageSummary, *, workflow: str, backend: str, status: str, error: str | None = None
) -> dict[str, Any]:
    return cost_summary_file(
        summary, workflow=workflow, backend=backend, status=status, error=error
    ).as_dict()


def cost_summary_file(
    summary: UsageSummary, *, workflow: str, backend: str, status: str, error: str | None = None
) -> JsonWithRows:
    head = {
        "schema_version": 1,
        "workflow": workflow,
        "llm_backend": backend,
        "status": status,
        "error": error,
        "currency": "USD",
        "totals": {
            **summary.totals(),
            "unpriced_models": summary.unpriced_models,
            # Requests a stop cut short in flight: in llm_calls, unpriced (Gemini may bill).
            "cancelled_calls": summary.cancelled_calls,
        },
        "by_model": summary.by_model(),
        "calls": None,  # the rows: _call_rows
        "failed_items": [
            {"node": f.node, "item": f.item, "error": f.error} for f in summary.failed_items
        ],
        # What a resumed run reused from an earlier attempt, at that attempt's cost: not in
        # the totals above, which are the calls this run made.
        "resumed": [r.as_dict() for r in summary.resumed],
        "resumed_cost_usd": summary.resumed_cost_usd,
        # Batch mode (llm.batch): its jobs, and what they saved against interactive calls.
        "batch_jobs": [dict(job) for job in summary.batch_jobs],
        "saved_vs_interactive_usd": summary.saved_vs_interactive_usd,
    }
    return JsonWithRows(head, "calls", lambda: _call_rows(summary))


def _call_rows(summary: UsageSummary) -> Iterator[dict[str, Any]]:
    for call in summary.calls:
        yield {
            "node": call.node,
            "kind": call.kind,
            "model": call.model,
            "service_tier": call.tier if call.is_llm else None,
            "tools_called": list(call.tools),
            "status": call.status,
            "error": call.error,
            "prompt_tokens": call.usage.prompt,
            "completion_tokens": call.usage.completion,
            "reasoning_tokens": call.usage.reasoning,
            "cached_tokens": call.usage.cached,
            "total_tokens": call.usage.total,
            "input_cost_usd": None if call.price is None else call.price.input_usd,
            "output_cost_usd": None if call.price is None else call.price.output_usd,
            "cost_usd": call.cost_usd,
            "price_source": "unpriced" if call.price is None else call.price.source,
            "latency_s": round_usd(call.latency_s),
            "item": call.item,
            "cache_hit": call.cache_hit,
            "saved_cost_usd": call.saved_cost_usd,
            "eval": call.eval,
        }
