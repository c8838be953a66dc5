"""Chat model backends: Gemini through langchain-google-genai, or the simulated model;
Gemini recorded into a cassette, or replayed from one."""

from agents_pipelines.llm.backend import (
    BACKEND_ENV,
    CASSETTE_ENV,
    Backend,
    ChatModelFactory,
    chat_model_factory,
    check_backend,
    resolve_backend,
)

__all__ = [
    "BACKEND_ENV",
    "CASSETTE_ENV",
    "Backend",
    "ChatModelFactory",
    "chat_model_factory",
    "check_backend",
    "resolve_backend",
]
