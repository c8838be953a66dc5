"""Which service tier served a Gemini call, from the reply's ``usageMetadata``, handed on
to the ledger (in the message) and to the trace (through a box in the call's context).

Gemini says which tier served a call in ``usageMetadata``: ``serviceTier`` (the Gemini API:
``standard``, ``flex``, ``priority``) or ``trafficType`` (google-genai's TrafficType:
``ON_DEMAND``, ``ON_DEMAND_FLEX``, ``ON_DEMAND_PRIORITY``). A priority request past its
limits is served, and billed, at standard. LangChain's message keeps neither field, so
``llm.tiered_gemini`` reads it from the SDK's response and puts it in the message's
``response_metadata`` under SERVED_TIER.

MLflow converts a reply to OpenAI's format before our span processor sees it, which drops
``response_metadata``; the processor runs in the context of the call, right after it (as
``llm.cache.take_hit`` relies on too), so the served tier also goes into a box there.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from agents_pipelines.usage.records import STANDARD

__all__ = [
    "note_finish_reasons",
    "note_served",
    "share_served_tiers",
    "take_finish_reasons",
    "take_served_tier",
    "tier_of",
]

_TRAFFIC_TYPES = {
    "ON_DEMAND": "standard",
    "ON_DEMAND_FLEX": "flex",
    "ON_DEMAND_PRIORITY": "priority",
}
_SERVICE_TIERS = frozenset({"standard", "flex", "priority"})

# A box, so that a context copied from the one that made it writes where it reads.
_last_served: ContextVar[list[str | None] | None] = ContextVar(
    "agents_pipelines_last_served_tier", default=None
)
# The finish reasons of the last reply (Gemini's finishReason per candidate), handed to the
# trace the same way: MLflow's conversion writes finish_reason null (telemetry/genai_spans).
_last_finish: ContextVar[list[tuple[str, ...]] | None] = ContextVar(
    "agents_pipelines_last_finish_reasons", default=None
)


def tier_of(usage_metadata: Any) -> str | None:
    """The tier that served a reply, from google-genai's ``UsageMetadata``; None when it
    does not say (an older API, or a tier we do not price, such as provisioned throughput,
    which then counts as the tier asked for)."""
    if usage_metadata is None:
        return None
    tier = _enum_value(getattr(usage_metadata, "service_tier", None)).lower()
    if tier in _SERVICE_TIERS:
        return tier
    traffic = _enum_value(getattr(usage_metadata, "traffic_type", None)).upper()
    return _TRAFFIC_TYPES.get(traffic)


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


def share_served_tiers() -> None:
    """Give this context a box for the last served tier that the contexts copied from it
    write to (LangChain's async path may make the call in a copy of the caller's)."""
    _last_served.set([None])
    _last_finish.set([()])


def note_served(tier: str | None) -> None:
    box = _last_served.get()
    if box is None:
        _last_served.set([tier])
    else:
        box[0] = tier


def take_served_tier(asked: str | None = None) -> str:
    """The tier that served the last call of this context, once; else ``asked``, else
    standard (a cache hit, or a reply that did not say)."""
    box = _last_served.get()
    served = None
    if box is not None:
        served, box[0] = box[0], None
    return served or asked or STANDARD


def note_finish_reasons(reasons: tuple[str, ...]) -> None:
    box = _last_finish.get()
    if box is None:
        _last_finish.set([reasons])
    else:
        box[0] = reasons


def take_finish_reasons() -> tuple[str, ...]:
    """The finish reasons of the last reply of this context, once; () if none said."""
    box = _last_finish.get()
    if box is None:
        return ()
    reasons, box[0] = box[0], ()
    return reasons
