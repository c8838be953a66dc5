"""Gemini's own token count: ``POST /v1beta/models/{model}:countTokens``, free of charge.

Through the google-genai client that ChatGoogleGenerativeAI holds (the same key, base URL
and connection as the node's calls). One request per node: every text is a user turn of
``contents``, and the answer's ``totalTokens`` is their sum. The Gemini Developer API's
countTokens takes no ``systemInstruction``, so a system message is counted as a turn too.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents_pipelines.errors import AgentsPipelinesError
from agents_pipelines.llm.gemini import describe_failure, gemini_chat_model
from agents_pipelines.spec.models import LlmConfig


def count_tokens(config: LlmConfig, texts: Sequence[str]) -> int:
    """The tokens Gemini counts in ``texts``, for ``config``'s model; 0 for no text."""
    texts = [text for text in texts if text]
    if not texts:
        return 0
    from google.genai.types import Content, Part

    client = gemini_chat_model(config).client  # type: ignore[attr-defined]
    contents = [Content(role="user", parts=[Part(text=text)]) for text in texts]
    try:
        result = client.models.count_tokens(model=config.model, contents=contents)
    except Exception as exc:  # the SDK's errors, and transport ones: all named alike
        raise AgentsPipelinesError(
            f"countTokens failed for {config.model}: {describe_failure(exc)}. Fix that, or "
            "unset GOOGLE_API_KEY for the estimate by characters / 4."
        ) from None
    return int(result.total_tokens or 0)
