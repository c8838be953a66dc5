"""Choose the chat model backend: Gemini (default), the simulated one for dry runs, or
Gemini recorded into a cassette (``record``) and played back from it (``replay``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # langchain-core is heavy; the code location only needs the enum
    from langchain_core.language_models import BaseChatModel

from agents_pipelines.errors import AgentsPipelinesError
from agents_pipelines.settings import BACKEND_ENV, CASSETTE_ENV, LATENCY_ENV, settings
from agents_pipelines.spec.models import LlmConfig

__all__ = [
    "BACKEND_ENV",
    "CASSETTE_ENV",
    "LATENCY_ENV",
    "Backend",
    "ChatModelFactory",
    "chat_model_factory",
    "check_backend",
    "resolve_backend",
]

ChatModelFactory = Callable[[LlmConfig], "BaseChatModel"]


class Backend(StrEnum):
    GEMINI = "gemini"
    SIMULATED = "simulated"
    RECORD = "record"  # Gemini, each exchange appended to AGENTS_PIPELINES_CASSETTE
    REPLAY = "replay"  # the exchanges of AGENTS_PIPELINES_CASSETTE, no network, no key


def resolve_backend(explicit: str | None = None) -> Backend:
    """``explicit``, else AGENTS_PIPELINES_LLM_BACKEND, else Gemini."""
    if not explicit:  # settings() has checked the variable's value
        return Backend(settings().llm_backend or Backend.GEMINI.value)
    value = explicit.strip().lower()
    try:
        return Backend(value)
    except ValueError:
        raise AgentsPipelinesError(
            f"Unknown LLM backend `{value}` (from run_workflow's backend or WorkflowRunner's "
            "llm_backend): use `gemini`, `simulated`, `record` or `replay`."
        ) from None


def chat_model_factory(
    backend: Backend, simulated_latency_s: float | None = None
) -> ChatModelFactory:
    if backend is Backend.SIMULATED:
        latency = simulated_latency_s
        if latency is None:
            latency = settings().simulated_latency_s

        def simulated(config: LlmConfig) -> BaseChatModel:
            tier = "batch" if config.batch_mode is not None else config.service_tier
            return _simulated_model(config.model, config.temperature, latency, tier)

        return simulated
    from agents_pipelines.llm.gemini import gemini_chat_model

    if backend in (Backend.RECORD, Backend.REPLAY):
        from agents_pipelines.llm.record_replay import transport_for

        transport = transport_for(backend.value, settings().cassette)
        return functools.partial(gemini_chat_model, transport=transport)
    return gemini_chat_model


def check_backend(explicit: str | None = None) -> Backend:
    """The backend a run will use, checked before anything runs: ``record`` and ``replay``
    need AGENTS_PIPELINES_CASSETTE (``replay`` a readable, well-formed file, loaded here),
    ``gemini`` and ``record`` a key. Raises an AgentsPipelinesError that says what to set
    (CassetteError, MissingApiKeyError)."""
    backend = resolve_backend(explicit)
    if backend in (Backend.RECORD, Backend.REPLAY):
        from agents_pipelines.llm.record_replay import transport_for

        transport_for(backend.value, settings().cassette)
    if backend in (Backend.GEMINI, Backend.RECORD):
        from agents_pipelines.llm.gemini import api_key

        api_key()
    return backend


# Module-level, not in the registry: a memo of immutable settings; the model keeps no run state.
@functools.lru_cache(maxsize=64)
def _simulated_model(
    model: str, temperature: float | None, latency_s: float, service_tier: str = "standard"
) -> BaseChatModel:
    """Shared like the Gemini clients, so the compiled graph can be reused (graph.builder)."""
    from agents_pipelines.llm.simulated import SimulatedChatModel

    return SimulatedChatModel(
        model=model, temperature=temperature, latency_s=latency_s, service_tier=service_tier
    )
