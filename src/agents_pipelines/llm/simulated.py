"""A deterministic chat model for dry runs and cost estimates.

It is a real LangChain chat model: callbacks, MLflow autolog spans and usage metadata work
as with Gemini, and usage is reported under the configured model name, so a dry run shows
what the workflow would roughly cost. Structured output follows the requested schema.
Bound to tools, it calls each tool once, with arguments sampled from its schema, and then
answers, so a dry run of a tool-calling node runs its tools.
What it answers is in ``simulated_replies``: seeded by the request, so a dry run repeats.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel

from agents_pipelines.llm.served_tier import note_finish_reasons, note_served
from agents_pipelines.llm.simulated_replies import (
    FieldHints,
    request_seed,
    structured_reply,
    text_reply,
)
from agents_pipelines.schema_sample import schema_example
from agents_pipelines.usage.records import SERVED_TIER, STANDARD, TIER_KEY


class SimulatedChatModel(BaseChatModel):
    """Answers every prompt deterministically, with plausible usage metadata."""

    model: str = "gemini-2.5-flash"
    latency_s: float = 0.0
    reply_words: int = 120
    temperature: float | None = None
    # The tier a dry run prices the calls at: the tier a Gemini run asks for, "batch" for a
    # batch node (llm.batch), whose calls the simulated model answers at once.
    service_tier: str = STANDARD

    @property
    def _llm_type(self) -> str:
        return "simulated"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="simulated", ls_model_name=self.model, ls_model_type="chat"
        )
        params[TIER_KEY] = self.service_tier  # type: ignore[literal-required]
        return params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_s:
            time.sleep(self.latency_s)
        step = (run_manager.metadata or {}).get("langgraph_step") if run_manager else None
        return self._answer(messages, step, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """The same answer; the latency is awaited, so calls in flight hold no thread."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        step = (run_manager.metadata or {}).get("langgraph_step") if run_manager else None
        return self._answer(messages, step, **kwargs)

    def _answer(
        self,
        messages: list[BaseMessage],
        step: Any,
        response_json_schema: dict[str, Any] | None = None,
        response_mime_type: str | None = None,
        ls_structured_output_format: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        value_hints: FieldHints | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt = "\n".join(message.text for message in messages)
        if tools and (call := _next_tool_call(messages, tools)) is not None:
            return self._tool_call_result(prompt, call)
        # The graph step is in the seed so that a loop asking the same question again ends.
        roles = [(message.type, str(message.text)) for message in messages]
        seed = request_seed(roles, response_json_schema, step)
        if response_json_schema is not None:
            text = structured_reply(response_json_schema, seed, value_hints or {})
        else:
            text = text_reply(self.model, prompt, seed, self.reply_words, value_hints or {})
        usage = UsageMetadata(
            input_tokens=max(1, len(prompt) // 4),
            output_tokens=max(1, len(text) // 4),
            total_tokens=max(1, len(prompt) // 4) + max(1, len(text) // 4),
        )
        message = AIMessage(content=text, usage_metadata=usage, response_metadata=self._metadata())
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _metadata(self) -> dict[str, Any]:
        """What Gemini's reply says of itself: its model, the tier that served it, and why
        it stopped (STOP, as Gemini says of a finished reply and of a tool call)."""
        note_served(self.service_tier)
        note_finish_reasons(("STOP",))
        return {"model_name": self.model, SERVED_TIER: self.service_tier}

    def _tool_call_result(self, prompt: str, call: dict[str, Any]) -> ChatResult:
        prompt_tokens = max(1, len(prompt) // 4)
        output_tokens = max(1, len(json.dumps(call["args"])) // 4)
        usage = UsageMetadata(
            input_tokens=prompt_tokens,
            output_tokens=output_tokens,
            total_tokens=prompt_tokens + output_tokens,
        )
        message = AIMessage(
            content="",
            tool_calls=[call],
            usage_metadata=usage,
            response_metadata=self._metadata(),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The tools as function schemas, as Gemini is sent them."""
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

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


def _next_tool_call(
    messages: list[BaseMessage], tools: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """A call of the first bound tool that has no result in the conversation yet."""
    answered = {message.name for message in messages if isinstance(message, ToolMessage)}
    for i, tool in enumerate(tools):
        function = tool["function"]
        if function["name"] not in answered:
            args = schema_example(function.get("parameters") or {"type": "object"})
            return {"name": function["name"], "args": args, "id": f"simulated-call-{i}"}
    return None
