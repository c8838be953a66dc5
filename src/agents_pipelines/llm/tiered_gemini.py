"""ChatGoogleGenerativeAI that sends each call at its service tier and says which tier
served it.

This hook belongs in ``agents_pipelines._compat.genai`` (the lead moves it there): it leans
on behaviour of langchain-google-genai that is not documented. Checked with
langchain-google-genai 4.x and google-genai 3.x, as locked in uv.lock.

- Sending: ChatGoogleGenerativeAI has no ``service_tier`` field, and its ``model_kwargs``
  are never sent. A call's extra keyword arguments do reach ``GenerateContentConfig(**kw)``
  (``_build_request_config``), and google-genai 3 sends ``GenerateContentConfig.service_tier``
  as the request's ``serviceTier``: the tier is added to each call's arguments. The
  standard tier is not sent, so a standard request is what it was before tiers (recorded
  cassettes and the development cache still match it).
- Reading back: LangChain's message keeps nothing of ``usageMetadata`` but token counts
  (``_response_to_result``). The SDK client's ``generate_content`` is wrapped to read the
  tier of each response (``llm.served_tier.tier_of``); the reply's ``response_metadata``
  carries it under SERVED_TIER, for the ledger, and the trace gets it through
  ``llm.served_tier``.
- The tier asked for goes into the call's LangChain metadata (TIER_KEY, through
  ``_get_ls_params``), so a call that fails, with no reply, still names its tier.

Public API that would replace it: a ``service_tier`` field on ChatGoogleGenerativeAI, and
the served tier in the message's ``response_metadata``. tests/test_service_tiers.py fails
if the request no longer carries ``serviceTier`` or the served tier is lost.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Self

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from langchain_google_genai import ChatGoogleGenerativeAI
from pydantic import model_validator

from agents_pipelines.llm.served_tier import note_finish_reasons, note_served, tier_of
from agents_pipelines.usage.records import SERVED_TIER, STANDARD, TIER_KEY

__all__ = ["TieredChatGoogleGenerativeAI"]

# The tier of the last response the wrapped client returned in this context: set in the
# call's own frame chain (a direct call, or an await in the same task), read right after.
_reply_tier: ContextVar[str | None] = ContextVar("agents_pipelines_reply_tier", default=None)


class TieredChatGoogleGenerativeAI(ChatGoogleGenerativeAI):
    # None is standard: a default LangChain leaves out of the serialized model (a truthy
    # default would be written into it, and change every standard request's cache key).
    service_tier: str | None = None

    # The parent's id and name: the development cache keys a request by the serialized
    # model, and a standard-tier model must key exactly as the plain client did; trace
    # spans keep the client's name too.
    @classmethod
    def lc_id(cls) -> list[str]:
        return ChatGoogleGenerativeAI.lc_id()

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        return super().get_name(suffix, name=name or ChatGoogleGenerativeAI.__name__)

    @model_validator(mode="after")
    def _read_served_tiers(self) -> Self:
        if self.client is not None and not isinstance(self.client, _TierReadingClient):
            object.__setattr__(self, "client", _TierReadingClient(self.client))
        return self

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params[TIER_KEY] = self.service_tier or STANDARD  # type: ignore[literal-required]
        return params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        _reply_tier.set(None)
        note_served(None)  # a call that fails has no served tier, not the last call's
        note_finish_reasons(())
        result = super()._generate(messages, stop, run_manager, **self._with_tier(kwargs))
        return self._stamped(result)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        _reply_tier.set(None)
        note_served(None)
        note_finish_reasons(())
        result = await super()._agenerate(messages, stop, run_manager, **self._with_tier(kwargs))
        return self._stamped(result)

    def _with_tier(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.service_tier in (None, STANDARD) or "service_tier" in kwargs:
            return kwargs
        return {**kwargs, "service_tier": self.service_tier}

    def _stamped(self, result: ChatResult) -> ChatResult:
        tier = _reply_tier.get() or self.service_tier or STANDARD
        for generation in result.generations:
            generation.message.response_metadata[SERVED_TIER] = tier
        note_served(tier)
        note_finish_reasons(
            tuple(
                str(reason)
                for generation in result.generations
                if (reason := (generation.generation_info or {}).get("finish_reason"))
            )
        )
        return result


class _Passthrough:
    """Everything of the wrapped object, but what a subclass defines."""

    def __init__(self, wrapped: Any):
        self._wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


class _TierReadingClient(_Passthrough):
    """google.genai.Client, whose ``models`` (and ``aio.models``) note each reply's tier."""

    @property
    def models(self) -> Any:
        return _TierReadingModels(self._wrapped.models)

    @property
    def aio(self) -> Any:
        return _TierReadingAsyncClient(self._wrapped.aio)


class _TierReadingAsyncClient(_Passthrough):
    @property
    def models(self) -> Any:
        return _TierReadingAsyncModels(self._wrapped.models)


class _TierReadingModels(_Passthrough):
    def generate_content(self, **kwargs: Any) -> Any:
        response = self._wrapped.generate_content(**kwargs)
        _reply_tier.set(tier_of(getattr(response, "usage_metadata", None)))
        return response


class _TierReadingAsyncModels(_Passthrough):
    async def generate_content(self, **kwargs: Any) -> Any:
        response = await self._wrapped.generate_content(**kwargs)
        _reply_tier.set(tier_of(getattr(response, "usage_metadata", None)))
        return response
