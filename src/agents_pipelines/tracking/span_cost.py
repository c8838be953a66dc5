"""Put our cost on MLflow's LLM spans, so the trace's cost is the one we report.

MLflow computes a span's cost only when none is set, from its own catalog (which it may
download, and which knows nothing of config.pricing). A span processor sets the cost from
the run's own Pricer first; the trace then sums the very numbers the ledger sums.
"""

from __future__ import annotations

import threading
from typing import Any

from agents_pipelines.usage import Pricer, TokenUsage

_lock = threading.Lock()
_pricers: dict[str, Pricer] = {}


def price_spans_of(trace_id: str, pricer: Pricer) -> None:
    install()
    with _lock:
        _pricers[trace_id] = pricer


def forget(trace_id: str) -> None:
    with _lock:
        _pricers.pop(trace_id, None)


def install() -> None:
    """Add our processor to MLflow's span processors unless it is there.

    Checked on every run, not once: MLflow resets its tracing config (processors included)
    whenever the tracking URI changes.
    """
    from mlflow.tracing.config import configure, get_config

    with _lock:
        current = list(get_config().span_processors)
        if _set_cost not in current:
            configure(span_processors=[*current, _set_cost])


def _set_cost(span: Any) -> None:
    from mlflow.tracing.constant import SpanAttributeKey

    with _lock:
        pricer = _pricers.get(span.trace_id)
    usage = span.get_attribute(SpanAttributeKey.CHAT_USAGE)
    model = span.get_attribute(SpanAttributeKey.MODEL)
    if pricer is None or not usage or not model:
        return
    tokens = TokenUsage(
        prompt=int(usage.get("input_tokens", 0)),
        completion=int(usage.get("output_tokens", 0)),
        total=int(usage.get("total_tokens", 0)),
        cached=int(usage.get("cache_read_input_tokens", 0) or 0),
    )
    if (price := pricer.price(str(model), tokens)) is not None:
        span.set_attribute(
            SpanAttributeKey.LLM_COST,
            {"input_cost": price.input_usd, "output_cost": price.output_usd,
             "total_cost": price.total_usd},
        )
