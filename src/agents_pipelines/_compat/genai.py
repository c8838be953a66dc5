"""google-genai's undocumented details that agents_pipelines uses (google-genai 3.6.1,
httpx2 2.16.2, langchain-google-genai 4.4.3 checked)."""

from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy: the batch hooks import them when called
    from google.genai import types
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import ChatResult

# sdk_http: the HTTP library whose transports google-genai's client takes (``client_args=
# {"transport": ...}``): httpx2 (a fork of httpx under its own name) in google-genai 3, httpx
# before. Why: our cassette transport (llm/record_replay.py) must subclass that library's
# transport classes. google-genai picks the library from the objects in ``client_args`` and
# defaults to httpx2 when it is installed (undocumented). Public replacement: none.
try:
    import httpx2 as sdk_http
except ImportError:  # pragma: no cover - google-genai 2; the lock installs google-genai 3
    import httpx as sdk_http  # type: ignore[no-redef]

__all__ = [
    "BATCH_HOOKS",
    "CLIENT_LOGGERS",
    "get_job_with_stats",
    "jsonl_request",
    "prepare_request",
    "response_from_json",
    "response_to_result",
    "sdk_http",
    "transport_error_types",
]

# The client stack's loggers that may write a provider's error text (google-genai logs a
# streamed error it cannot parse at DEBUG) or a request line. Why here: google-genai names
# its loggers after its private modules (``google_genai._api_client``), not documented.
# Public replacement: a filter on the root logger (it would see every library's records).
CLIENT_LOGGERS = (
    "google_genai._api_client",
    "google_genai.models",
    "langchain_google_genai.chat_models",
    "httpx",
    "httpx2",
)


def transport_error_types() -> tuple[type[BaseException], ...]:
    """Time-outs and dropped connections of every HTTP library google-genai may use.

    Why: httpx2's exceptions are not httpx's, and a hung call classified as permanent would
    never be retried. Public replacement: none (google-genai re-raises them as they are).
    """
    found: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found.append(module.TransportError)  # time-outs, connect and read errors
    return tuple(found)


# Batch mode (llm/batch.py): the names below, each checked by tests/test_batch_mode.py.
"""The private names of langchain-google-genai and google-genai that batch mode uses, in one
place. Checked against langchain-google-genai 4.x and google-genai 3.x; each hook says which
public API would replace it. ``tests/test_batch_mode.py::test_compat_hooks_exist`` fails and
names the hook when upstream moves one.

- ``ChatGoogleGenerativeAI._prepare_request``: the request an interactive call would send
  (contents, system instruction, JSON mode), so that a batched request is the same one.
  No public equivalent: the alternative is converting messages ourselves.
- ``langchain_google_genai.chat_models._response_to_result``: a GenerateContentResponse as
  LangChain's ChatResult (text, usage_metadata), exactly as the interactive call returns it.
- ``google.genai.batches._BatchJob_from_mldev`` and the client's ``_api_client``: one GET of
  a job that keeps ``metadata.batchStats`` (done/total), which ``client.batches.get`` drops
  in Gemini Developer API mode. A public ``BatchJob.completion_stats`` there would replace it.
- ``google.genai.batches._InlinedRequest_to_mldev``: an inline request in the REST shape of
  a JSONL input line. No public converter exists.
"""

BATCH_HOOKS = (
    "langchain_google_genai.ChatGoogleGenerativeAI._prepare_request",
    "langchain_google_genai.chat_models._response_to_result",
    "google.genai.batches._BatchJob_from_mldev",
    "google.genai.batches._InlinedRequest_to_mldev",
    "google.genai.client.Client._api_client",
)


def prepare_request(model: Any, messages: list[BaseMessage], **kwargs: Any) -> dict[str, Any]:
    """``{"model", "contents", "config"}`` as ``model`` (a ChatGoogleGenerativeAI) would
    send them for ``messages`` and the call's keyword arguments."""
    request: dict[str, Any] = model._prepare_request(messages, **kwargs)
    return request


def response_to_result(response: types.GenerateContentResponse) -> ChatResult:
    from langchain_google_genai.chat_models import _response_to_result

    return _response_to_result(response)


async def get_job_with_stats(
    client: Any, name: str, *, sync: bool
) -> tuple[types.BatchJob, dict[str, int]]:
    """The job ``name`` and its ``batchStats`` (requestCount, successfulRequestCount,
    failedRequestCount, pendingRequestCount), in one GET. ``client`` is a google-genai
    Client; ``sync`` sends the GET on its sync HTTP client (a thread with no event loop)."""
    from google.genai.batches import _BatchJob_from_mldev

    if sync:
        response = client._api_client.request("get", name, {}, None)
    else:
        response = await client._api_client.async_request("get", name, {}, None)
    from google.genai import types

    body = json.loads(response.body) if response.body else {}
    stats = (body.get("metadata") or {}).get("batchStats") or {}
    job = types.BatchJob._from_response(response=_BatchJob_from_mldev(body), kwargs={})
    return job, {key: int(value) for key, value in stats.items()}


def jsonl_request(client: Any, request: types.InlinedRequest) -> dict[str, Any]:
    """``request`` in the REST shape of a batch input file's ``request`` (camelCase,
    ``generationConfig``), as the SDK converts an inline request."""
    from google.genai.batches import _InlinedRequest_to_mldev

    body: dict[str, Any] = _InlinedRequest_to_mldev(client._api_client, request)
    request_body: dict[str, Any] = body.get("request", {})
    return request_body


def response_from_json(response: dict[str, Any]) -> types.GenerateContentResponse:
    """A GenerateContentResponse from the REST JSON of one line of a batch output file.

    Why: the SDK parses such lines itself only for inline results; ``_from_response`` is how
    it builds a response from REST JSON (google-genai 3.6.1 checked). Public replacement:
    ``GenerateContentResponse.model_validate`` takes snake_case fields, not the REST camelCase.
    """
    from google.genai import types

    return types.GenerateContentResponse._from_response(response=response, kwargs={})
