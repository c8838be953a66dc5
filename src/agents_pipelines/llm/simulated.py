"""A deterministic chat model for dry runs and cost estimates.

It is a real LangChain chat model: callbacks, MLflow autolog spans and usage metadata work
as with Gemini, and usage is reported under the configured model name, so a dry run shows
what the workflow would roughly cost. Structured output follows the requested schema.
"""

from __future__ import annotations

import json
import time
from operator import itemgetter
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from pydantic import BaseModel

_WORDS = (
    *("agents", "pipelines", "simulate", "this", "answer", "deterministically", "so", "dry"),
    *("runs", "show", "the", "shape", "and", "the", "estimated", "cost", "of", "a"),
    *("workflow", "without", "calling", "Gemini", "at", "all"),
)


class SimulatedChatModel(BaseChatModel):
    """Answers every prompt deterministically, with plausible usage metadata."""

    model: str = "gemini-2.5-flash"
    latency_s: float = 0.0
    reply_words: int = 120
    temperature: float | None = None

    @property
    def _llm_type(self) -> str:
        return "simulated"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(
            ls_provider="simulated", ls_model_name=self.model, ls_model_type="chat"
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        response_json_schema: dict[str, Any] | None = None,
        response_mime_type: str | None = None,
        ls_structured_output_format: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_s:
            time.sleep(self.latency_s)
        prompt = "\n".join(message.text for message in messages)
        if response_json_schema is not None:
            text = json.dumps(sample_for_schema(response_json_schema, response_json_schema))
        else:
            text = self._text_reply(prompt)
        usage = UsageMetadata(
            input_tokens=max(1, len(prompt) // 4),
            output_tokens=max(1, len(text) // 4),
            total_tokens=max(1, len(prompt) // 4) + max(1, len(text) // 4),
        )
        message = AIMessage(
            content=text, usage_metadata=usage, response_metadata={"model_name": self.model}
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _text_reply(self, prompt: str) -> str:
        head = " ".join(prompt.split())[:80]
        body = " ".join(_WORDS[i % len(_WORDS)] for i in range(self.reply_words))
        return f"[simulated {self.model}] Re: {head}. {body}."

    def with_structured_output(  # type: ignore[override]
        self, schema: type[BaseModel], *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        bound = self.bind(response_json_schema=schema.model_json_schema())
        parser: PydanticOutputParser[Any] = PydanticOutputParser(pydantic_object=schema)
        if not include_raw:
            return bound | parser
        parse = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        no_parse = RunnablePassthrough.assign(parsed=lambda _: None)
        with_fallback = parse.with_fallbacks([no_parse], exception_key="parsing_error")
        return RunnableMap(raw=bound) | with_fallback


def sample_for_schema(schema: dict[str, Any], root: dict[str, Any], name: str = "value") -> Any:
    """A deterministic value that validates against a JSON schema (the pydantic subset)."""
    if "$ref" in schema:
        return sample_for_schema(_resolve(schema["$ref"], root), root, name)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return sample_for_schema(options[0], root, name)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if kind == "object":
        props = schema.get("properties", {})
        if props:
            return {k: sample_for_schema(v, root, k) for k, v in props.items()}
        extra = schema.get("additionalProperties")
        return {"key": sample_for_schema(extra, root, name)} if isinstance(extra, dict) else {}
    if kind == "array":
        return [sample_for_schema(schema.get("items", {}), root, name) for _ in range(3)]
    samples = {"integer": 150, "number": 0.5, "boolean": True, "null": None}
    if kind in samples:
        return samples[kind]
    return f"Simulated {name.replace('_', ' ')}: " + " ".join(_WORDS[:12])


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)
