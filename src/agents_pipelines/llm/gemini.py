"""The one home of langchain-google-genai and the google-genai SDK.

Who retries what: the SDK's own retries are switched off (``max_retries=1`` means one
attempt there), because the SDK ignores the server's Retry-After. Transient failures are
retried once per node by LangGraph's RetryPolicy, using ``is_transient`` and
``wait_for_retry_after`` below. Permanent failures (400, 401, 403, 404) are never retried.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from agents_pipelines._compat.genai import CLIENT_LOGGERS, transport_error_types
from agents_pipelines.errors import MissingApiKeyError, exception_chain
from agents_pipelines.redaction import redact, redacting_logger
from agents_pipelines.settings import API_KEY_ENV, settings
from agents_pipelines.spec.models import BatchConfig, LlmConfig

if TYPE_CHECKING:
    from agents_pipelines.llm.record_replay import CassetteTransport

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 120.0
# The key of a replaying client: its transport answers every request, so no key is needed,
# and none is put in a client that has no use for it.
_OFFLINE_KEY = "replay-needs-no-key"
# Our own logger that may write a provider's error text: batch mode's, beside the client
# stack's (CLIENT_LOGGERS). Each gets our key filter.
_OUR_CLIENT_LOGGERS = ("agents_pipelines.llm.batch",)


def import_client() -> None:
    """Import langchain-google-genai and the google-genai SDK ahead of a run (they are
    otherwise imported as the first client is built)."""
    import langchain_google_genai  # noqa: F401


def gemini_chat_model(
    config: LlmConfig, transport: CassetteTransport | None = None
) -> BaseChatModel:
    """A ChatGoogleGenerativeAI for ``config``; the key comes from the environment only.

    ``transport`` (llm.record_replay) records the client's HTTP exchanges, or replays them
    with no key at all."""
    environment = settings()
    key = _OFFLINE_KEY if transport is not None and transport.offline else api_key()
    return _chat_model(
        config.model,
        config.temperature,
        config.max_output_tokens,
        config.timeout_s,
        config.base_url or environment.gemini_base_url,
        key,
        transport,
        config.service_tier,
        config.batch_mode,
    )


def api_key() -> str:
    """The Gemini API key of the environment; MissingApiKeyError names both ways out."""
    key = settings().api_key
    if key is None:
        raise MissingApiKeyError(
            f"No Gemini API key: set {API_KEY_ENV} in the environment of the Dagster code "
            "location (or of this shell), or choose the simulated backend for a dry run with "
            "estimated costs: AGENTS_PIPELINES_LLM_BACKEND=simulated (`--backend simulated` "
            'for `agents-pipelines run`, backend="simulated" for run_workflow).'
        )
    return key.get_secret_value()


# Module-level, not in the registry: a memo of immutable settings (the key included); a client
# keeps no run state, only its connections, so a reset would only cost TLS set-ups.
@functools.lru_cache(maxsize=64)
def _chat_model(
    model: str,
    temperature: float | None,
    max_output_tokens: int | None,
    timeout_s: float | None,
    base_url: str | None,
    key: str,
    transport: CassetteTransport | None = None,
    service_tier: str = "standard",
    batch: BatchConfig | None = None,
) -> BaseChatModel:
    """One client per distinct setting, shared by nodes, runs and threads; with ``batch``,
    one whose calls go through the Batch API (llm.batch).

    Each new client builds three TLS contexts from the CA bundle: about 50 ms on an idle
    machine, 146 ms under load, per node per run (measured). A shared client also keeps
    its HTTP connections to Gemini alive between calls. The key is part of the cache key,
    so a rotated key takes effect on the next run.
    """
    from agents_pipelines.llm.tiered_gemini import TieredChatGoogleGenerativeAI  # heavy

    for name in (*CLIENT_LOGGERS, *_OUR_CLIENT_LOGGERS):  # each gets our key filter
        redacting_logger(name)
    if batch is not None:  # the Batch API prices the calls itself: no service tier
        from agents_pipelines.llm.batch import BatchGemini

        return BatchGemini(
            model=model,
            poll_s=batch.poll_s,
            batch_timeout_s=batch.timeout_s,
            google_api_key=SecretStr(key),
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            timeout=timeout_s,
            max_retries=1,
            base_url=base_url,
            client_args={"transport": transport, "trust_env": False} if transport else None,
        )
    return TieredChatGoogleGenerativeAI(
        model=model,
        service_tier=None if service_tier == "standard" else service_tier,
        google_api_key=SecretStr(key),
        temperature=temperature,
        max_output_tokens=max_output_tokens,
        timeout=timeout_s,
        max_retries=1,
        base_url=base_url,
        # trust_env=False: proxy variables would mount transports that bypass the cassette.
        client_args={"transport": transport, "trust_env": False} if transport else None,
    )


def status_code(exc: BaseException) -> int | None:
    """The HTTP status behind ``exc`` or the errors it wraps, if there is one."""
    for err in exception_chain(exc):
        code = getattr(err, "code", None)
        if isinstance(code, int) and 100 <= code < 600:
            return code
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
    return None


# Module-level, not in the registry: the installed HTTP stacks, fixed for the process.
@functools.cache
def _transport_errors() -> tuple[type[BaseException], ...]:
    """Time-outs and dropped connections, from every HTTP stack google-genai may use.

    google-genai 2 speaks httpx; google-genai 3 speaks httpx2, a fork under its own import
    name whose exceptions are not httpx's; async calls may go through aiohttp. A hung call
    classified as permanent would never be retried, so each stack that is installed counts.
    """
    found = list(transport_error_types())  # time-outs, connect and read errors
    try:
        import aiohttp
    except ImportError:
        pass
    else:
        found.append(aiohttp.ClientConnectionError)  # incl. ServerTimeoutError, disconnects
    return tuple(found)


def is_transient(exc: BaseException) -> bool:
    """429, 5xx, time-outs and dropped connections: worth another attempt.

    The built-in TimeoutError counts: on LangGraph's async path (a map node's items) the
    client's time-out surfaces as ``asyncio``'s, which is the built-in one, not an HTTP
    stack's error; and a Python step or a tool past its ``timeout_s`` raises it too."""
    transport_errors = (*_transport_errors(), TimeoutError)
    if any(isinstance(err, transport_errors) for err in exception_chain(exc)):
        return True
    return status_code(exc) in _TRANSIENT_STATUS


def retry_after_s(exc: BaseException) -> float | None:
    """The server's suggested wait (Retry-After header), capped at two minutes."""
    for err in exception_chain(exc):
        headers = getattr(getattr(err, "response", None), "headers", None)
        value = headers.get("retry-after") if headers is not None else None
        if value is not None:
            try:
                return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
            except ValueError:
                return None
    return None


def wait_for_retry_after(exc: BaseException) -> bool:
    """LangGraph ``retry_on`` hook: retry transient errors, after the server's Retry-After.

    LangGraph's RetryPolicy has no notion of Retry-After, so we wait here before it adds
    its own (shorter) backoff: the total wait is never below what the server asked for.
    """
    if not is_transient(exc):
        return False
    if (delay := retry_after_s(exc)) is not None:
        time.sleep(delay)
    return True


def describe_failure(exc: BaseException) -> str:
    """A one-line reason for a failed Gemini call that says what to do about it."""
    code = status_code(exc)
    hints: dict[int, str] = {
        400: "the request was invalid; check the prompt, model name and settings",
        401: f"the API key was refused; check {API_KEY_ENV}",
        403: f"the API key may not use this model; check {API_KEY_ENV} and the project's access",
        404: "the model was not found; check the model name in config.llm.model",
        429: "rate limited; lower the concurrency (the Dagster pool) or raise your quota",
    }
    text = hints.get(code or 0, "the call failed")
    # Redacted before it is cut short: a key cut in half no longer looks like one.
    message = redact(str(exc))
    detail: Any = message.splitlines()[0][:300] if message else type(exc).__name__
    return f"Gemini {code or type(exc).__name__}: {text} ({detail})"
