"""Chat model backends: Gemini through langchain-google-genai, or the simulated model."""

from agents_pipelines.llm.backend import (
    BACKEND_ENV,
    Backend,
    ChatModelFactory,
    chat_model_factory,
    resolve_backend,
)

__all__ = ["BACKEND_ENV", "Backend", "ChatModelFactory", "chat_model_factory", "resolve_backend"]
