"""Token usage and cost of LLM calls, as plain values.

One ``CallRecord`` per LLM call attempt, and one per run of a Python step (no tokens, no
cost, not an LLM call). Every figure agents_pipelines reports (asset metadata, MLflow
metrics, cost_summary.json, span costs) is computed from these records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

# How a map node's item calls identify themselves to the ledger (usage.ledger) and the
# trace (tracking.span_policy): LangChain callback metadata keys, and a custom event.
NODE_KEY = "agents_pipelines.node"  # the workflow node of a call
ITEM_KEY = "agents_pipelines.item"  # a map item's list index
# The run config's (and the checkpoints') record of the registry prompts' pinned versions:
# tracking.prompt_registry.PromptPins.as_json.
PROMPTS_KEY = "agents_pipelines_prompts"
ITEM_FAILED = "agents_pipelines.item_failed"  # an item skipped for good; data: ItemFailure
EVAL_KEY = "agents_pipelines.eval"  # the eval whose judge made a call (state_evals.judge_call)
# The custom event a batched call (llm.batch) sends once answered: its job, as a dict of
# name, state, requests, failures and attached.
BATCH_JOB = "agents_pipelines.batch_job"
# How a reply of the development cache (llm.cache) says so: a response_metadata key whose
# value holds the original usage, {"usage": {...}}.
CACHE_HIT = "agents_pipelines_cache_hit"
# The service tier that served a call (llm.served_tier): a response_metadata key of the reply.
SERVED_TIER = "agents_pipelines_service_tier"
# The service tier a call asked for: a LangChain callback metadata key (llm.tiered_gemini).
TIER_KEY = "agents_pipelines.service_tier"

# USD figures are rounded to a nano-dollar so that sums agree exactly wherever they are made.
USD_DIGITS = 9


def round_usd(value: float) -> float:
    # float(): a sum over nothing is the int 0, which Dagster's float metadata refuses.
    return round(float(value), USD_DIGITS)


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Price:
    """What one call cost, and where the rates came from."""

    input_usd: float
    output_usd: float
    source: str

    @property
    def total_usd(self) -> float:
        return round_usd(self.input_usd + self.output_usd)


# Gemini's service tiers, as the pricer takes them: ``standard`` (the interactive price),
# ``flex`` and ``batch`` (about half of it), ``priority`` (above it). A call is priced at the
# tier that served it (llm.service_tier reads it from the reply).
ServiceTier = Literal["standard", "flex", "priority", "batch"]
STANDARD: ServiceTier = "standard"
SERVICE_TIERS: tuple[ServiceTier, ...] = ("standard", "flex", "priority", "batch")


class Pricer(Protocol):
    def price(self, model: str, usage: TokenUsage, tier: str = STANDARD) -> Price | None:
        """The cost of ``usage`` on ``model`` at service ``tier`` (one of SERVICE_TIERS);
        None when the model has no known price."""
        ...


PYTHON = "python"  # the ``kind`` and ``model`` of a Python step's record
# The status of a request a stop cut short in flight. It was sent, and Gemini may bill it,
# but no usage came back: it counts as an LLM call, unpriced (no tokens, no cost).
CANCELLED = "cancelled"


# Slots: a run keeps one record per call (node_calls, cost_summary.json list each one);
# 567 -> 430 bytes a call with its usage and price (tracemalloc, 10,000 records).
@dataclass(frozen=True, slots=True)
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
    tier: str = STANDARD  # the service tier that served the call (asked for, if no reply)
    # Off the standard tier: what the call would have cost at the interactive price.
    interactive_cost_usd: float | None = None

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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Figures:
    """A run's totals, added up call by call as the ledger records them: a check before
    each call (a budget, a spend limit) then reads them in O(1), where a sum over every
    call so far made a map of N items O(N²). Sums run in call order, as ``sum`` over the
    calls did, so every report gives the very same floats."""

    tokens: TokenUsage = TokenUsage()
    cost_usd: float = 0.0  # unrounded: rounded where reported, as a sum over calls was
    eval_cost_usd: float = 0.0
    eval_tokens: int = 0
    saved_cost_usd: float = 0.0
    llm_calls: int = 0
    cancelled_calls: int = 0
    cache_hits: int = 0
    unpriced_models: frozenset[str] = frozenset()

    def plus(self, call: CallRecord) -> Figures:
        cost = call.cost_usd or 0.0
        return Figures(
            tokens=self.tokens + call.usage,
            cost_usd=self.cost_usd + cost,
            eval_cost_usd=self.eval_cost_usd + cost if call.eval else self.eval_cost_usd,
            eval_tokens=self.eval_tokens + call.usage.total if call.eval else self.eval_tokens,
            saved_cost_usd=self.saved_cost_usd + (call.saved_cost_usd or 0.0),
            llm_calls=self.llm_calls + call.is_llm,
            cancelled_calls=self.cancelled_calls + (call.status == CANCELLED),
            cache_hits=self.cache_hits + call.cache_hit,
            unpriced_models=self.unpriced_models | {call.model}
            if call.price is None and call.usage.total
            else self.unpriced_models,
        )

    @classmethod
    def of(cls, calls: Iterable[CallRecord]) -> Figures:
        figures = cls()
        for call in calls:
            figures = figures.plus(call)
        return figures


@dataclass(frozen=True)
class UsageSummary:
    """All calls of one run, with the totals every report shows, and the map items it
    skipped. ``resumed`` lists what a resumed run reused: shown apart, never in the totals
    (the attempt that made those calls reported them).

    ``figures`` are the totals of ``calls``: the ledger hands its running ones (so a summary
    per call costs O(1)); left out, they are added up from ``calls`` once, here."""

    calls: Sequence[CallRecord] = field(default_factory=tuple)
    failed_items: Sequence[ItemFailure] = field(default_factory=tuple)
    resumed: Sequence[ResumedNode] = field(default_factory=tuple)
    # The Batch API jobs of the run's batch nodes (llm.batch), in submission order: name,
    # state, requests, failures, attached (a job of an earlier attempt, not paid again).
    batch_jobs: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    figures: Figures | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.figures is None:
            object.__setattr__(self, "figures", Figures.of(self.calls))

    @property
    def _figures(self) -> Figures:
        assert self.figures is not None  # set by __post_init__
        return self.figures

    @property
    def resumed_cost_usd(self) -> float:
        """What the reused nodes cost the attempt that ran them."""
        return round_usd(sum(r.cost_usd for r in self.resumed))

    @property
    def llm_calls(self) -> int:
        """LLM call attempts; a Python step is listed in ``calls`` but is not one."""
        return self._figures.llm_calls

    @property
    def cancelled_calls(self) -> int:
        """Requests a stop cut short in flight: counted in ``llm_calls``, unpriced."""
        return self._figures.cancelled_calls

    @property
    def tokens(self) -> TokenUsage:
        return self._figures.tokens

    @property
    def total_cost_usd(self) -> float:
        """The cost of priced calls. Unpriced models are listed in ``unpriced_models``."""
        return round_usd(self._figures.cost_usd)

    @property
    def eval_cost_usd(self) -> float:
        """What the evals' judges cost: a part of ``total_cost_usd``, shown apart."""
        return round_usd(self._figures.eval_cost_usd)

    @property
    def eval_tokens(self) -> int:
        """The judges' tokens: a part of ``tokens.total``, shown apart."""
        return self._figures.eval_tokens

    @property
    def cache_hits(self) -> int:
        return self._figures.cache_hits

    @property
    def saved_cost_usd(self) -> float:
        """What the cache hits would have cost, had they been calls; not in the total."""
        return round_usd(self._figures.saved_cost_usd)

    @property
    def saved_vs_interactive_usd(self) -> float:
        """What the calls off the standard tier (batch mode) saved against the interactive
        price of the same tokens; not in the total."""
        return round_usd(
            sum(
                (c.interactive_cost_usd or 0.0) - (c.cost_usd or 0.0)
                for c in self.calls
                if c.interactive_cost_usd is not None
            )
        )

    @property
    def unpriced_models(self) -> list[str]:
        return sorted(self._figures.unpriced_models)

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
