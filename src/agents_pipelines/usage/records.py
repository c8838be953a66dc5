"""Token usage and cost of LLM calls, as plain values.

One ``CallRecord`` per LLM call attempt, and one per run of a Python step (no tokens, no
cost, not an LLM call). Every figure agents_pipelines reports (asset metadata, MLflow
metrics, cost_summary.json, span costs) is computed from these records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

# How a map node's item calls identify themselves to the ledger (usage.ledger) and the
# trace (tracking.span_policy): LangChain callback metadata keys, and a custom event.
NODE_KEY = "agents_pipelines.node"  # the workflow node of a call
ITEM_KEY = "agents_pipelines.item"  # a map item's list index
ITEM_FAILED = "agents_pipelines.item_failed"  # an item skipped for good; data: ItemFailure
EVAL_KEY = "agents_pipelines.eval"  # the eval whose judge made a call (state_evals.judge_call)
# How a reply of the development cache (llm.cache) says so: a response_metadata key whose
# value holds the original usage, {"usage": {...}}.
CACHE_HIT = "agents_pipelines_cache_hit"

# USD figures are rounded to a nano-dollar so that sums agree exactly wherever they are made.
USD_DIGITS = 9


def round_usd(value: float) -> float:
    # float(): a sum over nothing is the int 0, which Dagster's float metadata refuses.
    return round(float(value), USD_DIGITS)


@dataclass(frozen=True)
class TokenUsage:
    """Gemini's usageMetadata as LangChain reports it.

    ``prompt`` includes ``cached``; ``completion`` includes ``reasoning`` (thoughts), which
    Gemini bills as output.
    """

    prompt: int = 0
    completion: int = 0
    total: int = 0
    reasoning: int = 0
    cached: int = 0

    @classmethod
    def from_langchain(cls, usage: Mapping[str, Any] | None) -> TokenUsage:
        if not usage:
            return cls()
        prompt, completion = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        return cls(
            prompt=prompt,
            completion=completion,
            total=int(usage.get("total_tokens") or prompt + completion),
            reasoning=int((usage.get("output_token_details") or {}).get("reasoning", 0) or 0),
            cached=int((usage.get("input_token_details") or {}).get("cache_read", 0) or 0),
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def astuple(usage: TokenUsage) -> tuple[int, ...]:
    return (usage.prompt, usage.completion, usage.total, usage.reasoning, usage.cached)


@dataclass(frozen=True)
class Price:
    """What one call cost, and where the rates came from."""

    input_usd: float
    output_usd: float
    source: str

    @property
    def total_usd(self) -> float:
        return round_usd(self.input_usd + self.output_usd)


class Pricer(Protocol):
    def price(self, model: str, usage: TokenUsage) -> Price | None:
        """The cost of ``usage`` on ``model``; None when the model has no known price."""
        ...


PYTHON = "python"  # the ``kind`` and ``model`` of a Python step's record
# The status of a request a stop cut short in flight. It was sent, and Gemini may bill it,
# but no usage came back: it counts as an LLM call, unpriced (no tokens, no cost).
CANCELLED = "cancelled"


@dataclass(frozen=True)
class CallRecord:
    """One LLM call attempt, or one run of a Python step (``kind`` "python", no tokens)."""

    node: str
    model: str
    usage: TokenUsage
    price: Price | None
    latency_s: float
    status: str = "ok"  # "ok", "error" or CANCELLED
    error: str | None = None
    prompt: str | None = None  # kept only for artifact_level "full"
    reply: str | None = None
    item: int | None = None  # the list index, for a call of a map node's item
    tools: tuple[str, ...] = ()  # the tools the model called in its reply
    kind: str = "llm"  # "llm" or "python"
    cache_hit: bool = False  # answered by the development cache: no tokens billed
    saved: Price | None = None  # a hit's original usage, priced: what it saved
    eval: str | None = None  # the eval whose judge made the call; None: the workflow's own

    @property
    def is_llm(self) -> bool:
        return self.kind == "llm"

    @property
    def cost_usd(self) -> float | None:
        return None if self.price is None else self.price.total_usd

    @property
    def saved_cost_usd(self) -> float | None:
        """What a cache hit would have cost (None for a call, or a hit of no known price)."""
        return None if self.saved is None else self.saved.total_usd


@dataclass(frozen=True)
class ItemFailure:
    """An item of a map node (``on_item_error: skip``) that failed for good and was
    written as its element type's empty value. ``error`` is redacted."""

    node: str
    item: int
    error: str


@dataclass(frozen=True)
class ResumedNode:
    """A node (or one map item) that an earlier attempt of the run finished, and that a
    resumed attempt reuses from the checkpoint instead of calling it again. Its figures are
    what that attempt paid for it (its failed LLM call attempts included)."""

    node: str
    item: int | None
    llm_calls: int
    total_tokens: int
    cost_usd: float

    @classmethod
    def of(cls, node: str, item: int | None, calls: Sequence[CallRecord]) -> ResumedNode:
        summary = UsageSummary(tuple(calls))
        return cls(node, item, summary.llm_calls, summary.tokens.total, summary.total_cost_usd)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UsageSummary:
    """All calls of one run, with the totals every report shows, and the map items it
    skipped. ``resumed`` lists what a resumed run reused: shown apart, never in the totals
    (the attempt that made those calls reported them)."""

    calls: Sequence[CallRecord] = field(default_factory=tuple)
    failed_items: Sequence[ItemFailure] = field(default_factory=tuple)
    resumed: Sequence[ResumedNode] = field(default_factory=tuple)

    @property
    def resumed_cost_usd(self) -> float:
        """What the reused nodes cost the attempt that ran them."""
        return round_usd(sum(r.cost_usd for r in self.resumed))

    @property
    def llm_calls(self) -> int:
        """LLM call attempts; a Python step is listed in ``calls`` but is not one."""
        return sum(call.is_llm for call in self.calls)

    @property
    def cancelled_calls(self) -> int:
        """Requests a stop cut short in flight: counted in ``llm_calls``, unpriced."""
        return sum(call.status == CANCELLED for call in self.calls)

    @property
    def tokens(self) -> TokenUsage:
        return sum((call.usage for call in self.calls), TokenUsage())

    @property
    def total_cost_usd(self) -> float:
        """The cost of priced calls. Unpriced models are listed in ``unpriced_models``."""
        return round_usd(sum(call.cost_usd or 0.0 for call in self.calls))

    @property
    def eval_cost_usd(self) -> float:
        """What the evals' judges cost: a part of ``total_cost_usd``, shown apart."""
        return round_usd(sum(call.cost_usd or 0.0 for call in self.calls if call.eval))

    @property
    def eval_tokens(self) -> int:
        """The judges' tokens: a part of ``tokens.total``, shown apart."""
        return sum(call.usage.total for call in self.calls if call.eval)

    @property
    def cache_hits(self) -> int:
        return sum(call.cache_hit for call in self.calls)

    @property
    def saved_cost_usd(self) -> float:
        """What the cache hits would have cost, had they been calls; not in the total."""
        return round_usd(sum(call.saved_cost_usd or 0.0 for call in self.calls))

    @property
    def unpriced_models(self) -> list[str]:
        return sorted({c.model for c in self.calls if c.price is None and c.usage.total})

    def totals(self) -> dict[str, int | float]:
        """The run's token counts, cost and call count: the figures of every report (MLflow
        metrics, asset metadata, cost_summary.json). The costs are floats, the rest ints.
        A cache hit counts as an LLM call of no tokens; what it saved is apart. The evals'
        judge calls are in every figure (they are paid for like any call, and count against
        the budget and spend limits); ``eval_cost_usd`` and ``eval_tokens`` are their share."""
        tokens = self.tokens
        return {
            "total_tokens": tokens.total,
            "prompt_tokens": tokens.prompt,
            "completion_tokens": tokens.completion,
            "reasoning_tokens": tokens.reasoning,
            "cached_tokens": tokens.cached,
            "total_cost_usd": self.total_cost_usd,
            "llm_calls": self.llm_calls,
            "cache_hits": self.cache_hits,
            "saved_cost_usd": self.saved_cost_usd,
            "eval_cost_usd": self.eval_cost_usd,
            "eval_tokens": self.eval_tokens,
        }

    def by_model(self) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[CallRecord]] = defaultdict(list)
        for call in self.calls:
            if call.is_llm:
                groups[call.model].append(call)
        return {
            model: {
                "llm_calls": len(calls),
                **asdict(sum((c.usage for c in calls), TokenUsage())),
                "cost_usd": None
                if any(c.price is None and c.usage.total for c in calls)
                else round_usd(sum(c.cost_usd or 0.0 for c in calls)),
                "price_sources": sorted({c.price.source for c in calls if c.price}),
            }
            for model, calls in sorted(groups.items())
        }

    def skipped_items_warning(self) -> str | None:
        """What a run that skipped failed map items warns; None when it skipped none."""
        if not self.failed_items:
            return None
        by_node: dict[str, list[int]] = defaultdict(list)
        for failure in self.failed_items:
            by_node[failure.node].append(failure.item)
        listed = "; ".join(
            f"node `{node}`: {len(items)} item(s), index {', '.join(map(str, sorted(items)))}"
            for node, items in sorted(by_node.items())
        )
        first = self.failed_items[0]
        return (
            f"Map items failed and were skipped (on_item_error: skip), each written as its "
            f"element type's empty value: {listed}. First error (item {first.item}): "
            f"{first.error}. See `failed_items` in the metadata and cost_summary.json."
        )

    def describe_spend(self) -> str:
        tokens = self.tokens
        text = (
            f"${self.total_cost_usd:.6f} over {self.llm_calls} LLM call(s), {tokens.total} tokens"
        )
        if self.cache_hits:
            text += (
                f" ({self.cache_hits} answered by the development cache, "
                f"saving ${self.saved_cost_usd:.6f})"
            )
        if self.unpriced_models:
            text += f" (unpriced: {', '.join(self.unpriced_models)})"
        if self.cancelled_calls:
            text += (
                f" ({self.cancelled_calls} cancelled in flight by the stop, counted unpriced: "
                "Gemini may bill them)"
            )
        return text
