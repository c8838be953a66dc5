"""The OpenTelemetry GenAI semantic conventions on each LLM call's span.

MLflow's autolog names a call's model and usage in attributes of its own
(``mlflow.llm.model``, ``mlflow.chat.tokenUsage``) as JSON text. A collector, and the tools
behind it, read the conventions' attributes instead: ``gen_ai.system``,
``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` and ``output_tokens`` (the
ledger's prompt and completion tokens: thinking is output, as Gemini bills it), and
``gen_ai.response.finish_reasons``. tracking/span_policy.py sets them on the span before it
ends, as plain OpenTelemetry values, so MLflow's copy and the collector's carry the same.
"""

from __future__ import annotations

from typing import Any

from agents_pipelines.llm.served_tier import take_finish_reasons

# The conventions' value for Google's Gemini API (gen_ai.system, and gen_ai.provider.name
# that newer releases of the conventions call it).
GEMINI = "gcp.gemini"


def mark_llm_span(span: Any) -> None:
    """Set the GenAI attributes on an MLflow chat model span; other spans are left alone."""
    from agents_pipelines._compat.mlflow import SpanAttributeKey, raw_span

    if span.span_type != "CHAT_MODEL":
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": GEMINI,
        "gen_ai.provider.name": GEMINI,
    }
    if model := span.get_attribute(SpanAttributeKey.MODEL):
        attributes["gen_ai.request.model"] = str(model)
    usage = span.get_attribute(SpanAttributeKey.CHAT_USAGE)
    if isinstance(usage, dict):
        attributes["gen_ai.usage.input_tokens"] = int(usage.get("input_tokens", 0))
        attributes["gen_ai.usage.output_tokens"] = int(usage.get("output_tokens", 0))
    if reasons := take_finish_reasons():
        # The conventions' examples are lower case ("stop"); Gemini's enum is upper case.
        attributes["gen_ai.response.finish_reasons"] = [r.lower() for r in reasons]
    raw_span(span).set_attributes(attributes)
