"""One walker of an exception's chain (errors.exception_chain), read by the retry decision
(llm.gemini) and by the key redaction (redaction.redact_exception)."""

from __future__ import annotations

import pytest

from agents_pipelines.errors import exception_chain
from agents_pipelines.llm.gemini import gemini_chat_model, is_transient, retry_after_s, status_code
from agents_pipelines.redaction import redact_exception
from agents_pipelines.spec.models import LlmConfig
from agents_pipelines.testing import Fault, GeminiLoopbackServer
from conftest import FAKE_KEY


def raised_from_while_handling(cause: BaseException, context: BaseException) -> RuntimeError:
    """``raise RuntimeError from cause`` inside ``except`` of ``context``: both links set."""
    try:
        try:
            raise context
        except BaseException:
            raise RuntimeError("wrapped") from cause
    except RuntimeError as wrapped:
        return wrapped


def test_each_error_once_the_cause_before_the_context() -> None:
    cause, context = ValueError("cause"), KeyError("context")
    cause.__cause__ = OSError("the cause's cause")
    wrapped = raised_from_while_handling(cause, context)
    assert [str(e) for e in exception_chain(wrapped)] == [
        "wrapped",
        "cause",
        "the cause's cause",
        "'context'",
    ]


def test_a_cycle_ends_the_walk() -> None:
    first, second = ValueError("first"), ValueError("second")
    first.__cause__, second.__context__ = second, first
    assert exception_chain(first) == [first, second]


def test_a_rate_limit_behind_a_chained_error_is_retried_after_its_retry_after(
    gemini: GeminiLoopbackServer,
) -> None:
    """The real client's 429 sits in the context of an error raised ``from`` another (the
    old walker followed ``__cause__ or __context__`` and missed it): the retry decision
    finds its status and Retry-After, and the redaction reaches its text."""
    gemini.plan(Fault.rate_limit(retry_after_s=3.0))
    model = gemini_chat_model(LlmConfig(max_retries=0))
    with pytest.raises(Exception) as rate_limited:
        model.invoke("hi")
    rate_limited.value.args = (f"quota exceeded for key={FAKE_KEY}",)
    wrapped = raised_from_while_handling(ValueError("could not parse"), rate_limited.value)

    assert status_code(wrapped) == 429
    assert is_transient(wrapped)
    assert retry_after_s(wrapped) == 3.0
    redact_exception(wrapped)
    assert FAKE_KEY not in str(rate_limited.value)
