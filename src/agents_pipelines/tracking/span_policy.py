"""What each span of a workflow's trace carries: our cost, and content only when allowed.

MLflow computes a span's cost only when none is set, from its own catalog (which it may
download, and which knows nothing of config.pricing). A span processor sets the cost from
the run's own Pricer first, so the trace sums the very numbers the ledger sums.

Autolog records every span's inputs and outputs: prompts, replies, the state. Unless the
workflow's artifact_level is "full", the same processor replaces them with a placeholder,
so prompts and model outputs reach MLflow only when the workflow asks for it. When it
does, text MLflow cannot encode (a lone surrogate) is escaped, or the trace would be lost.

A map node's item calls name their node and list index in LangChain's callback metadata,
which autolog keeps nested in the span's ``metadata`` attribute; the processor lifts them
to the span's own attributes (ITEM_INDEX, NODE) so a trace can be searched by item. A
judge's call (an eval) names its eval the same way, lifted to EVAL.

A reply of the development cache has no usage, so its span costs 0; the processor marks it
(CACHE_HIT_ATTRIBUTE) with what it saved (SAVED_COST), priced from the original usage the
cache hands over (llm.cache.take_hit).

A call's span names the service tier that served it (SERVICE_TIER), and its cost is at
that tier: llm.served_tier hands the tier over as the cache hands over a hit.

A failed call's span holds the provider's error three times: an exception event (message
and stacktrace), the status description and, from autolog, the attributes. The error may
repeat the API key, so the processor redacts API keys from every span it sees, ours or not.

With ``redact_pii``, the same pass masks personal data in the span's inputs, outputs,
attributes, events and status as the span ends, before any exporter sees it (MLflow's, or
an OpenTelemetry one). MLflow's own bookkeeping attributes (ids, types, usage, cost) are
left alone: a phone-shaped run of digits in an id would break the trace.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from typing import Any

from agents_pipelines.redaction import masking, redact, redact_value
from agents_pipelines.spec.models import PiiConfig
from agents_pipelines.telemetry.genai_spans import mark_llm_span
from agents_pipelines.tracking import span_release
from agents_pipelines.usage import STANDARD, Pricer, TokenUsage
from agents_pipelines.usage.records import EVAL_KEY, ITEM_KEY, NODE_KEY, TIER_KEY

REDACTED = "[not recorded: set observability.mlflow.artifact_level: full to record content]"
ITEM_INDEX = "agents_pipelines.item_index"  # span attribute: a map item's list index
NODE = "agents_pipelines.node"  # span attribute: the workflow node of a map item's call
EVAL = "agents_pipelines.eval"  # span attribute: the eval whose judge made the call
CACHE_HIT_ATTRIBUTE = "agents_pipelines.cache_hit"  # span attribute: the cache answered
SAVED_COST = "agents_pipelines.saved_cost_usd"  # span attribute: what a cache hit saved
SERVICE_TIER = "agents_pipelines.service_tier"  # span attribute: the tier that served a call
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class TracePolicy:
    pricer: Pricer
    keep_content: bool
    pii: PiiConfig | None = None  # redact_pii: masked in every span of the trace


# Module-level, not in the registry: read by our span processor, which MLflow keeps
# process-wide; an entry lives as long as its trace is open.
_lock = threading.Lock()
_policies: dict[str, TracePolicy] = {}


def apply_to(trace_id: str, policy: TracePolicy) -> None:
    install()
    with _lock:
        _policies[trace_id] = policy


def forget(trace_id: str) -> None:
    with _lock:
        _policies.pop(trace_id, None)


def install() -> None:
    """Add our processor to MLflow's span processors unless it is there.

    Checked on every run, not once: MLflow resets its tracing config (processors included)
    whenever the tracking URI changes.
    """
    from mlflow.tracing import configure

    from agents_pipelines._compat.mlflow import span_processors_in_use

    with _lock:
        current = span_processors_in_use()
        if _process not in current:
            configure(span_processors=[*current, _process])


def _process(span: Any) -> None:
    with _lock:
        policy = _policies.get(span.trace_id)
    if policy is not None:  # one of our workflow traces
        span_release.ended(span.trace_id)
        tier = _mark_tier(span)
        _set_cost(span, policy.pricer, tier)
        _mark_cache_hit(span, policy.pricer, tier)
        _lift_item(span)
        mark_llm_span(span)  # the GenAI conventions, for MLflow and the OTLP collector
        if policy.keep_content:
            _escape_lone_surrogates(span)
        elif span.parent_id is not None:
            span.set_inputs(REDACTED)
            span.set_outputs(REDACTED)
    # Last: content dropped above need not be searched.
    with masking(policy.pii if policy is not None else None):
        _redact_keys(span, pii=policy is not None and policy.pii is not None)


def _redact_keys(span: Any, pii: bool = False) -> None:
    """Redact API keys (and, within ``masking``, personal data) from the span's attributes,
    events and status, in place.

    Works on the OpenTelemetry span below MLflow's: its attributes are the JSON text MLflow
    stores (redacting that text skips a parse of every attribute of every span), and an
    exception event's attributes can only be replaced there.
    """
    from mlflow.entities import SpanStatus, SpanStatusCode

    from agents_pipelines._compat.mlflow import raw_span, replace_event_attributes

    otel = raw_span(span)
    for name, value in dict(otel.attributes or {}).items():
        keys_only = not pii or name in _bookkeeping() or name.startswith("agents_pipelines.")
        if isinstance(value, str) and (clean := redact(value, keys_only=keys_only)) != value:
            otel.set_attribute(name, clean)
    for event in otel.events or ():
        attributes = dict(event.attributes or {})
        if (clean_attributes := redact_value(attributes)) != attributes:
            replace_event_attributes(event, clean_attributes)
    description = otel.status.description
    if description and (clean := redact(description)) != description:
        span.set_status(SpanStatus(SpanStatusCode.ERROR, clean))


@functools.cache
def _bookkeeping() -> frozenset[str]:
    """MLflow's span attributes that hold no content (ids, types, usage, cost): never
    masked, as a phone-shaped run of digits in one would break the trace."""
    from agents_pipelines._compat.mlflow import SpanAttributeKey as Key

    return frozenset(
        (
            *(Key.EXPERIMENT_ID, Key.REQUEST_ID, Key.SPAN_TYPE, Key.LOG_LEVEL),
            *(Key.FUNCTION_NAME, Key.START_TIME_NS, Key.CHAT_USAGE, Key.LLM_COST, Key.MODEL),
            *(Key.MODEL_PROVIDER, Key.MESSAGE_FORMAT, Key.LINKED_PROMPTS),
            Key.LINKED_GATEWAY_TRACE_ID,
        )
    )


def _escape_lone_surrogates(span: Any) -> None:
    """Store a lone surrogate as its escape text (the six characters \\ud800).

    Python text may hold one ("\\ud800" in an input, or in a JSON reply); UTF-8 cannot,
    and MLflow drops the whole trace when it fails to encode one. MLflow keeps attributes
    as JSON text, so the check is one ``isascii`` per attribute, and the rewrite runs only
    where an encode fails.
    """
    from agents_pipelines._compat.mlflow import raw_span

    otel = raw_span(span)
    attributes = otel.attributes  # the JSON text MLflow stores, not decoded values
    for key, raw in list(attributes.items()):
        if isinstance(raw, str) and not raw.isascii() and not _encodes(raw):
            otel.set_attribute(key, _LONE_SURROGATE.sub(_json_escape, raw))


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_escape(match: re.Match[str]) -> str:
    # An escaped backslash, so the stored JSON decodes to the text "\\ud800" rather than
    # back to the surrogate.
    return f"\\\\u{ord(match.group()):04x}"


def _lift_item(span: Any) -> None:
    metadata = span.get_attribute("metadata")
    if isinstance(metadata, dict) and ITEM_KEY in metadata:
        span.set_attribute(ITEM_INDEX, metadata[ITEM_KEY])
        span.set_attribute(NODE, metadata.get(NODE_KEY))
    if isinstance(metadata, dict) and EVAL_KEY in metadata:  # a judge's call (evals)
        span.set_attribute(EVAL, metadata[EVAL_KEY])


def _mark_tier(span: Any) -> str:
    """The service tier that served a chat model span's call (SERVICE_TIER), taken from
    llm.served_tier; a span that is no call, or a cache hit, has the tier it asked for."""
    from agents_pipelines.llm.served_tier import take_served_tier

    metadata = span.get_attribute("metadata")
    asked = metadata.get(TIER_KEY) if isinstance(metadata, dict) else None
    if span.span_type != "CHAT_MODEL":
        return asked or STANDARD
    tier = take_served_tier(asked)
    span.set_attribute(SERVICE_TIER, tier)
    return tier


def _mark_cache_hit(span: Any, pricer: Pricer, tier: str) -> None:
    """A reply of the development cache: its span says so, and what the call would have
    cost (its own cost, set above from its zeroed usage, is 0)."""
    from agents_pipelines._compat.mlflow import SpanAttributeKey
    from agents_pipelines.llm.cache import take_hit  # langchain-core: only once a run traces

    usage = span.get_attribute(SpanAttributeKey.CHAT_USAGE)
    if span.span_type != "CHAT_MODEL" or not usage or usage.get("total_tokens"):
        return  # a billed call never has zero usage; a hit always has
    if (original := take_hit()) is None:
        return
    span.set_attribute(CACHE_HIT_ATTRIBUTE, True)
    model = str(span.get_attribute(SpanAttributeKey.MODEL))
    price = pricer.price(model, TokenUsage.from_langchain(original), tier)
    span.set_attribute(SAVED_COST, None if price is None else price.total_usd)


def _set_cost(span: Any, pricer: Pricer, tier: str) -> None:
    from agents_pipelines._compat.mlflow import SpanAttributeKey

    usage = span.get_attribute(SpanAttributeKey.CHAT_USAGE)
    model = span.get_attribute(SpanAttributeKey.MODEL)
    if not usage or not model:
        return
    tokens = TokenUsage(
        prompt=int(usage.get("input_tokens", 0)),
        completion=int(usage.get("output_tokens", 0)),
        total=int(usage.get("total_tokens", 0)),
        cached=int(usage.get("cache_read_input_tokens", 0) or 0),
    )
    # Set even where MLflow's own cost would agree: MLflow prices every call at the
    # standard tier (mlflow 3.17's cost_per_token drops the catalog's service_tiers).
    if (price := pricer.price(str(model), tokens, tier)) is not None:
        span.set_attribute(
            SpanAttributeKey.LLM_COST,
            {
                "input_cost": price.input_usd,
                "output_cost": price.output_usd,
                "total_cost": price.total_usd,
            },
        )
